"""Stopping at a safe point: on SIGTERM and SIGINT, for `digest run` and `digest serve` alike.

A process without a SIGTERM handler that runs as a container's PID 1 never sees the signal: the kernel drops
signals PID 1 does not handle, so `docker stop` would wait out its grace period and kill the run. With a handler,
the signal only sets an event; the work checks it at safe points, and whatever is abandoned is done by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """The stop event was set before the work finished, and the work was abandoned."""


class StopOnSignals:
    """While active, SIGTERM and SIGINT set `stop` instead of ending the process; `received` names the first."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.received: signal.Signals | None = None
        self._before: dict[signal.Signals, signal.Handlers | object] = {}

    def _receive(self, signum: signal.Signals) -> None:
        self.received = self.received or signum
        self.stop.set()

    def __enter__(self) -> StopOnSignals:
        loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            self._before[signum] = signal.getsignal(signum)
            loop.add_signal_handler(signum, self._receive, signum)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)
            # What was there before (the CLI's first handler): a signal while the summary prints still ends
            # digest with a message, not silently by the signal.
            before = self._before.pop(signum)
            if callable(before) or isinstance(before, int):
                signal.signal(signum, before)


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event | None) -> T:
    """Await `work`; if `stop` is set first, cancel it and raise Stopped. Nothing of `work` outlives this call."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future((stop or asyncio.Event()).wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    if task.cancelled():
        raise Stopped
    return task.result()
