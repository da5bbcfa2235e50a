"""Client-side pacing: a rate limiter shared by every request of a run, and how long to wait before a retry."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

from digest.net.rate_headers import header_number, parse_duration

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

SLOW_DOWN = 0.75  # factor applied to the request rate when the evidence says it is over the server's limit
RECOVERY_PER_SECOND = 1.1  # without 429s the rate grows by this factor a second, back up to the limit
REPACE_AT = 1.25  # when the rate has grown by this factor, slots booked at the old rate are booked again
BURST_SECONDS = 0.5  # how many seconds' worth of requests may go at once
OPENING_SECONDS = 0.5  # before the first answer, at most this many seconds' worth of requests (at least one)
# Without x-ratelimit counters, a 429 may mean "over the limit" or be noise (an overloaded provider refuses some
# requests whatever their rate). Slowing down tells them apart: it lowers the share of 429s over the limit, and
# leaves noise's where it was.
LEVEL_EVIDENCE = 8  # answers at a rate before a 429 may lower it: each step down is taken on evidence
BAND_EVIDENCE = 20  # answers before a step and after it before the limiter judges which kind the 429s are
SLOW_BAND = 0.8  # a step is judged once requests really go at most this share of the rate before it (one step)
LEAST_NOISE = 0.05  # a share of rate-independent 429s below this is not worth learning: every 429 slows down
MOST_NOISE = 0.5  # 429s refusing more than half at the slower rate are taken for the limit's, whatever the rest says
VERDICT_ODDS = 99  # how much likelier one kind must be than the other for a verdict
MOST_ANSWERS = 100  # answers since a step after which the likelier kind is the verdict, however close
RECENT_ANSWERS = 100  # the window in which the share of 429s is compared with the noise learned
SLOWEST = 1 / 60  # requests a second: the floor of the slow-downs when no limit is known (else 1% of the limit)


def backoff(failures: int, *, first: float, longest: float) -> float:
    """Exponential back-off with jitter after `failures` consecutive failures that named no wait: about `first`
    seconds after the first, doubling each time up to `longest`, each drawn from the upper half so that clients
    failing together do not retry together."""
    return float(min(first * 2 ** (failures - 1), longest) * random.uniform(0.5, 1.0))


class Slot(NamedTuple):
    """When a request was let go, at what rate, and whether in the opening share (before anything came back)."""

    at: float
    rate: float
    opening: bool = False


class RateLimiter:
    """Paces requests so that no 60-second window holds more than the configured requests or tokens.

    Servers enforce per-minute limits in one-second quanta (6,000 RPM as 100 a second), so a burst of up to one
    second's worth passes; half of that may go at once (the other half is margin for requests the network bunches
    up) and the rest is spaced evenly (a generic cell rate algorithm); the sustained rate leaves room for that
    burst within every minute. Slots are reserved without awaiting in between, so concurrent callers never share
    one; whenever the terms change (a pause, a slower or a recovered rate), waiting callers wake and book again.

    The first second is a guess: until the first answer shows the server's limits, only an opening share goes.
    Each 429 is read for what its headers say: a counter with room (and the other with room or not reported)
    means the 429 is transient, and only its request waits; a spent counter pauses everybody and slows down, unless
    the request was sent before the last slow-down (its 429 is an echo of the same overshoot).
    Without counters, the 429s themselves are the evidence: RateEvidence weighs them.
    Successes raise the rate again gradually, never above the configured rate nor the limit the server announces;
    slots booked at a rate that has since recovered are booked again. A step down is taken from the rate requests
    were really sent at, where the pacing's is above it: a step from there would slow nothing.

    With no limit known (None: a server that charges nothing, told none), nothing is paced and nothing held back
    before the first answer, until the server's headers announce a limit or its 429s show one: they are read as
    for any server, from the rate really sent.
    """

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        *,
        burst_seconds: float = BURST_SECONDS,
        opening_seconds: float = OPENING_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._burst = burst_seconds
        window = 60.0 + burst_seconds  # a minute's slots plus one burst fit in one minute's limit
        self._configured_rate = self._max_rate = _per_second(requests_per_minute, window)
        self.rate = self._max_rate  # requests per second now in force
        self._configured_tokens_per_second = self._tokens_per_second = _per_second(tokens_per_minute, window)
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
        unpaced = opening_seconds <= 0 or math.isinf(self._max_rate)
        self._opening = None if unpaced else max(1, int(self._max_rate * opening_seconds))
        self.opening_share = self._opening  # what may go before the first answer: 4 at 500 requests a minute
        self._opened = 0  # requests sent before anything came back
        self._sent: deque[float] = deque()  # the slots of the last second
        self._first_sent = clock()
        self._evidence = RateEvidence(clock)

    @property
    def noise(self) -> float | None:
        """The share of 429s that does not depend on the rate, once learned."""
        return self._evidence.noise

    async def acquire(self, tokens: int) -> Slot:
        """Wait for a slot for one request of about `tokens` tokens."""
        while self._opening == 0:  # the opening share has gone and nothing has come back yet
            await self._terms_changed.wait()
        opening = self._opening is not None
        if self._opening is not None:
            self._opening -= 1
            self._opened += 1
        while True:
            epoch, now = self._epoch, self._clock()
            start = max(now, self._paused_until, self._request_due - self._burst, self._tokens_due - self._burst)
            self._request_due = max(self._request_due, start) + 1.0 / self.rate
            self._tokens_due = max(self._tokens_due, start) + tokens / self._tokens_per_second
            if start <= now:
                return self._slot(now, opening)
            await self._nap(start - now)
            if epoch == self._epoch:
                return self._slot(start, opening)
            # The terms changed while we waited: our slot was booked on old ones.

    def _slot(self, at: float, opening: bool) -> Slot:
        """The slot, with the rate requests are really sent at: the pacing's, or less when the callers ask more
        slowly (max_concurrency, the server's latency). In the first second fewer than a second's worth have gone:
        the pacing's rate is the better guess, if there is one; unpaced, those that went are all there is (and a
        server that refuses them within its first second has let a second's worth of its limit through)."""
        self._sent.append(at)
        while self._sent[0] < at - 1.0:
            self._sent.popleft()
        first_second = at - self._first_sent < 1.0
        sending = self.rate if first_second and math.isfinite(self.rate) else min(self.rate, float(len(self._sent)))
        return Slot(at, sending, opening)

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

    def succeeded(self, headers: Mapping[str, str], slot: Slot | None = None) -> None:
        self._answered()
        now = self._clock()
        self.observe(headers)
        if slot is not None and header_number(headers.get("x-ratelimit-remaining-requests")) is None:
            self._weigh(slot, limited=False)
        if self.rate < self._max_rate and not self._evidence.judging:  # steps being judged hold until the verdict
            growth = RECOVERY_PER_SECOND ** min(now - self._rate_changed_at, 10.0)
            self.rate = min(self.rate * growth, self._max_rate)
            self._rate_changed_at = now
            if self.rate >= self._paced_rate * REPACE_AT:
                self._restart()  # slots booked at the slow rate would keep it slow for as long as they reach

    def rate_limited(self, retry_after: float, headers: Mapping[str, str], slot: Slot) -> None:
        """A 429 for the request sent in `slot`; `retry_after` is the wait the server asked for."""
        self._answered()
        self.observe(headers)
        requests_left = header_number(headers.get("x-ratelimit-remaining-requests"))
        tokens_left = header_number(headers.get("x-ratelimit-remaining-tokens"))
        # Only a requests counter explains a 429: with a tokens counter alone, and room in it, the 429 comes from a
        # limit nobody reports (Groq's requests per minute), and is weighed as if there were no counters.
        counted = requests_left is not None
        if counted and requests_left != 0 and tokens_left != 0:
            return  # a counter with room, the other unknown or with room too: transient; only this request waits
        if not counted:
            self._weigh(slot, limited=True)
            if not self._evidence.beyond_noise():
                return  # no more 429s than the noise learned: transient
        # Requests sent before the last slow-down met the overshoot it answered: their 429s are its echoes.
        step_down = slot.at >= self._evidence.slowed_at and (counted or self._evidence.may_step_down(self.rate))
        if not (counted or step_down):
            return  # without counters, only the 429 taken for an overshoot says everybody should wait
        now = self._clock()
        self._paused_until = max(self._paused_until, now + retry_after)
        if step_down:
            unpaced = math.isinf(self.rate)
            floor = self._max_rate / 100 if math.isfinite(self._max_rate) else SLOWEST
            self.rate = max(min(self.rate, slot.rate) * SLOW_DOWN, floor)
            self._rate_changed_at = max(now, self._paused_until)
            self._evidence.stepped_down(self._rate_changed_at, slot.rate, counted=counted, unpaced=unpaced)
        self._restart()

    def _weigh(self, slot: Slot, *, limited: bool) -> None:
        if self._evidence.weigh(slot, limited=limited):
            # Noise: slowing down bought nothing. Back to the full rate.
            self.rate = self._max_rate
            self._rate_changed_at = self._clock()
            self._restart()

    def observe(self, headers: Mapping[str, str]) -> None:
        """The server's own limits and counters are the truth: never aim above the limit it announces, and when
        it says a window is spent, everybody waits for the reset it names."""
        request_limit = header_number(headers.get("x-ratelimit-limit-requests"))
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
        token_limit = header_number(headers.get("x-ratelimit-limit-tokens"))
        if token_limit:
            self._tokens_per_second = min(self._configured_tokens_per_second, token_limit / self._window)
        for kind in ("requests", "tokens"):
            remaining = header_number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if remaining == 0 and reset is not None and self._clock() + reset > self._paused_until:
                self._paused_until = self._clock() + reset
                self._restart()


class _Answer(NamedTuple):
    """An answer without counters: when its request was let go, at what rate, and whether it was a 429."""

    at: float
    rate: float
    limited: bool


class RateEvidence:
    """What a server's 429s depend on, when it reports no counters: its limit, or noise (an overloaded provider
    refuses some requests whatever their rate).

    Without counters, the 429s themselves are the evidence, weighed by the rate their requests were really sent at
    (the pacing's, or less when max_concurrency and the server's latency allow no more). A slow-down is a step
    taken on evidence: the first of a chain once BAND_EVIDENCE answers came at the rate before it, each further one
    once LEVEL_EVIDENCE came at the rate it lowers. When the rate really sent has come down by a step, the share of
    429s since the step is compared with the share before the chain (only answers whose neighbours' answers are all
    in: 429s come at once, successes after the model's latency): over a limit L, a rate r loses about 1 - L/r of
    its requests, so slowing down lowers the share; noise keeps it. Until the verdict the rate neither recovers nor
    falls further. Over the limit, the steps stand and the next 429s step down again; noise undoes them, and from
    then on 429s up to about that share are transient; beyond it, they step down again and are weighed again.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tally: deque[_Answer] = deque(maxlen=4 * RECENT_ANSWERS)
        self._latency: float | None = None  # of successes, from slot to answer (429s come at once)
        self.slowed_at = -math.inf  # the slot time from which requests were sent at the lowered rate
        self._level_answers = 0  # answers to requests sent since the last slow-down
        self.judging = False  # slow-downs since the last verdict: judged once they reach far
        self._chain_top = 0.0  # the rate requests were sent at before the first of them
        self._chain_started = 0.0  # and when it was taken
        # Answers before a chain's first step: enough to judge by; fewer when those kept from before will do.
        self._first_step_evidence = BAND_EVIDENCE
        self.noise: float | None = None  # the share of 429s that does not depend on the rate, once learned

    def stepped_down(self, at: float, sent_at_rate: float, *, counted: bool, unpaced: bool) -> None:
        """The limiter slowed down from `at` on, after a 429 to a request sent at `sent_at_rate`; `counted`: one the
        server's counters explained; `unpaced`: it had been sending unpaced until now."""
        if not (counted or self.judging) and unpaced:
            # Unpaced, the rates noted so far climbed with the first second and the in-flight limit: the rate the
            # first step is taken from is the one to weigh the answers before it at.
            self._tally = deque((a._replace(rate=sent_at_rate) for a in self._tally), self._tally.maxlen)
        self.slowed_at = at
        if not (counted or self.judging):
            self.judging, self._chain_top, self._chain_started = True, sent_at_rate, at
        self._level_answers = 0

    def may_step_down(self, rate: float) -> bool:
        """Without counters: whether the evidence allows one more step down. The first step of a chain waits for
        enough answers at the rate before it to judge by; each further one for answers at the rate it lowers; and
        once a step has taken the rate into the slow band, the next waits for the verdict on the 429s (or, if it
        cannot come, for plenty of answers at the slow rate)."""
        if self._level_answers < (LEVEL_EVIDENCE if self.judging else self._first_step_evidence):
            return False
        if not self.judging or rate > SLOW_BAND * self._chain_top:
            return True
        return sum(1 for at, _, _ in self._settled() if at >= self.slowed_at) >= MOST_ANSWERS

    def weigh(self, slot: Slot, *, limited: bool) -> bool:
        """An answer without counters, as evidence of what the 429s depend on (not one of the opening share: the
        server's burst allowance lets that through, whatever its limit). True when it brings the verdict that the
        429s are noise: the steps down are undone."""
        if slot.opening:
            return False
        now = self._clock()
        if not limited:
            latency = now - slot.at
            self._latency = latency if self._latency is None else 0.8 * self._latency + 0.2 * latency
        if slot.at >= self.slowed_at:
            self._level_answers += 1
        self._tally.append(_Answer(slot.at, slot.rate, limited))
        return self.judging and self._judge()

    def _settled(self) -> list[_Answer]:
        """The answers to requests sent long enough ago for all their neighbours' answers to be in: 429s come at
        once and successes after the model's latency, so the newest answers are mostly 429s."""
        if self._latency is None:
            return []
        cutoff = self._clock() - 1.5 * self._latency
        return [answer for answer in self._tally if answer.at <= cutoff]

    def _judge(self) -> bool:
        """Over the limit or noise? Weigh the 429s since the last step against both: a sequential probability
        ratio test, decided once one kind is VERDICT_ODDS times likelier (or, after MOST_ANSWERS, whichever is). True
        on the verdict of noise."""
        settled = self._settled()
        fast = [(rate, limited) for at, rate, limited in settled if at < self._chain_started]
        slow = [(rate, limited) for at, rate, limited in settled if at >= self.slowed_at]
        if len(slow) < BAND_EVIDENCE or len(fast) < BAND_EVIDENCE:
            return False
        fast_rate = sum(rate for rate, _ in fast) / len(fast)
        slow_rate = sum(rate for rate, _ in slow) / len(slow)
        if slow_rate > SLOW_BAND * fast_rate:
            return False  # the steps have not lowered the rate requests are really sent at: nothing to compare yet
        fast_share = sum(limited for _, limited in fast) / len(fast)
        slow_share = sum(limited for _, limited in slow) / len(slow)
        if slow_share > 1.5 * fast_share + LEAST_NOISE:
            # More 429s at the slower rate: neither kind. The fast rate's answers were not representative (a
            # server's burst allowance lets the first ones through): the slow rate is the one to compare with next.
            self._keep_level()
            self.judging, self._first_step_evidence = False, LEVEL_EVIDENCE
            return False
        # Noise keeps the share; over a limit L a rate r loses about 1 - L/r, so the slower rate would lose this.
        noise = min(max(fast_share, 0.02), 0.98)
        over_limit = min(max(1 - (1 - fast_share) * fast_rate / slow_rate, 0.02), 0.98)
        if noise - over_limit < LEAST_NOISE:
            odds = -math.inf  # both say about the same: too few 429s to be worth telling apart, the steps stand
        else:
            refused = sum(limited for _, limited in slow)
            odds = refused * math.log(noise / over_limit) + (len(slow) - refused) * math.log(
                (1 - noise) / (1 - over_limit)
            )
        if abs(odds) < math.log(VERDICT_ODDS) and len(slow) < MOST_ANSWERS:
            return False
        self.judging = False
        share = (sum(limited for _, limited in fast + slow)) / (len(fast) + len(slow))
        if odds < 0 or slow_share > MOST_NOISE or share < LEAST_NOISE:
            # Over the limit: the steps were right. The answers at this rate are what the next step is weighed
            # against; without them, the next chain could never be judged, and would step down once every
            # MOST_ANSWERS however little its 429s depended on the rate.
            self._keep_level()
            self.noise, self._first_step_evidence = None, BAND_EVIDENCE
            return False
        self._tally.clear()
        # Noise: slowing down bought nothing. Back to the full rate; 429s up to about this share are transient.
        self.noise, self._first_step_evidence = share, BAND_EVIDENCE
        return True

    def _keep_level(self) -> None:
        """Forget the answers from before the last step: those since are the next chain's rate before it."""
        kept = [answer for answer in self._tally if answer.at >= self.slowed_at]
        self._tally.clear()
        self._tally.extend(kept)

    def beyond_noise(self) -> bool:
        """Whether the recent share of 429s is more than the noise learned (always, if none was)."""
        if self.noise is None:
            return True
        recent = self._settled()[-RECENT_ANSWERS:]
        if len(recent) < BAND_EVIDENCE:
            return False
        return sum(limited for _, _, limited in recent) / len(recent) > 1.5 * self.noise


def _per_second(per_minute: int | None, window: float) -> float:
    return math.inf if per_minute is None else per_minute / window
