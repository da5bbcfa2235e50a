"""Secrets: what in the config must never be shown, and the one way it is kept from every output."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from digest.wording import UNSAFE_CHARACTERS

REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced: what servers echo (an Authorization header in an error page, a key in a
    URL) must not reach the screen, a log or the state file."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


def token_parts(url: str) -> list[str]:
    """What in an Apprise URL may be a secret: the URL, its userinfo (and the HTTP Basic credential Apprise makes of
    it), its query values, and every host or path part long enough to be a token (Telegram's bot token is the host;
    Slack's, Discord's and ntfy's are paths)."""
    parts = urlsplit(url)
    found = [url, *(p for p in (parts.password, parts.username) if p)]
    if parts.username is not None and parts.password is not None:
        found.append(basic_credential(unquote(parts.username), unquote(parts.password)))
    found += [value for _, value in parse_qsl(parts.query) if len(value) >= 8]
    found += [p for p in (parts.netloc.rpartition("@")[2], *parts.path.split("/")) if len(p) >= 16]
    return found


def basic_credential(user: str, password: str) -> str:
    """What HTTP Basic authentication sends for a user and password (RFC 7617): a server may echo it back."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def smtp_credentials(user: str, password: str) -> list[str]:
    """What SMTP AUTH sends: PLAIN's base64 of NUL, user, NUL, password (RFC 4616), LOGIN's of each."""
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return [plain, base64.b64encode(user.encode()).decode(), base64.b64encode(password.encode()).decode()]


def encoded_forms(secret: str) -> list[str]:
    """A secret as it may be written on its way out or back: as it is, decoded (a URL's userinfo is written
    percent-encoded), percent-encoded (in a query or a form), and in base64."""
    forms = [secret, unquote(secret), unquote_plus(secret), quote(secret, safe=""), quote_plus(secret)]
    forms.append(base64.b64encode(secret.encode()).decode())
    return list(dict.fromkeys(forms))


class Redacting(io.TextIOBase):
    """The output boundary: a text stream that writes through to another with every secret replaced and every
    terminal control removed. Whatever digest prints may hold what a feed, an LLM, a library file or a server
    wrote (an entry key, a title, an error page); none of it reaches the terminal as anything but text."""

    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        self._stream = stream
        self._secrets = secrets

    @property
    def terminal(self) -> TextIO:
        """The stream itself, for the progress line's own redraw sequences (nothing from outside is in it)."""
        return self._stream

    def write(self, text: str) -> int:
        self._stream.write(UNSAFE_CHARACTERS.sub("", redact(text, self._secrets)))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()
