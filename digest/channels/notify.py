"""The notification channel: chat and push services through Apprise URLs (those README.md's "Chat and push" names,
and any other Apprise knows), one short Markdown message per digest and destination, cut to what the service takes.

A destination is named by what Apprise shows of its URL (tokens masked) and a hash of the whole URL, so that the
state, the summary and `digest status` can tell destinations apart without holding a token; a changed URL is a new
destination, as a corrected email address is.

Each message is sent by a process of its own (digest/net/chat_send.py), killed at SEND_SECONDS: a service that never
finishes answering costs that and no more, and the run ends on time. What became of a message is read from the
service's answers, not from Apprise's log lines (which name a status for some services only, and hold whatever the
service said): a 4xx refuses for good, a 200 whose body refuses is no delivery, and a request that went out and was
never answered may have reached the service, so it is recorded as uncertain and not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
import sys
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from digest.channels.base import STOP_GRACE_SECONDS, OnResult, Result
from digest.config import Config
from digest.errors import DeliveryError
from digest.models import Delivery, Digest
from digest.net.chat_send import SendEvent, SendRequest
from digest.render import chat_message
from digest.secrets import redact

if TYPE_CHECKING:  # Apprise takes a tenth of a second to import: only runs that notify anyone import it
    import apprise

    from digest.links import Links

log = logging.getLogger(__name__)

SEND_SECONDS = 30.0  # one message to one service, retries included; then the process sending it is killed
# A refusal no answer names as one (Slack's 200 {"ok": false}, Lark's codes, a plugin that says nothing) looks
# passing: after this many runs in a row that took nothing, the destination's digests fail with the last reason.
GIVE_UP_AFTER_RUNS = 3
LONGEST_WAIT = dt.timedelta(days=1)  # a Retry-After is kept up to this: no answer silences a destination for longer
SENDER = (sys.executable, "-m", "digest.net.chat_send")
# A 4xx is the service refusing this URL for good (a revoked token, a deleted channel); these are passing.
PASSING_4XX = frozenset({408, 425, 429})
DESTINATION = re.compile(r"[a-z][a-z0-9+.-]*://\S* \([0-9a-f]{8}\)")
FIX = "check this notify URL in config.yaml (the service refused it); a corrected URL gets the digest on the next run"
# A refusal of the message rather than of the URL: too long (413, Telegram's "message is too long"), or markup the
# service cannot read (Telegram's "can't parse entities").
CONTENT_REFUSAL = re.compile(r"too (?:long|large|big)|parse|entities|length|size", re.IGNORECASE)
CONTENT_FIX = "the service refused this message, not the URL; the next digest is sent as usual"


def is_notify_destination(destination: str) -> bool:
    return DESTINATION.fullmatch(destination) is not None


def destination_name(url: str) -> str:
    """`ntfy://127.0.0.1:8081 (3fa2c1d9)`: the service and host as Apprise shows them, with tokens masked (a
    Telegram bot token is the URL's host), without the user (some services' key), and the first hex digits of the
    URL's SHA-256."""
    plugin = _plugin(url)
    shown = urlsplit(plugin.url(privacy=True)) if plugin is not None else urlsplit(url)._replace(netloc="")
    host = shown.netloc.rpartition("@")[2]
    return f"{shown.scheme}://{host} ({hashlib.sha256(url.encode()).hexdigest()[:8]})"


def _plugin(url: str) -> apprise.plugins.NotifyBase | None:
    import apprise

    return apprise.Apprise.instantiate(_sending_url(url))


def _sending_url(url: str) -> str:
    """The URL as digest sends with it. A service that defaults to plain text but takes Markdown (ntfy, Mattermost,
    Discord, a JSON webhook) is asked for Markdown, unless the URL says otherwise, so that the message's escapes are
    read as escapes; others (Telegram's HTML, Slack's mrkdwn) get it converted by Apprise, escaped."""
    import apprise

    plain = apprise.Apprise.instantiate(url)
    if plain is None or _formats(plain)[0] != "text" or "format" in dict(parse_qsl(urlsplit(url).query)):
        return url
    marked = url + ("&" if "?" in url else "?") + "format=markdown"
    plugin = apprise.Apprise.instantiate(marked)
    return marked if plugin is not None and "markdown" in _formats(plugin) else url


def message_for(
    plugin: apprise.plugins.NotifyBase, title: str, digest: Digest | None, links: Links | None, *, emailed: bool
) -> str:
    """The chat message's body, in Markdown, as long as the service takes it (`_fits`). `emailed`: the profile's
    digest is emailed too, so the papers the message leaves out are there."""
    if digest is None:  # a digest recorded before digests kept their content: its subject alone
        return title
    return chat_message(digest, links, lambda body: _fits(plugin, title, body), emailed=emailed)


def _fits(plugin: apprise.plugins.NotifyBase, title: str, body: str) -> bool:
    """Whether the service takes the message whole, measured on what Apprise sends, as Apprise itself prepares it
    for sending (_build_send_calls, which its notify() calls, plugins' own preparations included): converted to the
    service's format, the title put in front (`# title`) where the service has no title field, turned into the
    service's dialect (Telegram's Markdown), against the service's limit as Apprise knows it (which counts the title
    too, for Discord). Matrix reckons its limit from the message itself, by the bytes of the whole event (its HTML
    included): that verdict is taken as it is."""
    from apprise import NotifyFormat

    usual = plugin.body_maxlen
    preparing = plugin._build_send_calls(body=body, title=title, body_format=NotifyFormat.MARKDOWN)
    with contextlib.closing(preparing):  # one call: Apprise sends a message as it is, unsplit
        call = next(preparing)
        limit = plugin.body_maxlen  # read while Apprise prepares this message
    if limit != usual:  # reckoned for this message: the most of it that fits, or all of it
        return limit >= len(body)
    sent = call["body"] + (call["title"] if plugin.overflow_amalgamate_title else "")
    return len(sent) <= limit


def _formats(plugin: apprise.plugins.NotifyBase) -> tuple[str, ...]:
    """The formats the service takes, its own first (Apprise's NotifyFormat is a str enum)."""
    found = plugin.notify_format
    return tuple(found) if isinstance(found, tuple | list) else (found,)


class NotifyChannel:
    kind: ClassVar[str] = "notify"
    gives_up_after_runs: ClassVar[int | None] = GIVE_UP_AFTER_RUNS

    def __init__(
        self, urls: dict[tuple[str, str], str], links: Links | None, emailed: set[str], secrets: list[str]
    ) -> None:
        self._urls = urls  # (profile, destination name) -> URL
        self._links = links
        self._emailed = emailed  # the profiles whose digests are emailed too
        self._secrets = secrets  # the config's, encoded forms too: a service's answer may echo any of them

    @classmethod
    def from_config(cls, config: Config, links: Links | None = None) -> NotifyChannel:
        urls = {
            (p.name, destination_name(u.get_secret_value())): u.get_secret_value()
            for p in config.profiles
            for u in p.notify
        }
        return cls(urls, links, {p.name for p in config.profiles if p.email}, config.secrets)

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        unwell: set[str] = set()  # destinations that took no message in this run: asked for nothing more in it
        for delivery in deliveries:
            if stop.is_set():
                return
            url = self._urls.get((delivery.profile, delivery.recipient))
            if url is None or delivery.recipient in unwell:  # a URL taken out of config.yaml: the run has dropped it
                continue
            result = await self._send(url, delivery, stop)
            if result.status in ("pending", "uncertain"):
                unwell.add(delivery.recipient)
            on_result(delivery, result._replace(reason=redact(result.reason, self._secrets)))

    async def _send(self, url: str, delivery: Delivery, stop: asyncio.Event) -> Result:
        plugin = _plugin(url)
        if plugin is None:  # read when the config was: only a changed Apprise could say otherwise
            return Result("failed", "Apprise can no longer read this URL", FIX)
        emailed = delivery.profile in self._emailed
        body = message_for(plugin, delivery.subject, delivery.content, self._links, emailed=emailed)
        request = SendRequest(url=_sending_url(url), title=delivery.subject, body=body, deadline_seconds=SEND_SECONDS)
        events: list[SendEvent] = []
        process = await asyncio.create_subprocess_exec(
            *SENDER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C at a terminal is the run's to handle: the message may finish first
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(request.model_dump_json().encode())
        process.stdin.close()

        async def read(lines: asyncio.StreamReader) -> None:
            async for line in lines:
                with contextlib.suppress(ValidationError):  # a line cut by the kill
                    events.append(SendEvent.model_validate_json(line))

        reading = asyncio.ensure_future(read(process.stdout))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({reading, stopped}, timeout=SEND_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not reading.done():  # a stop: the message on its way may finish, or be abandoned
                await asyncio.wait({reading}, timeout=STOP_GRACE_SECONDS)
        finally:
            stopped.cancel()
            if not reading.done():  # its output not ended: the process is still at it
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
            await reading
        if not any(event.kind == "done" for event in events) and (process.returncode or 0) > 0:
            # Not killed, yet not done: a bug, whose last line says what (and is redacted on its way out).
            said = (await process.stderr.read()).decode(errors="replace").strip().splitlines()[-1:]
            log.warning("notify: sending to %s failed in its process: %s", delivery.recipient, " ".join(said))
        unfinished = "was stopped by a signal" if stop.is_set() else f"did not finish within {SEND_SECONDS:g} s"
        return outcome(events, unfinished)

    async def check(self) -> str:
        """Every URL was parsed by Apprise when the config was read; this names them, sending nothing."""
        if not self._urls:
            raise DeliveryError("no profile has notify URLs")
        return "Apprise reads " + ", ".join(f"{name} (profile {profile})" for profile, name in self._urls)


def outcome(events: list[SendEvent], unfinished: str) -> Result:
    """What became of a message, from what its sending process saw: sent when Apprise counted it sent and the last
    answer does not refuse it; failed for good on a 4xx (or a 200 whose body names one, as ntfy's and Telegram's
    do); uncertain when a request went out and the process had to be ended before its answer (`unfinished` says
    why); pending otherwise, until the time a Retry-After asked for."""
    done = next((event for event in events if event.kind == "done"), None)
    answered = [event for event in events if event.kind in ("answer", "no answer")]
    last = answered[-1] if answered else None
    if done is None:
        if any(event.kind == "request" for event in events):
            return Result("uncertain", f"{unfinished}, after its request went out: the service may have it")
        return Result("pending", unfinished)
    if done.accepted and (last is None or not last.refused):
        return Result("sent")
    failing = next((e for e in reversed(answered) if e.refused or e.kind == "no answer" or e.status >= 300), None)
    if failing is None:
        return Result("pending", "Apprise did not send it", FIX)
    if failing.kind == "no answer":
        return Result("pending", failing.words, FIX)
    reason = _answer_reason(failing)
    status = failing.meant if failing.refused and failing.meant is not None else failing.status
    if 400 <= status < 500 and status not in PASSING_4XX:
        content = status == 413 or CONTENT_REFUSAL.search(failing.words) is not None
        return Result("failed", reason, CONTENT_FIX if content else FIX)
    if failing.retry_after is None:
        return Result("pending", reason, FIX)
    until = dt.datetime.now(dt.UTC) + min(dt.timedelta(seconds=failing.retry_after), LONGEST_WAIT)
    return Result("pending", f"{reason}; it asks for nothing before {until:%Y-%m-%d %H:%M} UTC", FIX, until)


def _answer_reason(answer: SendEvent) -> str:
    """`HTTP 401 Unauthorized: unauthorized`, `HTTP 200 OK, refused: channel_not_found`: the status and, for a
    refusal, the service's own few words (a 5xx's are its server's trouble, and may be anything)."""
    status = answer.status
    said = f"HTTP {status} {_phrase(status)}".rstrip() + (", refused" if answer.refused and status < 300 else "")
    return f"{said}: {answer.words}" if answer.words and status < 500 else said


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
