"""Whether a run is getting anywhere with the LLM server: a server that times out or refuses nearly every request,
or answers the same error to every one, would otherwise take the whole run's time and give nothing."""

from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple

from digest.errors import LLMError
from digest.net.pacing import Clock

SAME_ERROR_LIMIT = 3  # the same 4xx this many times in a row, with no success between: it is every request's
# Stalled: over stall_seconds, no more than one attempt in STALL_SUCCESS_SHARE succeeded (of at least STALL_ATTEMPTS).
STALL_ATTEMPTS = 5
STALL_SUCCESS_SHARE = 20


class StallWatch:
    """A run's attempts over the last `stall_seconds`, its last success, and the error repeated since."""

    def __init__(self, stall_seconds: float, *, clock: Clock = time.monotonic) -> None:
        self._window = stall_seconds
        self._clock = clock
        self._started = clock()
        self._succeeded_at = self._started  # the last success (or the start): a run stalled too long stops
        self._attempts: deque[_Attempt] = deque()  # over the last stall_seconds
        self._same_error: _Repeated | None = None  # without a success between

    def succeeded(self) -> None:
        self._succeeded_at = self._clock()
        self._attempts.append(_Attempt(self._succeeded_at, True))
        self._same_error = None

    def since_success(self) -> float:
        """Seconds since the last success (or the start)."""
        return self._clock() - self._succeeded_at

    def repeated(self, status: int, detail: str) -> bool:
        """Whether this error, answered again, has now come often enough in a row to be every request's."""
        before = self._same_error
        times = before.times + 1 if before is not None and (before.status, before.detail) == (status, detail) else 1
        self._same_error = _Repeated(status, detail, times)
        return times >= SAME_ERROR_LIMIT

    def stalled(self, problem: str, *, counted: bool = True) -> LLMError | None:
        """After a failed attempt (`counted`: not one asked again at once in another form): the error that ends
        the run when, over stall_seconds, almost nothing succeeded; None while the run gets somewhere."""
        now = self._clock()
        if counted:
            self._attempts.append(_Attempt(now, False))
        while self._attempts and self._attempts[0].at < now - self._window:
            self._attempts.popleft()
        if now - self._started < self._window or len(self._attempts) < STALL_ATTEMPTS:
            return None
        succeeded = sum(attempt.succeeded for attempt in self._attempts)
        if succeeded * STALL_SUCCESS_SHARE > len(self._attempts):
            return None
        return LLMError(
            f"the LLM server answered {succeeded} of the last {len(self._attempts)} requests in "
            f"{self._window:.0f} s (the last: {problem})",
            hint="a slow or local server: raise llm.timeout_seconds or lower llm.max_concurrency (README: 'With "
            "a local model'); rate limits: lower llm.requests_per_minute; the papers not yet classified stay "
            "pending for the next run",
        )


class _Attempt(NamedTuple):
    at: float
    succeeded: bool


class _Repeated(NamedTuple):
    status: int
    detail: str
    times: int
