"""The SMTP channel: each recipient a message of their own, over one connection (STARTTLS, TLS or, on a trusted
network, none), each recorded the moment the server's final 250 comes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, ClassVar, Literal

import aiosmtplib

from digest.channels.base import STOP_GRACE_SECONDS, OnResult, Result
from digest.channels.message import addressed, ascii_form
from digest.config import Config, SMTPConfig
from digest.errors import DeliveryError, cause_of
from digest.models import Delivery
from digest.net.http import resolver_silent

if TYPE_CHECKING:
    from digest.links import Links

log = logging.getLogger(__name__)

QUIT_SECONDS = 5.0
TOO_LARGE_FIX = (
    "the message is larger than the server takes (552): lower the profile's max_papers, or set output.format: "
    "markdown for a smaller message; the next digest is sent as usual"
)


class SMTPChannel:
    kind: ClassVar[str] = "smtp"
    gives_up_after_runs: ClassVar[int | None] = None

    def __init__(self, config: SMTPConfig, sender: str, addresses: Iterable[str] = ()) -> None:
        self._config = config
        self._sender = sender
        self._addresses = list(addresses)  # every configured recipient, for `check`

    @classmethod
    def from_config(cls, config: Config, links: Links | None = None) -> SMTPChannel:
        assert config.email.smtp is not None
        return cls(config.email.smtp, config.email.from_, [a for p in config.profiles for a in p.email])

    @property
    def _where(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        async with self._session() as smtp:
            utf8 = smtp.supports_extension("smtputf8")
            sender = self._sender if utf8 else ascii_form(self._sender)
            if sender is None:
                raise DeliveryError(
                    f"SMTP server {self._where} does not offer SMTPUTF8 (RFC 6531), which the internationalised "
                    f"sender address {self._sender} needs",
                    hint="set email.from to an ASCII address, or use a server that offers SMTPUTF8",
                )
            for delivery in deliveries:
                if stop.is_set():
                    return
                recipient = delivery.recipient if utf8 else ascii_form(delivery.recipient)
                if recipient is None:
                    why = (
                        f"{self._where} does not offer SMTPUTF8 (RFC 6531), which the internationalised address "
                        f"{delivery.recipient} needs"
                    )
                    on_result(delivery, Result("failed", why))
                    continue
                message = addressed(delivery.message, recipient, delivery.message_id, sender=sender)
                result = await self._transaction(smtp, sender, recipient, message, stop)
                if result is None:
                    return  # abandoned at a stop: not recorded, so it stays pending
                on_result(delivery, result)

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes, stop: asyncio.Event
    ) -> Result | None:
        """One message to one recipient, within a bounded time; None if a stop abandoned it before the server's
        answer (then the server may or may not have it: the protocol's own window, and the next run sends it)."""
        options = [] if (sender + recipient).isascii() else ["SMTPUTF8"]
        sending = asyncio.ensure_future(smtp.sendmail(sender, [recipient], message, mail_options=options))
        stopped = asyncio.ensure_future(stop.wait())
        limit = 3 * self._config.timeout_seconds  # each command has timeout_seconds; the whole message this long
        try:
            await asyncio.wait({sending, stopped}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not sending.done():
                await asyncio.wait({sending}, timeout=STOP_GRACE_SECONDS)  # finish, or be abandoned
        finally:
            stopped.cancel()
        if not sending.done():
            sending.cancel()
            smtp.close()
            if stop.is_set():
                return None
            raise DeliveryError(
                f"SMTP server {self._where} did not accept a message within {limit:g} s",
                hint="the server is slow or stuck; raise email.smtp.timeout_seconds if it is only slow",
            )
        try:
            sending.result()
        except aiosmtplib.SMTPRecipientsRefused as error:
            refused = error.recipients[0]
            return _refusal(refused.code, refused.message, f"the server refused {recipient}")
        except aiosmtplib.SMTPDataError as error:
            return _refusal(error.code, error.message, "the server refused the message")
        except aiosmtplib.SMTPSenderRefused as error:
            if error.code == 552:  # the message's SIZE, declared with MAIL FROM
                return _refusal(error.code, error.message, "the server refused the message's size")
            if 500 <= error.code < 600:
                raise DeliveryError(
                    f"SMTP server {self._where} refused the sender {self._sender}: {error.code} {error.message}",
                    hint="check email.from in config.yaml: many servers only accept their own addresses",
                ) from None
            return Result("pending", f"{error.code} {error.message}")
        except aiosmtplib.SMTPResponseException as error:
            return Result("pending", f"{error.code} {error.message}")
        except (aiosmtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"SMTP server {self._where} failed while sending: {error}") from None
        return Result("sent")

    async def check(self) -> str:
        async with self._session() as smtp:
            utf8 = smtp.supports_extension("smtputf8")
            await smtp.noop()
        needs = [a for a in [self._sender, *self._addresses] if ascii_form(a) is None]
        if needs and not utf8:
            raise DeliveryError(
                f"SMTP server {self._where} does not offer SMTPUTF8 (RFC 6531), which these internationalised "
                f"addresses need: {', '.join(needs)}",
                hint="use ASCII addresses, or a server that offers SMTPUTF8; other recipients are not affected",
            )
        login = f" and logged in as {self._config.username}" if self._config.username else ""
        security = {"starttls": "STARTTLS", "ssl": "TLS from the start", "none": "unencrypted"}[self._config.security]
        return f"SMTP server {self._where} answered ({security}){login}"

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosmtplib.SMTP]:
        """Connected, secured and logged in, all within one deadline (a server that trickles its greeting cannot
        hold a run); QUIT at the end, whose answer changes nothing (every delivery is recorded already)."""
        config = self._config
        context = ssl.create_default_context(cafile=config.ca_file)
        smtp = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            timeout=config.timeout_seconds,
            use_tls=config.security == "ssl",
            start_tls=False,
            tls_context=context,
        )
        try:
            async with asyncio.timeout(config.timeout_seconds):
                await smtp.connect()
                await smtp.ehlo()
                if config.security == "starttls":
                    if not smtp.supports_extension("starttls"):
                        raise DeliveryError(
                            f"SMTP server {self._where} does not offer STARTTLS, which security: starttls needs",
                            hint="set email.smtp.security to ssl (usually port 465) or, on a trusted network only, "
                            "none; or check the port (STARTTLS is usually on 587)",
                        )
                    await smtp.starttls(tls_context=context)
                    await smtp.ehlo()  # what the server offers over TLS (AUTH, usually) is said anew
                if config.username is not None and config.password is not None:
                    if not smtp.supports_extension("auth"):
                        unencrypted = config.security == "none"
                        raise DeliveryError(
                            f"SMTP server {self._where} does not offer AUTH, which logging in as {config.username} "
                            "needs" + (" (most servers offer it only over TLS)" if unencrypted else ""),
                            hint="set email.smtp.security to starttls or ssl"
                            if unencrypted
                            else "leave out email.smtp.username and password if this server needs no login",
                        )
                    await smtp.login(config.username, config.password.get_secret_value())
        except DeliveryError:
            smtp.close()
            raise
        except TimeoutError:
            smtp.close()
            if await resolver_silent(config.host):
                raise DeliveryError(
                    f"cannot reach SMTP server {self._where}: the name server did not answer for {config.host} (DNS)",
                    hint="check this machine's (or container's) DNS settings (/etc/resolv.conf, the container's "
                    "--dns); the digest stays pending and goes out on the next run",
                ) from None
            raise DeliveryError(
                f"SMTP server {self._where} did not finish greeting, TLS and login within {config.timeout_seconds:g} s",
                hint="check email.smtp.host and port; a server this slow is stuck or not an SMTP server",
            ) from None
        except aiosmtplib.SMTPAuthenticationError as error:
            smtp.close()
            raise DeliveryError(
                f"SMTP server {self._where} refused the login for user {config.username}: {error.code} {error.message}",
                hint="check email.smtp.username and the password variable (SMTP_PASSWORD)",
            ) from None
        except (ssl.SSLError, aiosmtplib.SMTPConnectError) as error:
            smtp.close()
            tls = cause_of(error, ssl.SSLError)
            if tls is not None:
                raise DeliveryError(
                    f"TLS with SMTP server {self._where} failed: {tls.reason or tls}",
                    hint="check email.smtp.security and port (starttls: 587, ssl: 465), and the server's "
                    "certificate (for a private CA set email.smtp.ca_file)",
                ) from None
            raise DeliveryError(
                f"cannot connect to SMTP server {self._where}: {error}",
                hint="check email.smtp.host and port, and that the server is up",
            ) from None
        except (aiosmtplib.SMTPException, OSError) as error:
            smtp.close()
            raise DeliveryError(
                f"cannot connect to SMTP server {self._where}: {error}",
                hint="check email.smtp.host and port, and that the server is up",
            ) from None
        try:
            yield smtp
        finally:
            if smtp.is_connected:
                try:
                    async with asyncio.timeout(QUIT_SECONDS):
                        await smtp.quit()
                except (TimeoutError, aiosmtplib.SMTPException, OSError):
                    smtp.close()


def _refusal(code: int, message: str, what: str) -> Result:
    """5xx: for good; anything else: for now. 552 is the message's size (RFC 5321: storage exceeded), whichever
    command it answered."""
    status: Literal["failed", "pending"] = "failed" if 500 <= code < 600 else "pending"
    if code == 552:
        return Result(status, f"{what}: {code} {message}", TOO_LARGE_FIX)
    return Result(status, f"{what}: {code} {message}")
