"""Build the digest's email message and hand it to a delivery channel.

Channels are registered by kind; the config switches one on (`email.smtp` set: SMTP; otherwise the outbox
folder). Adding a channel is adding one class.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.policy
import email.utils
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

from digest.config import Config, SMTPConfig
from digest.errors import DeliveryError
from digest.models import Rendered

T = TypeVar("T")
OUTBOX = "outbox"  # the destination name of a digest written to the outbox folder rather than mailed


def build_message(rendered: Rendered, sender: str, recipients: list[str]) -> EmailMessage:
    """multipart/alternative: the plain text first, then the HTML (or the Markdown as the only part)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients) if recipients else sender
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    if rendered.html is not None:
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
    else:
        message.set_content(rendered.markdown or rendered.text)
    return message


class Channel(Protocol):
    kind: ClassVar[str]

    @classmethod
    def from_config(cls, config: Config) -> Channel: ...

    async def deliver(self, message: bytes, recipients: list[str], profile: str, announced: dt.date) -> dict[str, str]:
        """Deliver to every recipient; return the ones that failed, with the reason. Raise DeliveryError if none
        could be reached."""
        ...

    async def check(self) -> str:
        """Reach the destination without delivering anything; say what was found, or raise DeliveryError."""
        ...


class OutboxChannel:
    """Writes `<outbox>/<profile>/<date>.html` (or `.md`) and the `.eml` of the message: no server needed."""

    kind: ClassVar[str] = "outbox"

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @classmethod
    def from_config(cls, config: Config) -> OutboxChannel:
        return cls(config.output.outbox)

    async def deliver(self, message: bytes, recipients: list[str], profile: str, announced: dt.date) -> dict[str, str]:
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        html = parsed.get_body(preferencelist=("html",))
        body = (html or parsed.get_body(preferencelist=("plain",)) or parsed).get_content()
        folder = self._folder / profile
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{announced.isoformat()}.{'html' if html is not None else 'md'}").write_text(body, "utf-8")
            (folder / f"{announced.isoformat()}.eml").write_bytes(message)
        except OSError as error:
            raise DeliveryError(
                f"cannot write to the outbox {folder}: {error}",
                hint="check output.outbox in config.yaml and the folder's permissions",
            ) from None
        return {}

    async def check(self) -> str:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            probe = self._folder / ".digest-check"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise DeliveryError(f"the outbox {self._folder} is not writable: {error}") from None
        return f"outbox {self._folder} is writable"


class SMTPChannel:
    kind: ClassVar[str] = "smtp"

    def __init__(self, config: SMTPConfig, sender: str) -> None:
        self._config = config
        self._sender = sender

    @classmethod
    def from_config(cls, config: Config) -> SMTPChannel:
        assert config.email.smtp is not None
        return cls(config.email.smtp, config.email.from_)

    async def deliver(self, message: bytes, recipients: list[str], profile: str, announced: dt.date) -> dict[str, str]:
        return await asyncio.to_thread(self._send, message, recipients)

    async def check(self) -> str:
        await asyncio.to_thread(self._session, lambda smtp: smtp.noop())
        login = f" and logged in as {self._config.username}" if self._config.username else ""
        return f"SMTP server {self._where} answered ({self._config.security}){login}"

    @property
    def _where(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    def _send(self, message: bytes, recipients: list[str]) -> dict[str, str]:
        def send(smtp: smtplib.SMTP) -> dict[str, str]:
            try:
                refused = smtp.sendmail(self._sender, recipients, message)
            except smtplib.SMTPRecipientsRefused as error:
                refused = error.recipients
            except smtplib.SMTPSenderRefused as error:
                raise DeliveryError(
                    f"SMTP server {self._where} refused the sender {self._sender}: "
                    f"{error.smtp_code} {_text(error.smtp_error)}",
                    hint="check email.from in config.yaml: many servers only accept their own addresses",
                ) from None
            return {r: f"{code} {_text(reason)}" for r, (code, reason) in refused.items()}

        return self._session(send)

    def _session(self, action: Callable[[smtplib.SMTP], T]) -> T:
        config = self._config
        context = ssl.create_default_context(cafile=config.ca_file)
        try:
            smtp: smtplib.SMTP
            if config.security == "ssl":
                smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_seconds, context=context)
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
            with smtp:
                if config.security == "starttls":
                    smtp.starttls(context=context)
                if config.username is not None and config.password is not None:
                    smtp.login(config.username, config.password.get_secret_value())
                return action(smtp)
        except smtplib.SMTPAuthenticationError as error:
            raise DeliveryError(
                f"SMTP server {self._where} refused the login for user {config.username}: "
                f"{error.smtp_code} {_text(error.smtp_error)}",
                hint="check email.smtp.username and the password variable (SMTP_PASSWORD); the digest stays pending",
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError(
                f"SMTP server {self._where} does not offer STARTTLS",
                hint="set email.smtp.security to ssl (usually port 465) or, on a trusted network only, none",
            ) from None
        except ssl.SSLError as error:
            raise DeliveryError(
                f"TLS with SMTP server {self._where} failed: {error.reason or error}",
                hint="check email.smtp.security and port (starttls: 587, ssl: 465) and the server's certificate",
            ) from None
        except smtplib.SMTPException as error:
            raise DeliveryError(f"SMTP server {self._where} failed: {error}") from None
        except OSError as error:
            raise DeliveryError(
                f"cannot connect to SMTP server {self._where}: {error.strerror or error}",
                hint="check email.smtp.host and port, and that the server is up; the digest stays pending",
            ) from None


def _text(reason: bytes | str) -> str:
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason


CHANNELS: dict[str, type[Channel]] = {c.kind: c for c in (OutboxChannel, SMTPChannel)}


def configured_channel(config: Config) -> Channel:
    """SMTP when email.smtp is set, otherwise the outbox folder."""
    return CHANNELS["smtp" if config.email.smtp is not None else "outbox"].from_config(config)


def channel_for(destination: str, config: Config) -> Channel:
    return OutboxChannel.from_config(config) if destination == OUTBOX else configured_channel(config)


def destinations(recipients: list[str], config: Config) -> list[str]:
    return list(recipients) if config.email.smtp is not None else [OUTBOX]
