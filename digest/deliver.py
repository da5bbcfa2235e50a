"""Build the digest's email message and hand it to a delivery channel.

Channels are registered by kind; the config switches one on (`email.smtp` set: SMTP; otherwise the outbox
folder). Adding a channel is adding one class.

Every recipient gets a message of their own, addressed to them alone, with a Message-ID of their own that stays the
same across retries, dated when it is sent. A channel reports each delivery the moment it ends: "sent" the instant
the server has accepted the message (its final 250), so the record is written before anything else can happen;
"failed" for a permanent refusal (5xx), never retried; "pending" for a passing one (4xx, a lost connection). What a
channel did not report stays pending for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple, Protocol

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from digest.config import Config, SMTPConfig
from digest.errors import DeliveryError, cause_of
from digest.http import resolver_silent
from digest.models import Delivery, Rendered, RunSummary
from digest.store import Store

log = logging.getLogger(__name__)

OUTBOX = "outbox"  # the destination name of a digest written to the outbox folder rather than mailed
STOP_GRACE_SECONDS = 5.0  # after a stop, a message on the wire may still finish this long; then it is abandoned
QUIT_SECONDS = 5.0


class Result(NamedTuple):
    status: Literal["sent", "failed", "pending"]
    reason: str = ""
    # What to change, for a refusal for good: the address, unless the server said what else was wrong.
    fix: str = "check the address in config.yaml; a corrected address gets the digest on the next run"


TOO_LARGE_FIX = (
    "the message is larger than the server takes (552): lower the profile's max_papers, or set output.format: "
    "markdown for a smaller message; the next digest is sent as usual"
)


OnResult = Callable[[Delivery, Result], None]


def build_message(rendered: Rendered, sender: str) -> EmailMessage:
    """multipart/alternative: the plain text first, then the HTML (or the Markdown as the only part). To, Date and
    Message-ID are set for each recipient when it is sent (`addressed`)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = rendered.subject
    message["From"] = sender
    if rendered.html is not None:
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
    else:
        message.set_content(rendered.markdown or rendered.text)
    return message


def new_message_id(sender: str) -> str:
    domain = sender.rpartition("@")[2] or "localhost"
    return email.utils.make_msgid(domain=domain.encode("idna").decode() if not domain.isascii() else domain)


def addressed(message: bytes, recipient: str, message_id: str | None, *, sender: str | None = None) -> bytes:
    """The digest's message for one recipient, dated now. Internationalised addresses need SMTPUTF8 (RFC 6532)."""
    parsed = email.message_from_bytes(message, policy=email.policy.SMTP)
    for header, value in (("To", recipient), ("Date", email.utils.formatdate(localtime=True))):
        del parsed[header]
        parsed[header] = value
    if sender is not None:
        del parsed["From"]
        parsed["From"] = sender
    if message_id is not None:
        del parsed["Message-ID"]
        parsed["Message-ID"] = message_id
    utf8 = not (recipient.isascii() and str(parsed["From"]).isascii())
    return parsed.as_bytes(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)


def ascii_form(address: str) -> str | None:
    """The address as a server without SMTPUTF8 takes it (an internationalised domain in its IDNA form), if any."""
    if address.isascii():
        return address
    try:
        found = validate_email(address, check_deliverability=False, globally_deliverable=False).ascii_email
    except EmailNotValidError:
        return None
    return str(found) if found else None


class Channel(Protocol):
    kind: ClassVar[str]

    @classmethod
    def from_config(cls, config: Config) -> Channel: ...

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        """Deliver each, reporting each as it ends. Once `stop` is set, start no other. Raise DeliveryError when the
        channel itself fails; the deliveries not reported stay pending."""
        ...

    async def check(self) -> str:
        """Reach the destination without delivering anything; say what was found, or raise DeliveryError."""
        ...


class OutboxChannel:
    """Writes `<outbox>/<profile>/<date>.html` (or `.md`) and the `.eml` of the message: no server needed."""

    kind: ClassVar[str] = "outbox"

    def __init__(self, folder: Path, sender: str, recipients: dict[str, list[str]]) -> None:
        self._folder = folder
        self._sender = sender
        self._recipients = recipients  # by profile: the .eml is addressed as the email would be

    @classmethod
    def from_config(cls, config: Config) -> OutboxChannel:
        return cls(config.output.outbox, config.email.from_, {p.name: p.email for p in config.profiles})

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        for delivery in deliveries:
            to = ", ".join(self._recipients.get(delivery.profile, [])) or self._sender
            message = addressed(delivery.message, to, delivery.message_id)
            parsed = email.message_from_bytes(message, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            html = parsed.get_body(preferencelist=("html",))
            body = (html or parsed.get_body(preferencelist=("plain",)) or parsed).get_content()
            folder = self._folder / delivery.profile
            day = delivery.announced.isoformat()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{day}.{'html' if html is not None else 'md'}").write_text(body, "utf-8")
                (folder / f"{day}.eml").write_bytes(message)
            except OSError as error:
                raise DeliveryError(
                    f"cannot write to the outbox {folder}: {error}",
                    hint="check output.outbox in config.yaml and the folder's permissions",
                ) from None
            on_result(delivery, Result("sent"))

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

    def __init__(self, config: SMTPConfig, sender: str, addresses: Iterable[str] = ()) -> None:
        self._config = config
        self._sender = sender
        self._addresses = list(addresses)  # every configured recipient, for `check`

    @classmethod
    def from_config(cls, config: Config) -> SMTPChannel:
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


async def deliver_pending(config: Config, store: Store, summary: RunSummary, stop: asyncio.Event) -> None:
    """Send every pending delivery, oldest digest first, each recipient a message of their own, each recorded
    the moment the server accepts it. A refusal for good (5xx) fails this run once and is never retried; any
    other problem leaves the delivery pending for the next run and fails this one."""
    clock = time.monotonic()
    _reconcile_recipients(config, store, summary)
    problems: list[str] = []
    hints: list[str] = []

    def record(delivery: Delivery, result: Result) -> None:
        if result.status == "sent":
            store.mark_delivered(delivery.digest_id, delivery.recipient)
            summary.deliveries_sent += 1
            log.info("deliver: %s digest of %s to %s", delivery.profile, delivery.announced, delivery.recipient)
            return
        store.mark_attempt(delivery.digest_id, delivery.recipient, result.reason, permanent=result.status == "failed")
        if result.status == "failed":
            summary.deliveries_failed += 1
            summary.errors.append(
                f"the {delivery.profile} digest of {delivery.announced} could not be delivered to "
                f"{delivery.recipient}, for good: {result.reason}; it is not tried again ({result.fix})"
            )
        else:
            problems.append(f"{delivery.recipient}: {result.reason}")

    by_kind: dict[str, list[Delivery]] = {}
    for delivery in store.pending_deliveries():
        by_kind.setdefault(channel_for(delivery.recipient, config).kind, []).append(delivery)
    for deliveries in by_kind.values():
        if stop.is_set():
            break
        try:
            await channel_for(deliveries[0].recipient, config).deliver(deliveries, record, stop)
        except DeliveryError as error:
            problems.append(error.message)
            hints += [error.hint] if error.hint else []
    summary.deliveries_pending = len(store.pending_deliveries())
    if summary.deliveries_sent or summary.deliveries_pending or summary.deliveries_failed:
        log.info(
            "deliver: %d sent, %d failed, %d still pending, in %.2f s",
            summary.deliveries_sent,
            summary.deliveries_failed,
            summary.deliveries_pending,
            time.monotonic() - clock,
        )
    if problems:
        unique = list(dict.fromkeys(problems))
        hint = "; ".join(dict.fromkeys(hints)) if hints else None
        raise DeliveryError(
            "could not deliver: " + "; ".join(unique),
            hint=(hint + ". " if hint else "") + "what was not delivered stays pending and goes out first on the "
            "next run",
        )


def _reconcile_recipients(config: Config, store: Store, summary: RunSummary) -> None:
    """Pending deliveries follow config.yaml: to an address removed from a profile (or of a removed profile)
    they are dropped, and an address added in its place gets that digest."""
    current = {p.name: destinations(p.email, config) for p in config.profiles}
    for name in store.profiles_with_pending_deliveries() | set(current):
        dropped, added = store.reconcile_recipients(
            name, current.get(name, []), lambda: new_message_id(config.email.from_)
        )
        summary.warnings += [
            f"dropped the {name} digest of {day} for {recipient}: no longer in config.yaml"
            for day, recipient in dropped
        ]
        summary.warnings += [f"the {name} digest of {day} goes to {recipient} too" for day, recipient in added]


CHANNELS: dict[str, type[Channel]] = {c.kind: c for c in (OutboxChannel, SMTPChannel)}


def configured_channel(config: Config) -> Channel:
    """SMTP when email.smtp is set, otherwise the outbox folder."""
    return CHANNELS["smtp" if config.email.smtp is not None else "outbox"].from_config(config)


def channel_for(destination: str, config: Config) -> Channel:
    return OutboxChannel.from_config(config) if destination == OUTBOX else configured_channel(config)


def destinations(recipients: list[str], config: Config) -> list[str]:
    return list(recipients) if config.email.smtp is not None else [OUTBOX]
