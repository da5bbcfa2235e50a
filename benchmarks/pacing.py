"""The rate limiter without x-ratelimit headers, simulated on a fake clock: how often random 429s (noise) slow a
run down, and how well a limit the server does not announce is found, with and without noise on top. Requests
go at the limiter's rate; a 429 comes back at once, a success after the model's latency. Deterministic (seeded),
so that two commits compare on the same draws. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/pacing.py             # 200 seeds a scenario (about a minute)
    .venv/bin/python benchmarks/pacing.py --seeds 50
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.net.pacing import SLOW_DOWN, RateLimiter, Slot

FULL_RATE = 6000 / 60.5  # what RateLimiter(6000, ...) aims at: 99.2 a second


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Run(NamedTuple):
    final_rate: float
    lowest_rate: float
    sent_per_second: float
    refused_share: float


def simulate(seed: int, seconds: float, latency: float, noise: float, limit: float | None) -> Run:
    """`noise`: the share of requests refused whatever the rate; `limit`: a token bucket's rate (and burst)."""
    clock, draws = FakeClock(), random.Random(seed)
    limiter = RateLimiter(6000, 10**9, clock=clock, sleep=clock.sleep)
    bucket = {"tokens": limit or 0.0, "at": 0.0}

    def refused(now: float) -> bool:
        if draws.random() < noise:
            return True
        if limit is None:
            return False
        bucket["tokens"] = min(limit, bucket["tokens"] + (now - bucket["at"]) * limit)
        bucket["at"] = now
        if bucket["tokens"] >= 1:
            bucket["tokens"] -= 1
            return False
        return True

    due: list[tuple[float, Slot]] = []
    sent = refusals = 0
    lowest = limiter.rate
    while clock.now < seconds:
        slot = Slot(clock.now, limiter.rate)
        sent += 1
        if refused(clock.now):
            refusals += 1
            limiter.rate_limited(0.05, {}, slot)
        else:
            due.append((clock.now + latency, slot))
        lowest = min(lowest, limiter.rate)
        clock.now += 1 / limiter.rate
        while due and due[0][0] <= clock.now:
            limiter.succeeded({}, due.pop(0)[1])
    return Run(limiter.rate, lowest, sent / seconds, refusals / sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    seeds = range(parser.parse_args().seeds)
    two_steps, four_steps = SLOW_DOWN**2 * FULL_RATE - 1e-9, SLOW_DOWN**4 * FULL_RATE - 1e-9
    print(f"Noise only (the full rate is {FULL_RATE:.1f}/s): runs ending over two steps down, ever four steps down")
    for seconds, latency in ((5.0, 0.05), (20.0, 0.5)):
        for noise in (0.1, 0.25):
            runs = [simulate(seed, seconds, latency, noise, None) for seed in seeds]
            ended = sum(run.final_rate < two_steps for run in runs)
            fell = sum(run.lowest_rate < four_steps for run in runs)
            sent = statistics.median(run.sent_per_second for run in runs)
            print(
                f"  noise {noise:.2f}, {seconds:.0f} s, latency {latency} s: ended low {ended}/{len(runs)}, "
                f"fell {fell}/{len(runs)}, median {sent:.1f} sent/s"
            )
    print("An unannounced limit (medians over the seeds)")
    for limit in (30.0, 50.0, 80.0):
        for noise in (0.0, 0.1):
            runs = [simulate(seed, 20.0, 0.5, noise, limit) for seed in seeds]
            print(
                f"  limit {limit:.0f}/s, noise {noise:.2f}: final rate "
                f"{statistics.median(run.final_rate for run in runs):.1f}/s, "
                f"sent {statistics.median(run.sent_per_second for run in runs):.1f}/s, "
                f"refused {statistics.median(run.refused_share for run in runs):.0%}"
            )


if __name__ == "__main__":
    main()
