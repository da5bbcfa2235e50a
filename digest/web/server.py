"""Serve the web app under uvicorn until `stop` is set: alone (`digest web`) or beside the scheduler.

The web side shares its process with the scheduler, so whatever a visitor does must leave the scheduler its file
descriptors and its event loop: connections are bounded (a share of the descriptor limit), a request whose headers
have not arrived within HEADERS_SECONDS is closed, and when the bound is reached the connection that has waited
longest for its headers makes room. A slow-loris client then holds a few seconds' worth of sockets, never all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from digest.config import Config, WebConfig
from digest.errors import DigestError
from digest.web.app import create_app

log = logging.getLogger(__name__)

HEADERS_SECONDS = 5.0  # a request's headers (and a rating's few bytes of body) arrive well within this, or never
MOST_CONNECTIONS = 256
DESCRIPTORS_SHARE = 4  # the web side may hold at most this fraction of the descriptor limit


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are late: after it opens, and
    after each response while kept alive. uvicorn's own keep-alive timeout ends at the first byte, so a client
    sending a byte every few seconds would otherwise hold its socket for ever."""

    waiting_since: float | None = None  # when this connection began to wait for a request's headers
    _late: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()
        # uvicorn answers 503 from limit_concurrency connections on: the one that has waited longest for its
        # headers makes room first (if none is waiting, this one's request gets the 503).
        if self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency:
            waiting = [
                c
                for c in self.connections
                if isinstance(c, GuardedH11) and c.waiting_since is not None and c is not self
            ]
            if waiting:
                min(waiting, key=lambda c: c.waiting_since or 0.0).close_late()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete and self._late is not None:
            self._late.cancel()  # the headers are in: the application answers now
            self._late = self.waiting_since = None

    def on_response_complete(self) -> None:
        self._await_headers()  # before uvicorn's own, which may start a pipelined request at once
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._late is not None:
            self._late.cancel()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._late is not None:
            self._late.cancel()
        self.waiting_since = self.loop.time()
        self._late = self.loop.call_later(HEADERS_SECONDS, self.close_late)

    def close_late(self) -> None:
        self._late = self.waiting_since = None
        if not self.transport.is_closing():
            self.transport.close()


def connection_bound() -> int:
    """How many connections the web side may hold: raising the soft descriptor limit to the hard one first (a
    process may), so that a low default (1024 under systemd) does not make the bound needlessly small."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return MOST_CONNECTIONS
    return max(8, min(MOST_CONNECTIONS, soft // DESCRIPTORS_SHARE))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are digest's: they set the stop event (see stopping.py), which ends the server and the scheduler.
        yield


def listening_socket(web: WebConfig) -> socket.socket:
    """Bound here rather than by uvicorn, so that a taken port is one clear error, not an exit from a thread."""
    family = socket.AF_INET6 if ":" in web.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((web.host, web.port))
    except OSError as error:
        sock.close()
        raise DigestError(
            f"cannot listen on {web.listen}: {error.strerror or error}",
            hint="set web.listen in config.yaml to a free host:port (another digest web may be running)",
        ) from None
    return sock


async def serve_web(config: Config, stop: asyncio.Event, *, heartbeat: Path | None = None) -> None:
    web = config.web or WebConfig()
    sock = listening_socket(web)
    app = create_app(config, heartbeat=heartbeat)
    bound = connection_bound()
    server = _Server(
        uvicorn.Config(
            app,
            http=GuardedH11,
            limit_concurrency=bound,
            # asyncio accepts up to `backlog` connections at once before any of them is handled: a flood would take
            # every descriptor in one go. In steps of the bound, each step makes room before the next.
            backlog=bound,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("web: listening on http://%s%s", web.listen, f", reached as {web.base_url}" if web.base_url else "")
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        server.should_exit = True
        await task
        sock.close()
