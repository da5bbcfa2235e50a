"""The Batch API: a day's requests as one batch, at half the price, answered within 24 hours.

BatchClassifier stands behind the same interface as the live Classifier, and `llm.mode` chooses between them.
A submission is recorded in the state with its requests before its batch is created (its key goes with the batch as
metadata), and stays open until the batch's answers are recorded. So a run killed while it waits resumes the same
batch on the next run, even one created a moment before the kill, and never pays for the same requests twice.
Every answer is validated as a live one is. What a batch does not answer with a verdict (failed or missing lines,
invalid answers, a batch that expired, failed, or was cancelled at `llm.batch_deadline`) goes through the live
classifier in the same run. A server without the Batch API gets one warning, and live requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence

import openai
from pydantic import BaseModel, ValidationError

from digest.config import Config, LLMConfig
from digest.llm.answers import batch_answer
from digest.llm.batch_submit import (
    FIND_WAITS,
    LIST_SECONDS,
    WINDOW_SECONDS,
    BatchSubmissions,
    Report,
    WaitingBatch,
    custom_id,
)
from digest.llm.live import Classifier, OnOutcome, OnUsage
from digest.llm.requests import Job, error_message, key_refused, openai_client
from digest.net.http import TooLargeAnswer
from digest.net.pacing import backoff
from digest.state.store import Store
from digest.stopping import Stopped, unless_stopped

log = logging.getLogger(__name__)

FIRST_POLL_SECONDS = 1.0
LONGEST_POLL_SECONDS = 60.0  # OpenAI suggests polling every 30-60 s; a small batch is often done within minutes
POLL_GROWTH = 1.5
# After cancelling at the deadline, how long a batch's finished answers are waited for (OpenAI: cancelling takes up
# to 10 minutes). The deadline is the promise: past this, what the batch holds is asked live, and the summary says
# what it may still bill.
CANCEL_GRACE_SECONDS = 10.0
MAX_OUTPUT_BYTES = 200_000_000  # a result file is of the same order; a larger one is cut off, and asked live
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
DOWNLOAD_ATTEMPTS = 3


def batch_allowance_seconds(llm: LLMConfig) -> float:
    """How much longer than max_run_minutes a run may take waiting for its batch: until the deadline (a local time
    comes within a day), or the batch's window; then cancelling it."""
    if llm.mode != "batch":
        return 0.0
    deadline = llm.batch_deadline
    wait = deadline.after.total_seconds() if deadline is not None and deadline.after is not None else WINDOW_SECONDS
    return wait + CANCEL_GRACE_SECONDS + sum(FIND_WAITS) + len(FIND_WAITS) * LIST_SECONDS


class _Response(BaseModel):
    status_code: int
    body: object = None


class _LineError(BaseModel):
    code: str | None = None
    message: str | None = None


class _OutputLine(BaseModel):
    """One line of a batch's output or error file; untrusted until it validates."""

    custom_id: str
    response: _Response | None = None
    error: _LineError | None = None


class BatchClassifier:
    def __init__(
        self,
        config: Config,
        store: Store,
        live: Classifier,
        *,
        started: dt.datetime,
        report: Report | None = None,
        client: openai.AsyncOpenAI | None = None,
        resume_only: bool = False,
    ) -> None:
        """`resume_only`: for a live run that finds batches an earlier run left open (the mode was switched back
        to live): they are cancelled at once, what they finished is kept, and everything else is asked live."""
        self._config = config.llm
        self._store = store
        self._live = live
        deadline = config.llm.batch_deadline
        self._deadline = None if deadline is None else deadline.when(started, config.schedule.timezone)
        if resume_only:
            self._deadline = started
        self._resume_only = resume_only
        self._report = report or (lambda line: log.info("%s", line))
        # Polling and file transfers are idempotent, and the SDK's back-off suits them.
        self._client = client or openai_client(config.llm, max_retries=2, max_answer_bytes=MAX_OUTPUT_BYTES)
        self.usage = live.usage  # one account of the run: batch answers in its batch_* fields
        self._submissions = BatchSubmissions(self._config, store, live, self._client, self._report)
        self.notes = self._submissions.notes  # one list each, written by both: the submissions and the collecting
        self.warnings = self._submissions.warnings

    async def close(self) -> None:
        await self._client.close()
        await self._live.close()

    async def classify(
        self,
        jobs: Sequence[Job],
        on_outcome: OnOutcome,
        on_progress: OnUsage | None = None,
        *,
        stop: asyncio.Event | None = None,
    ) -> None:
        with contextlib.suppress(Stopped):
            await unless_stopped(self._work(jobs, on_outcome, on_progress), stop)

    async def _work(self, jobs: Sequence[Job], on_outcome: OnOutcome, on_progress: OnUsage | None) -> None:
        wanted = {custom_id(job): job for job in jobs}
        waiting = await self._submissions.resume(wanted)
        covered = {cid for w in waiting for cid in w.jobs}
        fresh = [job for cid, job in wanted.items() if cid not in covered]
        submitted, live = (
            await self._submissions.submit(fresh) if fresh and not self._resume_only else ([], list(fresh))
        )
        waiting += submitted
        if waiting:
            await self._wait(waiting)
            for batch in waiting:
                live += await self._collect(batch, on_outcome, on_progress)
        if live:
            self._report(f"batch: {len(live)} requests go live")
            await self._live.classify(live, on_outcome, on_progress)
        for record in self._submissions.uncertain:
            # Looked for once more now that its requests are answered: listed late, it is cancelled at once.
            found = await self._submissions.find(record)
            if found is not None:
                await self._submissions.retire(
                    dataclasses.replace(record, batch_id=found.id), "created after all, too late"
                )
                self.warnings.append(
                    f"batch {found.id} was listed after its requests went live, and was cancelled: it may bill "
                    "what it finished before that (paid twice)"
                )

    # Waiting

    async def _wait(self, waiting: list[WaitingBatch]) -> None:
        """Poll, more and more slowly, until every batch has ended; at the deadline, cancel those still running."""
        interval = FIRST_POLL_SECONDS
        cancel_by: dt.datetime | None = None
        while True:
            for batch in waiting:
                if batch.status not in FINAL:
                    await self._poll(batch)
            running = [b for b in waiting if b.status not in FINAL]
            if not running:
                return
            now = dt.datetime.now(dt.UTC)
            if self._deadline is not None and now >= self._deadline and cancel_by is None:
                cancel_by = now + dt.timedelta(seconds=CANCEL_GRACE_SECONDS)
                for batch in running:
                    await self._cancel(batch)
                interval = FIRST_POLL_SECONDS
            if cancel_by is not None and now >= cancel_by:
                return  # still running: what it holds is asked live; it stays open, and the next run cancels it
            sleep = interval
            if self._deadline is not None and cancel_by is None:
                sleep = max(0.0, min(sleep, (self._deadline - now).total_seconds()))
            await asyncio.sleep(sleep)
            interval = min(interval * POLL_GROWTH, LONGEST_POLL_SECONDS)

    async def _poll(self, batch: WaitingBatch) -> None:
        batch_id = batch.record.batch_id
        assert batch_id is not None
        try:
            found = await self._client.batches.retrieve(batch_id)
        except openai.NotFoundError:
            self._store.update_batch(batch.record.submission, "unknown to the server", closed=True)
            batch.status = "unknown to the server"
            return
        except openai.AuthenticationError as error:
            raise key_refused(error.status_code, error_message(error), may="use the Batch API") from None
        except openai.APIError as error:  # the server is busy or away: the batch goes on there, so ask again later
            log.info("batch %s: could not be polled (%s); trying again", batch_id, error.__class__.__name__)
            return
        counts = found.request_counts
        done = (counts.completed + counts.failed) if counts is not None else batch.done
        if found.status != batch.status or done != batch.done:
            self._report(f"batch: {batch_id} {found.status}, {done}/{batch.total} done")
            self._store.update_batch(batch.record.submission, found.status)
        batch.status, batch.done, batch.found = found.status, done, found

    async def _cancel(self, batch: WaitingBatch) -> None:
        batch_id = batch.record.batch_id
        assert batch_id is not None
        self._report(f"batch: {batch_id} is not done at llm.batch_deadline; cancelling it, the rest goes live")
        batch.cancelled = True
        with contextlib.suppress(openai.APIError):
            found = await self._client.batches.cancel(batch_id)
            batch.status, batch.found = found.status, found

    # Collecting

    async def _collect(self, batch: WaitingBatch, on_outcome: OnOutcome, on_progress: OnUsage | None) -> list[Job]:
        """Record the verdicts an ended batch holds, and close it; return the jobs to ask live."""
        found = batch.found
        answered: set[str] = set()
        problems: dict[str, str] = {}
        for file_id in (found.output_file_id, found.error_file_id) if found is not None else ():
            if not file_id:
                continue
            content = await self._download(file_id)
            if isinstance(content, str):
                self.warnings.append(
                    f"the batch's file {file_id} {content}: the answers in it were paid for, and are asked live "
                    "again (paid twice)"
                )
                continue
            for raw in content.splitlines():
                try:
                    line = _OutputLine.model_validate_json(raw)
                except ValidationError:
                    continue  # not a line of ours; whatever it was meant to answer is asked live
                job = batch.jobs.get(line.custom_id)
                if job is None or line.custom_id in answered:  # not asked, or answered already: recorded once
                    continue
                response = line.response
                if response is None or response.status_code != 200:
                    problems[line.custom_id] = _failed_line(line)
                    continue
                answer = batch_answer(response.body, job.paper, job.profile)
                self.usage.add(answer.usage)
                if answer.outcome is None:
                    problems[line.custom_id] = answer.problem
                    continue
                answered.add(line.custom_id)
                problems.pop(line.custom_id, None)
                on_outcome(job, answer.outcome)
                if on_progress is not None:
                    on_progress(self.usage)
        rest = [job for cid, job in batch.jobs.items() if cid not in answered]
        unanswered = {
            "cancelled": "cancelled before it was done",
            "completed": "not in the batch's output",
            "expired": "not in the batch's output",
            "failed": "not in the batch's output",
        }.get(batch.status, "not done at llm.batch_deadline")
        for cid in batch.jobs.keys() - answered - problems.keys():
            problems[cid] = unanswered
        if batch.status in FINAL:
            self._store.update_batch(batch.record.submission, batch.status, closed=True)
        else:
            self.warnings.append(
                f"batch {batch.record.batch_id} was still {batch.status} {CANCEL_GRACE_SECONDS:.0f} s after it was "
                f"cancelled at llm.batch_deadline: its {len(rest)} unanswered requests went live, and it may still "
                f"bill for up to {len(rest)} of them (paid twice if it does); the next run cancels it again"
            )
        note = f"{batch.record.batch_id} {batch.status}: {len(answered)} of {len(batch.jobs)} answered"
        if rest:
            kinds: dict[str, int] = {}
            for problem in problems.values():
                kinds[problem] = kinds.get(problem, 0) + 1
            note += f"; {len(rest)} asked live (" + "; ".join(f"{n} {why}" for why, n in kinds.items()) + ")"
        if found is not None and found.errors is not None and found.errors.data:
            first = found.errors.data[0]
            note += f"; the server said: {first.message or first.code}"
        self._report(f"batch: {note}")
        self.notes.append(note)
        return rest

    async def _download(self, file_id: str) -> bytes | str:
        """A result file's content, or what stood in the way. A file over MAX_OUTPUT_BYTES is not asked for
        again: it would be as large the next time."""
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                return (await self._client.with_options(max_retries=0).files.content(file_id)).content
            except openai.APIConnectionError as error:
                if isinstance(error.__cause__, TooLargeAnswer):
                    return f"is larger than {MAX_OUTPUT_BYTES:,} bytes"
                problem = f"could not be downloaded ({error.__class__.__name__})"
            except openai.APIStatusError as error:
                problem = f"could not be downloaded (HTTP {error.status_code})"
                if error.status_code < 500:
                    break
            await asyncio.sleep(backoff(attempt + 1, first=1.0, longest=10.0))
        return problem


def _failed_line(line: _OutputLine) -> str:
    if line.error is not None:
        return f"failed in the batch ({line.error.code or 'error'}: {(line.error.message or '')[:100]})"
    status = line.response.status_code if line.response is not None else "no response"
    return f"failed in the batch (HTTP {status})"
