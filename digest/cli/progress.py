"""Progress of long work: the classification (a live line on a terminal, one summary line otherwise), and a plain
count of anything else (reading a large library)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from digest.models import Usage

REDRAW_SECONDS = 0.1
BAR_WIDTH = 24


def describe_cost(cost: float | None, *, free: bool = False) -> str:
    if free:
        return "local, no charge"
    return "cost unknown (set llm.price)" if cost is None else f"~${cost:.4f}"


def describe_setbacks(usage: Usage, sep: str = ", ") -> str:
    """Retries, and why: a server that never rate-limits or is never busy shows neither."""
    parts = [f"{usage.retries} retries"]
    parts += [f"{usage.rate_limited} rate-limited"] if usage.rate_limited else []
    parts += [f"{usage.busy} busy (503)"] if usage.busy else []
    parts.append(f"{usage.timed_out} timed out")
    return sep.join(parts)


class Progress:
    def __init__(
        self,
        total: int,
        cost_of: Callable[[Usage], float | None],
        stream: TextIO,
        *,
        enabled: bool = True,
        free: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free
        self._total = total
        self._done = 0
        self._cost_of = cost_of
        # Past the CLI's output filter, which removes terminal controls: the redraw is ours, the figures too.
        self._stream: TextIO = getattr(stream, "terminal", stream)
        self._live = enabled and stream.isatty()
        self._enabled = enabled
        self._clock = clock
        self._started = clock()
        self._drawn = 0.0

    def advance(self, usage: Usage) -> None:
        self._done += 1
        now = self._clock()
        if self._live and (now - self._drawn >= REDRAW_SECONDS or self._done == self._total):
            self._drawn = now
            self._stream.write(f"\r\033[K{self._line(usage)}")
            self._stream.flush()

    def finish(self, usage: Usage) -> None:
        if not self._enabled or self._total == 0:
            return
        self._stream.write(("\r\033[K" if self._live else "") + self._line(usage) + "\n")
        self._stream.flush()

    def _line(self, usage: Usage) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        tokens = usage.tokens
        filled = BAR_WIDTH * self._done // max(self._total, 1)
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " if self._live else ""
        return (
            f"{bar}classified {self._done}/{self._total} papers  {usage.requests / elapsed:.1f} req/s  "
            f"{tokens:,} tokens  {describe_cost(self._cost_of(usage), free=self._free)}  "
            f"{describe_setbacks(usage, '  ')}"
        )


class Count:
    """`label: done/total` redrawn in place on a terminal, and wiped when the work ends; nothing elsewhere, where
    the command's own report follows."""

    def __init__(self, label: str, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._label = label
        self._stream: TextIO = getattr(stream, "terminal", stream)
        self._live = stream.isatty()
        self._clock = clock
        self._drawn: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if self._live and (self._drawn is None or now - self._drawn >= REDRAW_SECONDS or done == total):
            self._drawn = now
            self._stream.write(f"\r\033[K{self._label}: {done:,}/{total:,}")
            self._stream.flush()

    def close(self) -> None:
        if self._drawn is not None:
            self._stream.write("\r\033[K")
            self._stream.flush()
