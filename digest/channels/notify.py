"""The notification channel: chat and push services through Apprise URLs (those README.md's "Chat and push" names,
and any other Apprise knows), one short Markdown message per digest and destination, cut to what the service takes.

A destination is named by what Apprise shows of its URL (tokens masked) and a hash of the whole URL, so that the
state, the summary and `digest status` can tell destinations apart without holding a token; a changed URL is a new
destination, as a corrected email address is.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import parse_qsl, urlsplit

from digest.channels.base import STOP_GRACE_SECONDS, OnResult, Result
from digest.config import Config
from digest.errors import DeliveryError
from digest.models import Delivery, Digest
from digest.render import chat_message
from digest.secrets import redact, token_parts

if TYPE_CHECKING:  # Apprise takes a tenth of a second to import: only runs that notify anyone import it
    import apprise

    from digest.links import Links

SEND_SECONDS = 30.0  # one message to one service, retries included; past it, the delivery is retried next run
# A 4xx is the service refusing this URL for good (a revoked token, a deleted channel); these are passing.
PASSING_4XX = frozenset({408, 425, 429})
# Nearly every Apprise plugin logs a failed request's status as "error=NNN"; ntfy's, as ntfy's own code for it,
# the status and two more digits ("error=40101": 401, unauthorized).
HTTP_STATUS = re.compile(r"\berror=(\d{3})(?:\d\d)?\b")
DESTINATION = re.compile(r"[a-z][a-z0-9+.-]*://\S* \([0-9a-f]{8}\)")
FIX = "check this notify URL in config.yaml (the service refused it); a corrected URL gets the digest on the next run"


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
    """The URL's Apprise service. One that defaults to plain text but takes Markdown (ntfy, Mattermost, Discord, a
    JSON webhook) is asked for Markdown, unless the URL says otherwise, so that the message's escapes are read as
    escapes; others (Telegram's HTML, Slack's mrkdwn) get it converted by Apprise, escaped."""
    import apprise

    plain = apprise.Apprise.instantiate(url)
    if plain is None or _formats(plain)[0] != "text" or "format" in dict(parse_qsl(urlsplit(url).query)):
        return plain
    marked = apprise.Apprise.instantiate(url + ("&" if "?" in url else "?") + "format=markdown")
    return marked if marked is not None and "markdown" in _formats(marked) else plain


def message_for(
    plugin: apprise.plugins.NotifyBase, title: str, digest: Digest | None, links: Links | None, *, emailed: bool
) -> str:
    """The chat message's body, in Markdown, in what the service takes once Apprise has converted it to the
    service's own format; where the service has no title of its own, Apprise puts it on the body's first line.
    `emailed`: the profile's digest is emailed too, so the papers the message leaves out are there."""
    from apprise.conversion import convert_between

    if digest is None:  # a digest recorded before digests kept their content: its subject alone
        return title
    room = plugin.body_maxlen - (len(title) + 2 if plugin.title_maxlen <= 0 else 0)
    native = _formats(plugin)[0]

    def fits(body: str) -> bool:
        sent = body if native == "markdown" else convert_between("markdown", native, body)
        return len(sent) <= room

    return chat_message(digest, links, fits, emailed=emailed)


def _formats(plugin: apprise.plugins.NotifyBase) -> tuple[str, ...]:
    """The formats the service takes, its own first (Apprise's NotifyFormat is a str enum)."""
    found = plugin.notify_format
    return tuple(found) if isinstance(found, tuple | list) else (found,)


class NotifyChannel:
    kind: ClassVar[str] = "notify"

    def __init__(self, urls: dict[tuple[str, str], str], links: Links | None, emailed: set[str]) -> None:
        self._urls = urls  # (profile, destination name) -> URL
        self._links = links
        self._emailed = emailed  # the profiles whose digests are emailed too

    @classmethod
    def from_config(cls, config: Config, links: Links | None = None) -> NotifyChannel:
        urls = {
            (p.name, destination_name(u.get_secret_value())): u.get_secret_value()
            for p in config.profiles
            for u in p.notify
        }
        return cls(urls, links, {p.name for p in config.profiles if p.email})

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        for delivery in deliveries:
            if stop.is_set():
                return
            url = self._urls.get((delivery.profile, delivery.recipient))
            if url is None:  # taken out of config.yaml since: the run's reconciling has dropped it
                continue
            sending = asyncio.ensure_future(self._send(url, delivery))
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({sending, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not sending.done():  # a stop: the message on its way may finish, or be abandoned
                    await asyncio.wait({sending}, timeout=STOP_GRACE_SECONDS)
            finally:
                stopped.cancel()
            if not sending.done():
                return  # not recorded, so pending: Apprise's own timeouts (4 s to connect, 4 s to read) end it
            on_result(delivery, sending.result())

    async def _send(self, url: str, delivery: Delivery) -> Result:
        import apprise

        plugin = _plugin(url)
        if plugin is None:  # read when the config was: only a changed Apprise could say otherwise
            return Result("failed", "Apprise can no longer read this URL", FIX)
        emailed = delivery.profile in self._emailed
        body = message_for(plugin, delivery.subject, delivery.content, self._links, emailed=emailed)
        notifier = apprise.Apprise()
        notifier.add(plugin)
        result = await notifier.async_notify(
            body=body, title=delivery.subject, body_format="markdown", timeout=SEND_SECONDS
        )
        if result:
            return Result("sent")
        said = [entry.message for service in result for attempt in service for entry in attempt]
        reason = redact("; ".join(dict.fromkeys(said)) or f"Apprise said {result.status.name}", token_parts(url))
        codes = [int(code) for line in said for code in HTTP_STATUS.findall(line)]
        if codes and 400 <= codes[-1] < 500 and codes[-1] not in PASSING_4XX:
            return Result("failed", reason, FIX)
        return Result("pending", reason)

    async def check(self) -> str:
        """Every URL was parsed by Apprise when the config was read; this names them, sending nothing."""
        if not self._urls:
            raise DeliveryError("no profile has notify URLs")
        return "Apprise reads " + ", ".join(f"{name} (profile {profile})" for profile, name in self._urls)
