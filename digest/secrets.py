"""Secrets: what in the config must never be shown, and the one way it is kept from every output."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import parse_qsl, urlsplit

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
    """What in an Apprise URL may be a secret: the URL, its userinfo and query values, and every host or path
    part long enough to be a token (Telegram's bot token is the host; Slack's, Discord's and ntfy's are paths)."""
    parts = urlsplit(url)
    found = [url, *(p for p in (parts.password, parts.username) if p)]
    found += [value for _, value in parse_qsl(parts.query) if len(value) >= 8]
    found += [p for p in (parts.netloc.rpartition("@")[2], *parts.path.split("/")) if len(p) >= 16]
    return found


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
