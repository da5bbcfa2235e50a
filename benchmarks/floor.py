"""How fast any client could classify against the server of benchmarks/classify.py: a simulation, no network.

The server admits 100 requests a second from a bucket of 100 and counts every request it answers (OpenAI:
"unsuccessful requests contribute to your per-minute limit"); it answers 20% at random with 429 at once and 5%
with 500 after its 500 ms latency. Two clients with 64 places, retries ahead of fresh papers, waiting the
429's retry-after (50 ms) and digest's back-off after a 500, differ only in how they pace:

- oracle: knows the server's bucket exactly and sends the moment it holds a request; no client can pace better.
- digest: the GCRA of digest.net.pacing at 6,000 RPM, which cannot see the server's bucket.

It prints time / bound over many seeded runs, so that a measured figure can be read against what is possible.

    .venv/bin/python benchmarks/floor.py
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.llm.live import FIRST_BACKOFF_SECONDS, LONGEST_BACKOFF_SECONDS
from digest.net.pacing import BURST_SECONDS, backoff

PAPERS, PLACES, LATENCY, PER_SECOND, RETRY_AFTER = 1000, 64, 0.5, 100.0, 0.05
BOUND = max(PAPERS / PER_SECOND, PAPERS * LATENCY / PLACES)
RUNS = 300


def simulate(seed: int, *, oracle: bool, first_backoff: float = FIRST_BACKOFF_SECONDS) -> float:
    """Seconds from the first request to the last answer."""
    random.seed(seed)  # backoff() draws from the module's generator
    order = itertools.count()
    ready = [(1, next(order), paper) for paper in range(PAPERS)]  # (priority, order, paper): retries first
    events: list[tuple[float, int, str, int]] = []  # (time, order, what, paper)
    server_failures = dict.fromkeys(range(PAPERS), 0)
    bucket, bucket_at, now, free, answered, last_answer = PER_SECOND, 0.0, 0.0, PLACES, 0, 0.0
    client_rate, client_due = 6000 / (60 + BURST_SECONDS), 0.0
    while answered < PAPERS:
        while free and ready:
            tokens = min(PER_SECOND, bucket + (now - bucket_at) * PER_SECOND)
            if (tokens < 1 - 1e-9) if oracle else (client_due - BURST_SECONDS > now + 1e-9):
                break
            paper = heapq.heappop(ready)[2]
            free -= 1
            client_due = max(client_due, now) + 1 / client_rate
            bucket, bucket_at = tokens, now
            if bucket < 1 - 1e-9:
                outcome, delay = "over", 0.001
            else:
                bucket -= 1
                draw = random.random()
                outcome, delay = ("429", 0.001) if draw < 0.2 else ("500", LATENCY) if draw < 0.25 else ("ok", LATENCY)
            heapq.heappush(events, (now + delay, next(order), outcome, paper))
        next_times = [events[0][0]] if events else []
        if free and ready:
            tokens = min(PER_SECOND, bucket + (now - bucket_at) * PER_SECOND)
            next_times.append(now + max(1e-6, (1 - tokens) / PER_SECOND) if oracle else client_due - BURST_SECONDS)
        now = max(now, min(next_times))
        while events and events[0][0] <= now + 1e-12:
            at, _, outcome, paper = heapq.heappop(events)
            if outcome == "due":
                heapq.heappush(ready, (0, next(order), paper))
                continue
            free += 1
            if outcome == "ok":
                answered, last_answer = answered + 1, at
                continue
            if outcome == "500":
                server_failures[paper] += 1
                wait = backoff(server_failures[paper], first=first_backoff, longest=LONGEST_BACKOFF_SECONDS)
            else:
                wait = RETRY_AFTER
            heapq.heappush(events, (at + wait, next(order), "due", paper))
    return last_answer


def main() -> None:
    print(f"{PAPERS} papers, bound {BOUND:.1f} s, {RUNS} simulated runs each: time / bound")
    for name, oracle in (("oracle pacing", True), ("digest's pacing", False)):
        for first in (FIRST_BACKOFF_SECONDS, 0.0):
            ratios = sorted(simulate(seed, oracle=oracle, first_backoff=first) / BOUND for seed in range(RUNS))
            print(
                f"{name:<16} first back-off {first:4.2f} s: median {statistics.median(ratios):.3f}  "
                f"p90 {ratios[int(0.9 * RUNS)]:.3f}  max {ratios[-1]:.3f}  "
                f"runs over 1.4: {sum(r > 1.4 for r in ratios) / RUNS:4.0%}",
                flush=True,
            )


if __name__ == "__main__":
    main()
