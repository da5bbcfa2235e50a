"""How many requests may be in flight at once: found by measuring the server, where it reports no rate limits.

A cloud API that sends x-ratelimit counters is paced by the RateLimiter; its requests in flight are bounded by
max_concurrency alone. A server that sends none (a local llama.cpp, Ollama, vLLM or LM Studio) is bounded by its
compute: requests beyond what it can run wait in its queue, where a client timeout counts that wait, and on a CPU
more requests at once can mean fewer answers a second. So the limit is measured, not guessed.

By Little's law, a server kept at n requests in flight that answers each in L seconds on average gives n / L answers
a second. The limit starts small (the rate limiter's opening share: 4 at 500 requests a minute) and, while answers
come back as fast as the fastest yet, grows by one per answer (TCP's slow start: it doubles every round trip, so a
cloud server reaches max_concurrency within a few round trips). When the middle of the last few answers is much
slower than the fastest, the growth ends: the server queues or shares its compute. From then on the limit climbs one
step at a time, a round of answers at each level: a request more in flight is kept only if it brings at least a
quarter of its ideal share of answers a second (from 1 to 2 in flight, 25% more answers), and one fewer is kept if
it loses less than a quarter of its share; one after which answers still come as fast as the fastest shows room to
spare, and the growth resumes. A request still out longer than a slow answer takes stops the growth before its
answer comes. So on a CPU-bound server it settles where more requests no longer bring more answers, and near the
server's slot count on a GPU. Every so often it tries the next level again, since servers change. A timeout or a
server saying it is busy is overload: the limit halves at once, and measures again from there. Overload passes (an
Ollama busy for minutes answers in milliseconds again): once a round of answers at the halved limit comes back as
fast as the fastest, the server has recovered, and the growth resumes as at first.

No Python library of this kind is well kept (Netflix's concurrency-limits is Java; the PyPI ports are young and
unmaintained), and its rule needs no more than this file.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter, deque
from typing import NamedTuple

from digest.net.pacing import Clock

START = 4  # requests in flight before anything came back, unless the caller says: a local server's usual slots
SLOWER = 1.5  # an answer this much slower than the fastest yet, at full load, ends the growth
ROUND_ANSWERS = 4  # answers at a level, at least, before it is judged (more at higher levels: one per request)
SHARE = 0.25  # of an added request's ideal share of answers a second that it must bring to be kept
HOLD_ROUNDS = 6  # rounds at a settled level before the next level up (or down) is tried again


class Ticket(NamedTuple):
    """One request's place: the limit it was sent under, when, and whether the server had the full limit then."""

    level: int
    sent: float
    full: bool
    number: int = 0


class AdaptiveConcurrency:
    """A limit on requests in flight, adapted to the server's capacity unless the server reports rate limits."""

    def __init__(self, most: int, *, start: int = START, clock: Clock = time.monotonic) -> None:
        self.most = most
        self.limit = min(most, start)
        self.adaptive = True  # until the server shows rate-limit counters: then max_concurrency, fixed
        self._clock = clock
        self._fixed_because = ""
        self._in_flight = 0
        self._flying: dict[int, float] = {}  # requests on the wire: number -> when sent
        self._numbers = itertools.count(1)
        self._freed = asyncio.Event()
        self._growing = True  # slow start: one more per answer as fast as the fastest yet
        self._fastest: float | None = None
        self._recent: deque[float] = deque(maxlen=ROUND_ANSWERS)  # the last full-load latencies while growing
        self._round: list[float] = []  # latencies of full-load answers at the current limit
        self._throughput: dict[int, float] = {}  # answers a second measured at each level
        self._moved = 0  # +1 or -1: the last step, judged after the round at the new level; 0 settled
        self._held = 0  # rounds at the settled level
        self._probe_up = True  # the direction of the next probe from a settled level
        self._recovering = False  # since an overload: a round as fast as the fastest resumes the growth
        self.sent_at: Counter[int] = Counter()  # requests sent under each limit

    async def acquire(self) -> Ticket:
        while self._in_flight >= self.limit:
            await self._freed.wait()
        self._in_flight += 1
        self.sent_at[self.limit] += 1
        return Ticket(self.limit, self._clock(), self._in_flight >= self.limit, next(self._numbers))

    def sending(self, ticket: Ticket) -> Ticket:
        """The ticket as its request leaves: latency counts from here, not from a wait for the rate limiter."""
        sent = ticket._replace(sent=self._clock())
        self._flying[sent.number] = sent.sent
        return sent

    def release(self, ticket: Ticket) -> None:
        self._in_flight -= 1
        self._flying.pop(ticket.number, None)
        self._wake_waiters()

    def fixed(self, why: str = "the server reports its rate limits") -> None:
        """No measuring: max_concurrency bounds what is in flight (a server that reports rate limits is paced by
        the RateLimiter)."""
        if self.adaptive:
            self.adaptive, self.limit, self._fixed_because = False, self.most, why
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._freed.set()
        self._freed = asyncio.Event()

    def answered(self, ticket: Ticket) -> None:
        """A success: its latency is evidence of what the server can run."""
        if not self.adaptive:
            return
        latency = self._clock() - ticket.sent
        if self._fastest is None or latency < self._fastest:
            self._fastest = latency
        if self._growing:
            if ticket.full:
                self._recent.append(latency)
            # One slow answer may be a long paper; the middle of the last few is the server. A request still out
            # longer than a slow answer takes says the server queues before its answer can: no growth then.
            typical = statistics.median(self._recent) if self._recent else latency
            oldest = min(self._flying.values(), default=self._clock())
            if typical <= SLOWER * self._fastest:
                if self._clock() - oldest <= SLOWER * self._fastest:
                    self._set(self.limit + 1)
                return
            if len(self._recent) < ROUND_ANSWERS:
                return  # too few answers at full load to tell
            # Slower: requests wait for the server's compute. What it really runs is about n x fastest / latency.
            # The first round there is measured, then one fewer is tried: fewer in flight is better, if as fast.
            self._growing, self._held, self._probe_up = False, HOLD_ROUNDS - 1, True
            self._set(max(1, min(self.limit - 1, round(self.limit * self._fastest / typical))))
            return
        if not ticket.full or ticket.level != self.limit:
            return  # sent under another limit, or with room to spare: no evidence for this one
        self._round.append(latency)
        if len(self._round) >= max(ROUND_ANSWERS, self.limit):
            self._judge()

    def overloaded(self) -> None:
        """A timeout, or a server saying it is busy: halve at once, and measure again from there."""
        if not self.adaptive:
            return
        self._growing, self._moved, self._held, self._recovering = False, 0, 0, True
        self._throughput.clear()  # measured under other conditions
        self._set(max(1, self.limit // 2))

    def _grow_again(self) -> None:
        """Slow start once more: one more per answer as fast as the fastest, until answers slow down."""
        self._growing, self._recovering = True, False
        self._recent.clear()
        self._set(self.limit + 1)

    def _judge(self) -> None:
        level = self.limit
        latency = sum(self._round) / len(self._round)
        measured = level / latency
        self._throughput[level] = measured
        previous = level - self._moved
        before = self._throughput.get(previous) if self._moved else None
        if before is not None and self._moved > 0:
            # Up from previous: kept if the added requests brought at least SHARE of their ideal share. If answers
            # still come about as fast as the fastest, the server has room to spare: the limit grows as at first.
            if self._fastest is not None and latency <= SLOWER * self._fastest and measured > before:
                self._grow_again()
            elif measured >= before * (1 + SHARE * (level / previous - 1)):
                self._step(+1)
            else:
                self._settle(previous)
        elif before is not None:
            # Down from previous: kept, and further down, if it lost less than SHARE of the ideal loss.
            if measured >= before * (1 - SHARE * (1 - level / previous)):
                self._step(-1)
            else:
                self._settle(previous)
        elif self._recovering and self._fastest is not None and latency <= SLOWER * self._fastest:
            # The server that was overloaded answers as fast as it ever did: it has recovered, and has room again.
            self._grow_again()
        else:
            self._held += 1
            if self._held >= HOLD_ROUNDS:
                self._probe_up = not self._probe_up
                self._step(+1 if self._probe_up else -1)

    def _step(self, direction: int) -> None:
        target = self.limit + direction
        if not 1 <= target <= self.most:
            self._settle(self.limit)
            return
        self._moved, self._held = direction, 0
        self._set(target)

    def _settle(self, level: int) -> None:
        self._moved, self._held = 0, 0
        self._set(level)

    def _set(self, level: int) -> None:
        self._round = []
        level = max(1, min(self.most, level))
        if level != self.limit:
            self.limit = level
            self._wake_waiters()

    def describe(self) -> str | None:
        """What the run settled on, for the summary: the limit most requests were sent under."""
        if not self.sent_at:
            return None
        if not self.adaptive:
            return f"up to {self.most} at once (max_concurrency; {self._fixed_because})"
        usual = self.sent_at.most_common(1)[0][0]
        return f"{usual} at once, found by measuring the server (now {self.limit}; max_concurrency {self.most})"
