"""How many requests go at once (digest/llm/concurrency.py), found by measuring the server: driven on a fake clock
against servers whose latency grows, or not, with what is in flight."""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from digest.llm.concurrency import AdaptiveConcurrency
from tests.helpers import FakeClock


def _simulate(capacity: AdaptiveConcurrency, clock: FakeClock, latency: Any, answers: int) -> float | None:
    """Drive `capacity` as the classifier does, against a server whose latency depends on what is in flight.
    Returns when the limit first reached max_concurrency, if it did."""
    reached: list[float] = []

    async def main() -> None:
        flying: list[tuple[float, int, Any]] = []
        sent = 0
        for _ in range(answers):
            while capacity._in_flight < capacity.limit:
                ticket = capacity.sending(await capacity.acquire())
                heapq.heappush(flying, (clock.now + latency(capacity._in_flight), sent, ticket))
                sent += 1
            clock.now, _, ticket = heapq.heappop(flying)
            capacity.release(ticket)
            capacity.answered(ticket)
            if capacity.limit == capacity.most and not reached:
                reached.append(clock.now)

    asyncio.run(main())
    return reached[0] if reached else None


def test_with_flat_latency_the_limit_reaches_max_concurrency_within_a_few_round_trips() -> None:
    clock = FakeClock(advance=False)
    capacity = AdaptiveConcurrency(64, clock=clock)
    reached = _simulate(capacity, clock, lambda n: 0.5, 300)
    assert capacity.limit == 64
    assert reached is not None and reached <= 2.0  # 4 -> 8 -> 16 -> 32 -> 64: four round trips of 0.5 s


def test_when_latency_grows_with_what_is_in_flight_the_limit_stays_low() -> None:
    clock = FakeClock(advance=False)
    capacity = AdaptiveConcurrency(16, clock=clock)
    _simulate(capacity, clock, lambda n: 0.1 * n, 300)  # one core: n at once take n times as long each
    assert capacity.limit <= 3
    assert capacity.sent_at.most_common(1)[0][0] <= 2


def test_a_gpu_server_with_uneven_latency_is_filled_to_its_slots_though_growth_stopped_early() -> None:
    clock = FakeClock(advance=False)
    capacity = AdaptiveConcurrency(64, clock=clock)
    calls = iter(range(10**6))

    def latency(n: int) -> float:
        uneven = 1.7 if next(calls) % 7 == 3 else 1.0  # a long paper now and then: slow start may stop early
        return 0.5 * uneven * max(1.0, n / 48)  # 48 slots; beyond them, requests queue

    _simulate(capacity, clock, latency, 2000)
    assert 36 <= capacity.sent_at.most_common(1)[0][0] <= 64


def test_a_timeout_halves_the_limit_and_rate_limit_counters_fix_it_at_max_concurrency() -> None:
    capacity = AdaptiveConcurrency(16, start=8)
    capacity.overloaded()
    assert capacity.limit == 4
    capacity.fixed()
    assert capacity.limit == 16 and not capacity.adaptive
    capacity.overloaded()
    assert capacity.limit == 16  # a cloud API's in-flight count is the rate limiter's business
