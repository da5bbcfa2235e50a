"""Ask the LLM, for every (profile, paper) pair, whether the paper matches the profile's interests.

A pool of `max_concurrency` workers pulls pairs from a queue (one task per paper, created up front, would hold a
thousand abstracts and coroutines at once, and bound nothing). A worker waits for its slot from the shared
RateLimiter, sends one request and waits for its answer: so no more requests are ever in flight, and the pacing
the server sees is the pacing the limiter planned. A failed attempt goes back into the queue after its wait, ahead
of fresh pairs, while the worker moves on.
Rate limits, server errors, timeouts and invalid answers are retried with backoff; a refused key or an exhausted
quota stops the whole run at once. Every pair ends as a Verdict or a Failure."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Callable, Sequence

import openai

from digest.config import LLMConfig
from digest.errors import LLMError
from digest.llm.answers import InvalidAnswer, Outcome, answer_of, outcome_of
from digest.llm.concurrency import START, AdaptiveConcurrency, Ticket
from digest.llm.facts import ServerFacts
from digest.llm.prices import charges_nothing
from digest.llm.prompt import COMPLETION_TOKENS_ESTIMATE, estimate_tokens, paper_message
from digest.llm.requests import (
    REFUSED_PARAMETER,
    ChatRequest,
    Job,
    adjusted_for,
    error_message,
    key_refused,
    openai_client,
    request_body,
)
from digest.llm.stall import StallWatch
from digest.models import Failure, Usage
from digest.net.pacing import RateLimiter, Sleep, Slot, backoff
from digest.net.rate_headers import minute_counters, reports_counters, retry_after
from digest.stopping import Stopped, unless_stopped

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.1  # the shared limiter bounds the request rate, so a quick retry cannot storm the server
LONGEST_BACKOFF_SECONDS = 30.0
FIRST_UNNAMED_WAIT_SECONDS = 1.0  # after a 429 that names no wait
LONGEST_WAIT_SECONDS = 120.0  # a server that asks for longer is asked again after this
MAX_ANSWER_BYTES = 1_000_000  # an answer is a few kB; a server sending more is broken or hostile
# A 400 that names these is about the setup (model, key, route), not about one paper.
SETUP_ERROR = re.compile(r"model|api[ _-]?key|\bkey\b|route|deployment|no connected db|authenticat", re.IGNORECASE)
# Queue priorities: a retry goes before every fresh paper, so that retries do not pile up at the end of a run.
RETRY, FRESH, FINISHED = 0, 1, 2


OnOutcome = Callable[[Job, Outcome], None]
OnUsage = Callable[[Usage], None]


class _Pending:
    """A job on its way, and what its attempts so far came to."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.tokens = estimate_tokens(job.instructions, paper_message(job.paper)) + COMPLETION_TOKENS_ESTIMATE
        self.attempts = 0
        self.slot = Slot(0.0, 0.0)  # the rate limiter's slot of the latest attempt
        self.ticket = Ticket(0, 0.0, False)  # its place among the requests in flight
        self.failures_without_wait = 0  # bounded by max_attempts
        self.rate_limited = 0  # not bounded: a wait the server asked for is not a failed attempt
        self.problem = "no attempt was made"


class _Retry(Exception):
    """An attempt that gave no outcome. `rate_limited`: the server asked for a wait (a 429, a busy 503), which is not
    a failed attempt; `adjusted`: the request is asked again at once in a form the server takes."""

    def __init__(
        self, problem: str, delay: float | None = None, *, rate_limited: bool = False, adjusted: bool = False
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.delay = delay
        self.rate_limited = rate_limited
        self.adjusted = adjusted


def _rate_limits(config: LLMConfig) -> tuple[int | None, int | None]:
    """The requests and tokens a minute to pace at; None: no limit known. A rate the reader set is honoured
    whatever the price: a free server may stand behind a gateway or share a lab's GPU. Unset, the defaults are a
    paid account's first tier, which a server that charges nothing does not have: its 429s teach its limit, as
    any server's do, and its compute bounds it (the in-flight limit, measured)."""
    free = charges_nothing(config)
    return (
        None if free and "requests_per_minute" not in config.model_fields_set else config.requests_per_minute,
        None if free and "tokens_per_minute" not in config.model_fields_set else config.tokens_per_minute,
    )


class Classifier:
    def __init__(
        self,
        config: LLMConfig,
        *,
        client: openai.AsyncOpenAI | None = None,
        limiter: RateLimiter | None = None,
        facts: ServerFacts | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._config = config
        self.facts = facts or ServerFacts()  # what the server takes, as learned: updated as this run learns more
        self._limiter = limiter or RateLimiter(*_rate_limits(config), sleep=sleep)
        # Before the first answer shows whether the server reports rate limits, as many go as the limiter's
        # opening share (4 at the default 500 requests a minute); with no rate to take a share of, a local
        # server's usual slot count.
        self.capacity = AdaptiveConcurrency(config.max_concurrency, start=self._limiter.opening_share or START)
        self._client = client or openai_client(config, max_answer_bytes=MAX_ANSWER_BYTES)
        self._sleep = sleep
        self._reached_server = False
        self._stopped: LLMError | None = None  # set by the first error that ends the run: no request after it
        self._stall = StallWatch(config.stall_seconds)
        self.usage = Usage()

    async def close(self) -> None:
        await self._client.close()

    async def classify(
        self,
        jobs: Sequence[Job],
        on_outcome: OnOutcome,
        on_progress: OnUsage | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Classify every job; `on_outcome` is called once per job, as each one ends, in any order. Once `stop` is
        set, requests in flight are abandoned and the jobs without an outcome are left for the next run."""
        # Stopped, or cancelled ourselves: nothing may outlive this call (the client closes after it).
        with contextlib.suppress(Stopped):
            await unless_stopped(self._work(jobs, on_outcome, on_progress), stop)

    async def _work(self, jobs: Sequence[Job], on_outcome: OnOutcome, on_progress: OnUsage | None) -> None:
        queue: asyncio.PriorityQueue[tuple[int, int, _Pending | None]] = asyncio.PriorityQueue()
        arrival = itertools.count()  # first in, first out within a priority
        for job in jobs:
            queue.put_nowait((FRESH, next(arrival), _Pending(job)))
        workers = min(self._config.max_concurrency, len(jobs))
        unfinished = len(jobs)

        async def retry_later(pending: _Pending, delay: float) -> None:
            await self._sleep(delay)
            queue.put_nowait((RETRY, next(arrival), pending))

        async def next_pending() -> _Pending | None:
            item = await queue.get()
            if item[2] is None:
                return None
            ticket = await self.capacity.acquire()
            slot = await self._limiter.acquire(item[2].tokens)
            # A retry may have come due while this worker waited for its slot: the slot goes to the most urgent
            # job waiting (papers are of a size, so the tokens reserved fit either).
            queue.put_nowait(item)
            pending = queue.get_nowait()[2]
            assert pending is not None  # the queue is closed only once no job is left, and this worker holds one
            pending.slot, pending.ticket = slot, self.capacity.sending(ticket)
            return pending

        async def worker() -> None:
            nonlocal unfinished
            while (pending := await next_pending()) is not None:
                try:
                    outcome = await self._attempt(pending)
                except _Retry as retry:
                    self._check_stalled(retry)
                    delay = self._retry_delay(pending, retry)
                    if delay is not None:
                        # The worker moves on: a back-off holds no place, and the retry queues ahead of fresh papers.
                        group.create_task(retry_later(pending, delay))
                        continue
                    outcome = self._give_up(pending)
                except LLMError:
                    raise
                except Exception as error:  # whatever one answer does, it costs one paper, never the run
                    log.warning("paper %s: unexpected %s", pending.job.paper.key, error.__class__.__name__)
                    outcome = Failure(paper_key=pending.job.paper.key, reason=f"unexpected {error.__class__.__name__}")
                finally:
                    self.capacity.release(pending.ticket)
                on_outcome(pending.job, outcome)
                if on_progress is not None:
                    on_progress(self.usage)
                unfinished -= 1
                if unfinished == 0:
                    for _ in range(workers):
                        queue.put_nowait((FINISHED, next(arrival), None))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except* LLMError as errors:
            raise errors.exceptions[0] from None

    async def _attempt(self, pending: _Pending) -> Outcome:
        pending.attempts += 1
        if self._stopped is not None:
            raise self._stopped
        return await self._request(pending)

    def _retry_delay(self, pending: _Pending, retry: _Retry) -> float | None:
        """How long before the next attempt; None when the attempts are spent."""
        pending.problem = retry.problem
        if retry.adjusted:
            return 0.0  # the same request in a form the server takes: no attempt was spent
        if retry.rate_limited:
            # Not a failed attempt: the run is slowed and the paper waits as asked. The stall watchdog ends a run
            # in which nothing gets through.
            pending.rate_limited += 1
            delay = retry.delay
            if delay is None:
                delay = backoff(pending.rate_limited, first=FIRST_UNNAMED_WAIT_SECONDS, longest=LONGEST_BACKOFF_SECONDS)
        else:
            # Back-off grows with the failures that named no wait (server errors, timeouts, invalid answers), not
            # with the rate limits met before them: those waited as long as the server asked, and the run slowed.
            pending.failures_without_wait += 1
            if pending.failures_without_wait >= self._config.max_attempts:
                return None
            delay = backoff(pending.failures_without_wait, first=FIRST_BACKOFF_SECONDS, longest=LONGEST_BACKOFF_SECONDS)
        self.usage.retries += 1
        delay = min(delay, LONGEST_WAIT_SECONDS)
        log.debug("paper %s: %s; retrying in %.2f s", pending.job.paper.key, retry.problem, delay)
        return delay

    def _give_up(self, pending: _Pending) -> Failure:
        if not self._reached_server:
            raise LLMError(
                f"cannot reach the LLM server at {self._config.base_url}: {pending.problem}",
                hint="check llm.base_url in config.yaml and that the server is running (digest check tests it)",
            )
        return Failure(
            paper_key=pending.job.paper.key, reason=f"gave up after {pending.attempts} attempts: {pending.problem}"
        )

    async def _request(self, pending: _Pending) -> Outcome:
        paper, profile = pending.job.paper, pending.job.profile
        self.usage.requests += 1
        body = request_body(self._config, pending.job, self.facts)
        try:
            # The client's timeout bounds each read; this bounds the whole answer (a server may trickle it).
            async with asyncio.timeout(self._config.timeout_seconds):
                raw = await self._client.chat.completions.with_raw_response.create(**body)
        except openai.APIStatusError as error:
            self._reached_server = True
            return self._status_error(pending, body, error)
        except (openai.APITimeoutError, TimeoutError):
            # The server's work on it, queued or half done, is thrown away: counted, and the limit shrinks.
            self.usage.timed_out += 1
            self.usage.timed_out_tokens += pending.tokens
            self._limiter.failed()
            self.capacity.overloaded()
            raise _Retry(f"no answer within {self._config.timeout_seconds:g} s") from None
        except openai.APIConnectionError as error:
            self._limiter.failed()
            raise _Retry(f"connection failed ({error.__cause__ or error})") from None
        self._reached_server = True
        self._stall.succeeded()
        headers = minute_counters(raw.headers, self._config.base_url)
        self._limiter.succeeded(headers, pending.slot)
        if reports_counters(headers):
            self.capacity.fixed()
        else:
            self.capacity.answered(pending.ticket)
        if self.facts.structured_output is None:
            self.facts = self.facts.model_copy(
                update={"structured_output": body.get("response_format", {"type": "instructions"})["type"]}
            )
        try:
            answer = answer_of(raw.http_response.content)
            if answer.usage is not None:
                self.usage.prompt_tokens += answer.usage.prompt_tokens
                self.usage.completion_tokens += answer.usage.completion_tokens
                self.usage.cached_tokens += answer.usage.cached_tokens
            return outcome_of(answer, paper, profile)
        except InvalidAnswer as invalid:
            raise _Retry(invalid.problem) from None

    def _status_error(self, pending: _Pending, body: ChatRequest, error: openai.APIStatusError) -> Outcome:
        try:
            return self._judge_status(pending, body, error)
        except LLMError as fatal:
            self._stopped = self._stopped or fatal
            raise

    def _check_stalled(self, retry: _Retry) -> None:
        """Stop the run when, over stall_seconds, almost nothing succeeds."""
        stalled = self._stall.stalled(retry.problem, counted=not retry.adjusted)
        if stalled is not None:
            self._stopped = self._stopped or stalled
            raise self._stopped

    def _judge_status(self, pending: _Pending, body: ChatRequest, error: openai.APIStatusError) -> Outcome:
        status = error.status_code
        detail = error_message(error)
        if status == 429 and error.code == "insufficient_quota":
            raise LLMError(
                f"the LLM account has no quota left: {detail}",
                hint="add credit or raise the budget with your provider, then run again; nothing was lost",
            )
        if status in (401, 403):
            raise key_refused(status, detail)
        if status == 404:
            raise LLMError(
                f"the LLM server does not know model '{self._config.model}' or path /chat/completions: {detail}",
                hint="check llm.model and llm.base_url in config.yaml",
            )
        if status == 429:
            self.usage.rate_limited += 1
            stalled = self._stall.since_success()
            if stalled > self._config.stall_seconds:
                raise LLMError(
                    f"the LLM server has answered only 429 (rate limited) for {stalled:.0f} s: {detail}",
                    hint="check the account's rate limits, or lower llm.requests_per_minute; the papers not yet "
                    "classified stay pending for the next run",
                )
            headers = minute_counters(error.response.headers, self._config.base_url)
            delay = retry_after(headers)
            self._limiter.rate_limited(delay if delay is not None else 1.0, headers, pending.slot)
            raise _Retry(f"rate limited (HTTP 429): {detail}", delay, rate_limited=True)
        self._limiter.failed()
        if status == 503:
            # Back-pressure, not a failure: Ollama's "server busy" when its queue is full, a provider overloaded.
            # Fewer in flight, and this paper waits as a rate-limited one does.
            self.usage.busy += 1
            self.capacity.overloaded()
            wait = retry_after(error.response.headers)
            raise _Retry(f"the server is busy (HTTP 503): {detail}", wait, rate_limited=True)
        if status in (408, 409) or status >= 500:
            raise _Retry(f"server error (HTTP {status}): {detail}")
        if status in (400, 422) and REFUSED_PARAMETER.search(detail.lower()):
            adjusted = adjusted_for(self.facts, body, detail)
            if adjusted is not None:
                log.info("the LLM server refused part of the request (%s); asking without it", detail[:120])
                self.facts = adjusted
                raise _Retry(f"HTTP {status}: {detail}", adjusted=True)
        repeated = self._stall.repeated(status, detail)
        if (status == 400 and SETUP_ERROR.search(detail)) or repeated:
            raise LLMError(
                f"the LLM server refuses every request (HTTP {status}): {detail}",
                hint="check llm.model, llm.api_key and llm.base_url in config.yaml (digest check tests them); "
                "nothing was lost, the papers stay pending for the next run",
            )
        raise _Retry(f"HTTP {status}: {detail}")
