"""Progress of long work: the classification (a live line on a terminal, one summary line otherwise), and a plain
count of anything else (reading a large library)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from digest.models import Progress, Usage

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


class ProgressLine:
    """A stage's Progress drawn as one line: redrawn in place on a terminal, written once at the end elsewhere (a
    log file, a pipe), or not at all when `enabled` is off (-q, --json)."""

    def __init__(self, stream: TextIO, *, enabled: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        # Past the CLI's output filter, which removes terminal controls: the redraw is ours, the figures too.
        self._stream: TextIO = getattr(stream, "terminal", stream)
        self._live = enabled and stream.isatty()
        self._enabled = enabled
        self._clock = clock
        self._started: float | None = None
        self._drawn = 0.0

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        if self._started is None:
            self._started = now
        if progress.finished:
            if self._enabled and progress.total:
                self._stream.write(("\r\033[K" if self._live else "") + self._line(progress, now) + "\n")
                self._stream.flush()
        elif self._live and (now - self._drawn >= REDRAW_SECONDS or progress.done == progress.total):
            self._drawn = now
            self._stream.write(f"\r\033[K{self._line(progress, now)}")
            self._stream.flush()

    def _line(self, progress: Progress, now: float) -> str:
        elapsed = max(now - (self._started or now), 1e-9)
        usage = progress.usage
        filled = BAR_WIDTH * progress.done // max(progress.total, 1)
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " if self._live else ""
        return (
            f"{bar}classified {progress.done}/{progress.total} papers  {usage.requests / elapsed:.1f} req/s  "
            f"{usage.tokens:,} tokens  {describe_cost(progress.cost, free=progress.free)}  "
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
