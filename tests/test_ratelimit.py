"""The rate limiter (digest/net/pacing.py) on a fake clock: requests spaced under the configured and the announced
limits, a pause for everybody on a 429, the limit learned from the 429s when no header tells it, and the waits a
server asks for, in each way servers say them."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

import pytest

from digest.net.pacing import RECOVERY_PER_SECOND, SLOW_DOWN, RateLimiter, Slot
from digest.net.rate_headers import parse_duration, retry_after
from tests.helpers import FakeClock


def test_no_sixty_second_window_holds_more_than_the_limit():
    clock = FakeClock()
    limiter = RateLimiter(600, 10**9, opening_seconds=0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def main() -> None:
        while clock.now < 180:
            await limiter.acquire(100)
            sent.append(clock.now)

    asyncio.run(main())
    assert sum(1 for t in sent if t < 1.0) > 1  # a burst at the start
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i : i + 700] if t - start < 60.0) <= 600


def test_the_rate_limiter_spaces_requests_and_pauses_everybody_on_a_429():
    clock = FakeClock(advance=False)  # time stands still: every wait is measured from the same instant
    slept = clock.slept
    limiter = RateLimiter(60, 1_000_000, burst_seconds=0, opening_seconds=0, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        for _ in range(3):
            await limiter.acquire(10)
        limiter.rate_limited(5.0, {"x-ratelimit-remaining-requests": "0"}, Slot(0.0, 100.0))
        await limiter.acquire(10)

    asyncio.run(main())
    assert slept[:2] == [1.0, 2.0]  # one a second, reserved in order without sleeping in between
    assert slept[2] == 5.0  # after the 429: wait for the pause
    assert limiter.rate < 1.0  # and go on more slowly


def test_the_rate_limiter_learns_the_servers_limits_and_ignores_transient_429s():
    clock = FakeClock(advance=False)
    slept = clock.slept
    limiter = RateLimiter(12_000, 1_000_000, burst_seconds=0, opening_seconds=0, clock=clock, sleep=clock.sleep)
    limiter.observe({"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "5000"})
    announced = 5999 / 60  # never aim above what the server announces (one below: some gateways refuse at 1)
    assert limiter.rate == pytest.approx(announced)
    limiter.rate_limited(
        1.0, {"x-ratelimit-remaining-requests": "12", "x-ratelimit-remaining-tokens": "9000"}, Slot(0.0, 100.0)
    )
    assert limiter.rate == pytest.approx(announced)  # the server still has room: transient, nobody slows down
    limiter.rate_limited(1.0, {"x-ratelimit-remaining-requests": "12"}, Slot(0.0, 100.0))
    assert limiter.rate == pytest.approx(announced)  # no token counters is not "no tokens left"
    limiter.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})

    async def main() -> None:
        await limiter.acquire(1)

    asyncio.run(main())
    assert slept == [2.0]  # the server said its window is spent: wait for its reset


def test_one_overshoot_is_one_slow_down_and_the_rate_recovers_without_429s():
    clock = FakeClock(advance=False)
    limiter = RateLimiter(6000, 10**9, burst_seconds=0, opening_seconds=0, clock=clock, sleep=clock.sleep)
    spent = {"x-ratelimit-remaining-requests": "0"}
    full = limiter.rate
    clock.now = 10.0
    limiter.rate_limited(0.01, spent, Slot(9.9, 100.0))
    assert limiter.rate == pytest.approx(full * SLOW_DOWN)
    clock.now = 10.02
    limiter.rate_limited(0.01, spent, Slot(9.95, 100.0))  # sent before the slow-down: an echo of the same overshoot
    assert limiter.rate == pytest.approx(full * SLOW_DOWN)
    clock.now = 10.2
    limiter.rate_limited(0.01, spent, Slot(10.1, 100.0))  # sent at the lower rate, and still too fast
    assert limiter.rate == pytest.approx(full * SLOW_DOWN**2)
    clock.now = 11.21  # a second after the pause ended
    limiter.succeeded({})
    assert limiter.rate == pytest.approx(full * SLOW_DOWN**2 * RECOVERY_PER_SECOND)
    clock.now = 100.0
    limiter.succeeded({})
    assert limiter.rate == full  # back up, and never above the configured rate


def test_reset_durations_are_parsed():
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("2") == 2.0
    assert parse_duration("soon") is None


def _simulate(limiter: RateLimiter, clock: FakeClock, refused: Callable[[float], bool], seconds: float) -> None:
    """Requests at the limiter's rate for `seconds`; `refused(now)` says which get a 429 (answered at once, with no
    headers); the others succeed after 0.5 s, as a model answers."""
    due: list[tuple[float, Slot]] = []
    while clock.now < seconds:
        slot = Slot(clock.now, limiter.rate)
        if refused(clock.now):
            limiter.rate_limited(0.05, {}, slot)
        else:
            due.append((clock.now + 0.5, slot))
        clock.now += 1 / limiter.rate
        while due and due[0][0] <= clock.now:
            limiter.succeeded({}, due.pop(0)[1])


def test_without_headers_noise_is_learned_and_the_slow_downs_undone():
    clock, draws = FakeClock(), random.Random(11)
    limiter = RateLimiter(6000, 10**9, clock=clock, sleep=clock.sleep)
    _simulate(limiter, clock, lambda now: draws.random() < 0.2, seconds=20)
    assert limiter.noise == pytest.approx(0.2, abs=0.1)  # the share stayed when the rate went down: noise
    assert limiter.rate == pytest.approx(6000 / 60.5)  # so the run goes at the full rate


def _token_bucket(per_second: float) -> Callable[[float], bool]:
    """A server's limit of `per_second` requests, a second's worth at once: whether a request at `now` is refused."""
    bucket = {"tokens": per_second, "at": 0.0}

    def refused(now: float) -> bool:
        bucket["tokens"] = min(per_second, bucket["tokens"] + (now - bucket["at"]) * per_second)
        bucket["at"] = now
        if bucket["tokens"] >= 1:
            bucket["tokens"] -= 1
            return False
        return True

    return refused


def test_without_headers_a_limit_is_told_from_noise_and_respected():
    clock = FakeClock()
    limiter = RateLimiter(6000, 10**9, clock=clock, sleep=clock.sleep)
    refused = _token_bucket(50)  # the server allows 50 a second, and says nothing of it

    _simulate(limiter, clock, refused, seconds=20)
    assert limiter.noise is None  # slowing down lowered the share of 429s: the limit's
    assert 30 < limiter.rate < 60  # about the limit, not back at the configured 99 a second


def _simulate_unpaced(
    limiter: RateLimiter, clock: FakeClock, refused: Callable[[float], bool], seconds: float, latency: float = 0.5
) -> list[tuple[float, bool]]:
    """As _simulate, through acquire, for a limiter with no limit known: the client then sends as fast as its
    in-flight limit and the model's latency allow, 60 a second. Returns when each request went, and if refused."""
    due: list[tuple[float, Slot]] = []
    sent: list[tuple[float, bool]] = []

    async def main() -> None:
        last = -1.0
        while clock.now < seconds:
            clock.now = max(clock.now, last + 1 / 60)
            slot = await limiter.acquire(100)
            last = clock.now
            sent.append((clock.now, refused(clock.now)))
            if sent[-1][1]:
                limiter.rate_limited(0.05, {}, slot)
            else:
                due.append((clock.now + latency, slot))
            while due and due[0][0] <= clock.now:
                limiter.succeeded({}, due.pop(0)[1])

    asyncio.run(main())
    return sent


@pytest.mark.parametrize("latency", [0.5, 0.05])
def test_with_no_limit_known_random_429s_are_learned_as_noise_and_nothing_is_paced(latency: float):
    """With a fast model, the first step comes within the first second, while the rate sent still climbs: it
    used to be judged against that climb, and stood for the rest of the run."""
    clock, draws = FakeClock(), random.Random(11)
    limiter = RateLimiter(None, None, clock=clock, sleep=clock.sleep)
    _simulate_unpaced(limiter, clock, lambda now: draws.random() < 0.2, seconds=20, latency=latency)
    assert limiter.noise == pytest.approx(0.2, abs=0.1)
    assert limiter.rate == math.inf  # the steps taken to tell noise from a limit are undone


def test_with_no_limit_known_an_unannounced_limit_is_learned_from_the_429s():
    clock = FakeClock()
    limiter = RateLimiter(None, None, clock=clock, sleep=clock.sleep)
    refused = _token_bucket(30)  # the server allows 30 a second, and says nothing of it

    sent = _simulate_unpaced(limiter, clock, refused, seconds=20)
    assert limiter.noise is None  # slowing down lowered the share of 429s: the limit's
    late = [was_refused for at, was_refused in sent if at >= 10]
    assert len(late) < 36 * 10 and sum(late) < 0.2 * len(late)  # about the limit, not the 60 a second it could


def test_a_gateways_own_retry_header_and_counter_resets_are_waits_the_server_asked_for():
    assert retry_after({"llm_provider-retry-after": "60"}) == 60.0
    assert retry_after({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}) == 360.0
    assert retry_after({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "6m0s"}) is None
    assert retry_after({"retry-after": "2", "llm_provider-retry-after": "60"}) == 2.0
