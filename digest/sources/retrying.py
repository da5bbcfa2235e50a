"""GET, retried as a source's server deserves: backoff with jitter on timeouts, connection errors, 429 and 5xx, the
server's own Retry-After, quick retries for a name that does not resolve, within a budget of seconds; then a
FetchError that names the request, the server and the settings that point at it."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import httpx

from digest.errors import FetchError, cause_of
from digest.net.http import TooLarge, resolver_silent
from digest.net.pacing import Sleep, backoff
from digest.net.rate_headers import retry_after

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
FIRST_BACKOFF_SECONDS = 2.0  # servers fail under load: give them time
LONGEST_BACKOFF_SECONDS = 30.0
DNS_RETRIES = 2  # a name that does not resolve is retried this often, quickly, before the run gives up
DNS_RETRY_SECONDS = 0.5


async def get_with_retries(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    budget_seconds: float,
    sleep: Sleep,
    *,
    what: str,
    who: str,
    settings: str,
    before_each: Callable[[], Awaitable[object]] | None = None,
) -> httpx.Response:
    """GET with backoff and jitter on timeouts, connection errors, 429 and 5xx, within `budget_seconds`. `what`
    names the request in messages ("arXiv feed"), `who` the server ("arXiv"), `settings` the config keys that
    point at it ("arxiv.feed_url or arxiv.api_url")."""
    deadline = time.monotonic() + budget_seconds
    attempt = 0
    while True:
        attempt += 1
        if before_each is not None:
            await before_each()
        wait: float | None = None  # the wait the server named, or a short one for a name that did not resolve
        try:
            # httpx's timeout bounds each read; a server trickling its answer is bounded here, as a whole.
            async with asyncio.timeout(max(1.0, min(http.timeout.read or 30.0, deadline - time.monotonic()))):
                response = await http.get(url, headers=headers)
            problem = f"HTTP {response.status_code}"
            if response.status_code not in RETRYABLE_STATUS:
                break
            wait = retry_after(response.headers)
        except TooLarge as error:
            raise FetchError(
                f"{what} {url}: {error}", hint=f"if {who}'s answer really is this large, raise its limit in config.yaml"
            ) from None
        except (httpx.TimeoutException, TimeoutError):
            problem = "timed out"
            host = httpx.URL(url).host
            if await resolver_silent(host):
                raise FetchError(
                    f"{what} {url}: timed out, because the name server did not answer for {host} (DNS)",
                    hint="check this machine's (or container's) DNS settings (/etc/resolv.conf, the container's "
                    "--dns). No paper was fetched; the next run tries again.",
                ) from None
        except httpx.TransportError as error:
            problem = f"connection failed ({error.__class__.__name__}: {error})"
            if cause_of(error, socket.gaierror) is not None:  # the host name did not resolve
                # Not arXiv's fault, and not worth minutes of back-off: a resolver that failed twice in a couple of
                # seconds is down, or the name is wrong.
                problem = f"the name {httpx.URL(url).host} does not resolve (DNS: {error})"
                if attempt > DNS_RETRIES:
                    raise FetchError(
                        f"{what} {url}: {problem}",
                        hint=f"check this machine's (or container's) network and DNS, and the host in {settings}. "
                        "No paper was fetched; the next run tries again.",
                    ) from None
                wait = DNS_RETRY_SECONDS * attempt
        if wait is None:
            wait = backoff(attempt, first=FIRST_BACKOFF_SECONDS, longest=LONGEST_BACKOFF_SECONDS)
        if time.monotonic() + wait > deadline:
            raise FetchError(
                f"{what} {url} failed after {attempt} attempt{'s' if attempt > 1 else ''}: {problem}",
                hint=f"{who} may be down or rate-limiting; try again later. No paper was fetched; the next run tries "
                "again.",
            )
        log.warning("%s %s: %s; retrying in %.1f s (attempt %d)", what, url, problem, wait, attempt)
        await sleep(wait)
    if response.status_code == 304 or response.is_success:
        return response
    raise FetchError(
        f"{what} {url} answered HTTP {response.status_code}",
        hint=f"check {settings} in config.yaml",
    )
