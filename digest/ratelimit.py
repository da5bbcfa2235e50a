"""Client-side pacing under a requests- and tokens-per-minute limit, shared by every request of a run."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
SLOW_DOWN = 0.75  # factor applied to the request rate on each 429
SPEED_UP = 1.02  # factor applied on each success, back up to the configured rate


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


class RateLimiter:
    """Spaces requests evenly so that no 60-second window holds more than the configured requests or tokens.

    Slots are reserved in call order without awaiting in between, so concurrent callers never share one. A 429
    pauses everybody (not just the task that met it) and lowers the rate; successes raise it back gradually.
    """

    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._max_rate = requests_per_minute / 60.0
        self.rate = self._max_rate  # requests per second now in force
        self._tokens_per_second = tokens_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._next_request = 0.0
        self._next_tokens = 0.0
        self._paused_until = 0.0

    async def acquire(self, tokens: int) -> None:
        now = self._clock()
        start = max(now, self._next_request, self._next_tokens, self._paused_until)
        self._next_request = start + 1.0 / self.rate
        self._next_tokens = start + tokens / self._tokens_per_second
        if start > now:
            await self._sleep(start - now)

    def rate_limited(self, retry_after: float) -> None:
        """A 429: everybody waits, and the run continues at a lower rate."""
        self._paused_until = max(self._paused_until, self._clock() + retry_after)
        self.rate = max(self.rate * SLOW_DOWN, self._max_rate / 100)

    def succeeded(self, headers: Mapping[str, str]) -> None:
        self.rate = min(self.rate * SPEED_UP, self._max_rate)
        # The server's own count is the truth; when it says the window is spent, wait for its reset.
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if remaining is not None and remaining.strip() == "0" and reset is not None:
                self._paused_until = max(self._paused_until, self._clock() + reset)
