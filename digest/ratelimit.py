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
SLOW_DOWN = 0.75  # factor applied to the request rate when the evidence says it is over the server's limit
RECOVERY_PER_SECOND = 1.1  # without 429s the rate grows by this factor a second, back up to the limit
REPACE_AT = 1.25  # when the rate has grown by this factor, slots booked at the old rate are booked again
BURST_SECONDS = 0.5  # how many seconds' worth of requests may go at once
OPENING_SECONDS = 0.5  # before the first answer, at most this many seconds' worth of requests (at least one)


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
    HTTP date (RFC 9110); else a gateway's own (LiteLLM's llm_provider-retry-after), else the reset of a counter
    that is spent or not reported. None when there is no usable answer."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or headers.get("llm_provider-retry-after") or "").strip()
    if not value:
        resets = [
            parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            for kind in ("requests", "tokens")
            if _number(headers.get(f"x-ratelimit-remaining-{kind}")) in (None, 0)
        ]
        return max((reset for reset in resets if reset is not None), default=None)
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
    one; whenever the terms change (a pause, a slower or a recovered rate), waiting callers wake and book again.

    The first second is a guess: until the first answer shows the server's limits, only an opening share goes.
    Each 429 is read for what its headers say: a counter with room (and the other with room or not reported)
    means the 429 is transient, and only its request waits; a spent counter, or none at all, pauses everybody and
    slows down, unless the request was sent before the last slow-down (its 429 is an echo of the same overshoot).
    Successes raise the rate again gradually, never above the configured rate nor the limit the server announces;
    slots booked at a rate that has since recovered are booked again.
    """

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        *,
        burst_seconds: float = BURST_SECONDS,
        opening_seconds: float = OPENING_SECONDS,
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
        self._terms_changed = asyncio.Event()  # set (and replaced) when they are, to wake those who wait
        self._paced_rate = self.rate  # the rate the reservations were booked at
        self._rate_changed_at = -math.inf
        self._slowed_at = -math.inf  # the slot time from which requests were sent at the lowered rate
        self._opening = None if opening_seconds <= 0 else max(1, int(self._max_rate * opening_seconds))
        self._opened = 0  # requests sent before anything came back

    async def acquire(self, tokens: int) -> float:
        """Wait for a slot for one request of about `tokens` tokens; return the slot's time on the clock."""
        while self._opening == 0:  # the opening share has gone and nothing has come back yet
            await self._terms_changed.wait()
        if self._opening is not None:
            self._opening -= 1
            self._opened += 1
        while True:
            epoch, now = self._epoch, self._clock()
            start = max(now, self._paused_until, self._request_due - self._burst, self._tokens_due - self._burst)
            self._request_due = max(self._request_due, start) + 1.0 / self.rate
            self._tokens_due = max(self._tokens_due, start) + tokens / self._tokens_per_second
            if start <= now:
                return now
            await self._nap(start - now)
            if epoch == self._epoch:
                return start
            # The terms changed while we waited: our slot was booked on old ones.

    async def _nap(self, seconds: float) -> None:
        """Sleep, or less if the terms change meanwhile."""
        napping = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(self._terms_changed.wait())
        try:
            await asyncio.wait({napping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (napping, woken):
                task.cancel()

    def _restart(self) -> None:
        """Void every reservation and the burst credit: from now on, pace from the end of any pause."""
        start = max(self._clock(), self._paused_until)
        self._request_due = self._tokens_due = start + self._burst
        self._paced_rate = self.rate
        self._epoch += 1
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._terms_changed.set()
        self._terms_changed = asyncio.Event()  # a fresh one for those who wait from now on

    def _answered(self) -> None:
        if self._opening is not None:
            self._opening = None
            self._wake_waiters()

    def failed(self) -> None:
        """An answer that says nothing of limits (a server error, a timeout): it still ends the opening."""
        self._answered()

    def succeeded(self, headers: Mapping[str, str]) -> None:
        self._answered()
        now = self._clock()
        self.observe(headers)
        if self.rate < self._max_rate:
            growth = RECOVERY_PER_SECOND ** min(now - self._rate_changed_at, 10.0)
            self.rate = min(self.rate * growth, self._max_rate)
            self._rate_changed_at = now
            if self.rate >= self._paced_rate * REPACE_AT:
                self._restart()  # slots booked at the slow rate would keep it slow for as long as they reach

    def rate_limited(self, retry_after: float, headers: Mapping[str, str], sent_at: float) -> None:
        """A 429 for the request whose slot was at `sent_at`; `retry_after` is the wait the server asked for."""
        self._answered()
        self.observe(headers)
        requests_left = _number(headers.get("x-ratelimit-remaining-requests"))
        tokens_left = _number(headers.get("x-ratelimit-remaining-tokens"))
        counted = requests_left is not None or tokens_left is not None
        if counted and requests_left != 0 and tokens_left != 0:
            return  # a counter with room, the other unknown or with room too: transient; only this request waits
        now = self._clock()
        self._paused_until = max(self._paused_until, now + retry_after)
        # Requests sent before the last slow-down met the overshoot it answered: their 429s are its echoes.
        if sent_at >= self._slowed_at:
            self.rate = max(self.rate * SLOW_DOWN, self._max_rate / 100)
            self._slowed_at = self._rate_changed_at = max(now, self._paused_until)
        self._restart()

    def observe(self, headers: Mapping[str, str]) -> None:
        """The server's own limits and counters are the truth: never aim above the limit it announces, and when
        it says a window is spent, everybody waits for the reset it names."""
        request_limit = _number(headers.get("x-ratelimit-limit-requests"))
        if request_limit:
            # Some gateways refuse when one request is left: aim one below the limit.
            self._max_rate = min(self._configured_rate, max(request_limit - 1, 1) / self._window)
            if self._max_rate < 0.9 * self.rate:
                # Far below the guess: what the opening sent counts against the limit just learned.
                self.rate = self._max_rate
                self._restart()
                self._request_due += self._opened / self.rate
            self._opened = 0
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
