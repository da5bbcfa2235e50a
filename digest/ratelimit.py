"""Client-side pacing: a rate limiter shared by every request of a run, and how long to wait before a retry."""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
SLOW_DOWN = 0.75  # factor applied to the request rate on a 429 met by a request sent at the current rate
RECOVERY_PER_SECOND = 1.1  # without 429s the rate grows by this factor a second, back up to the limit
BURST_SECONDS = 0.5  # how many seconds' worth of requests may go at once


def parse_duration(text: str) -> float | None:
    """OpenAI's reset headers: '1s', '6m0s', '20ms', '1h2m3.5s'."""
    text = text.strip()
    parts = DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            return float(text)
        except ValueError:
            return None
    return sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a server asks for: OpenAI's retry-after-ms, or retry-after in seconds, as a duration, or as an
    HTTP date (RFC 9110). None when there is no usable answer."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(failures: int, *, first: float, longest: float) -> float:
    """Exponential back-off with jitter after `failures` consecutive failures that named no wait: about `first`
    seconds after the first, doubling each time up to `longest`, each drawn from the upper half so that clients
    failing together do not retry together."""
    return float(min(first * 2 ** (failures - 1), longest) * random.uniform(0.5, 1.0))


class RateLimiter:
    """Paces requests so that no 60-second window holds more than the configured requests or tokens.

    Servers enforce per-minute limits in one-second quanta (6,000 RPM as 100 a second), so a burst of up to one
    second's worth passes; half of that may go at once (the other half is margin for requests the network bunches
    up) and the rest is spaced evenly (a generic cell rate algorithm); the sustained rate leaves room for that
    burst within every minute. Slots are reserved without awaiting in between, so concurrent callers never share
    one. A 429 that means a limit is spent pauses everybody (not just the task that met it) and takes back what
    was reserved; if the request was sent at the rate in force, the rate goes down. Successes raise it again
    gradually, never above the configured rate nor above the limit the server announces in its headers.
    """

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        *,
        burst_seconds: float = BURST_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._burst = burst_seconds
        window = 60.0 + burst_seconds  # a minute's slots plus one burst fit in one minute's limit
        self._configured_rate = self._max_rate = requests_per_minute / window
        self.rate = self._max_rate  # requests per second now in force
        self._configured_tokens_per_second = self._tokens_per_second = tokens_per_minute / window
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._request_due = 0.0  # when the next request is due if sent at the sustained rate
        self._tokens_due = 0.0
        self._paused_until = 0.0
        self._epoch = 0  # bumped whenever reservations made so far are void
        self._rate_changed_at = -math.inf
        self._slowed_at = -math.inf

    async def acquire(self, tokens: int) -> float:
        """Wait for a slot for one request of about `tokens` tokens; return the slot's time on the clock."""
        while True:
            epoch, now = self._epoch, self._clock()
            start = max(now, self._paused_until, self._request_due - self._burst, self._tokens_due - self._burst)
            self._request_due = max(self._request_due, start) + 1.0 / self.rate
            self._tokens_due = max(self._tokens_due, start) + tokens / self._tokens_per_second
            if start <= now:
                return now
            await self._sleep(start - now)
            if epoch == self._epoch:
                return start
            # The rate fell or a pause began while we waited: our slot was reserved on old terms.

    def _restart(self) -> None:
        """Void every reservation and the burst credit: from now on, pace from the end of any pause."""
        start = max(self._clock(), self._paused_until)
        self._request_due = self._tokens_due = start + self._burst
        self._epoch += 1

    def rate_limited(self, retry_after: float, headers: Mapping[str, str], sent_at: float) -> None:
        """A 429 for the request whose slot was at `sent_at`. When the server's counters say a limit is spent (or
        it sends none), everybody waits; a 429 while the server still reports room is transient, and only the
        request that met it waits. The rate goes down only for a request sent since the last slow-down: the
        429s of requests sent before it are echoes of the overshoot it answered, and would push the rate far
        below the server's limit."""
        self.observe(headers)
        if all(_number(headers.get(f"x-ratelimit-remaining-{kind}")) for kind in ("requests", "tokens")):
            return
        now = self._clock()
        self._paused_until = max(self._paused_until, now + retry_after)
        if sent_at >= self._slowed_at:
            self.rate = max(self.rate * SLOW_DOWN, self._max_rate / 100)
            self._slowed_at = self._rate_changed_at = now
        self._restart()

    def succeeded(self, headers: Mapping[str, str]) -> None:
        self.observe(headers)
        if self.rate < self._max_rate:
            now = self._clock()
            growth = RECOVERY_PER_SECOND ** min(now - self._rate_changed_at, 10.0)
            self.rate = min(self.rate * growth, self._max_rate)
            self._rate_changed_at = now

    def observe(self, headers: Mapping[str, str]) -> None:
        """The server's own limits and counters are the truth: never aim above the limit it announces, and when
        it says a window is spent, everybody waits for the reset it names."""
        request_limit = _number(headers.get("x-ratelimit-limit-requests"))
        if request_limit:
            self._max_rate = min(self._configured_rate, request_limit / self._window)
            self.rate = min(self.rate, self._max_rate)
        token_limit = _number(headers.get("x-ratelimit-limit-tokens"))
        if token_limit:
            self._tokens_per_second = min(self._configured_tokens_per_second, token_limit / self._window)
        for kind in ("requests", "tokens"):
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if remaining == 0 and reset is not None and self._clock() + reset > self._paused_until:
                self._paused_until = self._clock() + reset
                self._restart()


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
