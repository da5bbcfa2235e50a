"""Serve the web app under uvicorn until `stop` is set: alone (`digest web`) or beside the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from digest.config import Config, WebConfig
from digest.errors import DigestError
from digest.web.app import create_app

log = logging.getLogger(__name__)


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
    server = _Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
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
