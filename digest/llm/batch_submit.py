"""The account's batches: a day's requests uploaded and created as batches (recorded in the state before each is
created, so that a crash never pays twice), batches an earlier run left open found and resumed or cancelled, and a
create that went unanswered looked for by its metadata."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import io
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import openai
from openai.types import Batch

from digest.config import LLMConfig
from digest.llm.live import Classifier
from digest.llm.requests import Job, error_message, key_refused, request_body
from digest.state.store import BatchRecord, Store, prompt_hash

log = logging.getLogger(__name__)


WINDOW_SECONDS = 24 * 3600.0  # completion_window "24h", the only one OpenAI offers


MAX_FILE_BYTES = 200_000_000  # OpenAI's limit for a batch file


MAX_REQUESTS = 50_000  # OpenAI's limit for a batch


METADATA_KEY = "digest_submission"


LISTED_BATCHES = 100  # a page of the account's batches, newest first, searched for one created just before a crash


LISTED_PAGES = 10  # the search ends after this many pages, or LIST_SECONDS, whatever the server says of more


LIST_SECONDS = 30.0


# After an uncertain create (a lost answer, a timeout, a 5xx), the listing is searched again after these waits: a
# batch just created may take a moment to be listed.
FIND_WAITS = (0.0, 1.0, 2.0, 4.0, 8.0)


UNCERTAIN = "uncertain"  # the status of a submission whose create may or may not have made a batch


Report = Callable[[str], None]


def custom_id(job: Job) -> str:
    """Names profile and paper; unique within a batch, as a (profile, paper) pair is within a run."""
    return f"{job.profile.name}/{job.paper.key}"


@dataclass
class WaitingBatch:
    """A batch this run waits for, and the jobs whose answers it holds."""

    record: BatchRecord
    jobs: dict[str, Job]
    status: str = "not polled yet"  # the provider's word, once polled: even a resumed batch is asked again
    found: Batch | None = None
    done: int = 0
    total: int = 0
    cancelled: bool = False
    problems: dict[str, str] = field(default_factory=dict)


class BatchSubmissions:
    """This run's dealings with the account's batches, apart from waiting for them: what it notes for the summary
    and warns of is read by the classifier that owns it."""

    def __init__(
        self, config: LLMConfig, store: Store, live: Classifier, client: openai.AsyncOpenAI, report: Report
    ) -> None:
        self._config = config
        self._store = store
        self._live = live  # told when the server turns out to have no Batch API
        self._client = client
        self._report = report
        self.notes: list[str] = []  # for the run's summary: what each batch came to
        self.warnings: list[str] = []
        self.uncertain: list[BatchRecord] = []  # submitted by this run, not listed after an uncertain create

    async def submit(self, jobs: Sequence[Job]) -> tuple[list[WaitingBatch], list[Job]]:
        """Upload the requests and create their batches (one, unless the day is larger than a batch may be): the
        batches to wait for, and the jobs to send live because the server took no batch."""
        lines = [
            json.dumps(
                {"custom_id": custom_id(job), "method": "POST", "url": "/v1/chat/completions", "body": body},
                ensure_ascii=False,
            ).encode()
            for job in jobs
            for body in [request_body(self._config, job)]
        ]
        waiting: list[WaitingBatch] = []
        start = 0
        while start < len(jobs):
            end, size = start, 0
            while end < len(jobs) and end - start < MAX_REQUESTS and size + len(lines[end]) < MAX_FILE_BYTES:
                size += len(lines[end]) + 1
                end += 1
            submitted = await self._submit_one(jobs[start:end], b"\n".join(lines[start:end]) + b"\n")
            if submitted is None:
                return waiting, list(jobs[start:])
            waiting.append(submitted)
            start = end
        return waiting, []

    async def _submit_one(self, jobs: Sequence[Job], content: bytes) -> WaitingBatch | None:
        """One batch, recorded with its requests before it is created; None: send its jobs live."""
        try:
            upload = await self._client.files.create(
                file=("digest-batch.jsonl", io.BytesIO(content), "application/jsonl"), purpose="batch"
            )
        except openai.APIStatusError as error:
            self._no_batch_api(error, "/files")
            return None
        except openai.APIConnectionError as error:
            self.warnings.append(f"the batch could not be uploaded ({error}); its {len(jobs)} requests went live")
            return None
        submission = uuid.uuid4().hex
        requests = {custom_id(job): (job.profile.name, job.paper.key, prompt_hash(job.instructions)) for job in jobs}
        self._store.begin_batch(submission, upload.id, self._config.model, requests)
        record = BatchRecord(
            submission, None, upload.id, "submitting", dt.datetime.now(dt.UTC), requests, self._config.model
        )
        created = await self._create(record)
        if created is None:
            return None
        self._report(f"batch: submitted {created.id} with {len(jobs)} requests ({len(content):,} bytes)")
        return WaitingBatch(
            dataclasses.replace(record, batch_id=created.id), {custom_id(job): job for job in jobs}, total=len(jobs)
        )

    async def _create(self, record: BatchRecord) -> Batch | None:
        try:
            # Never retried blindly: a retry after a lost answer would create a second batch and pay twice.
            batch = await self._client.with_options(max_retries=0).batches.create(
                input_file_id=record.input_file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={METADATA_KEY: record.submission},
            )
        except (openai.APIConnectionError, openai.InternalServerError) as error:
            # No answer, or a 5xx: the batch may have been created all the same. Found by its metadata (listing can
            # lag), it is waited for; its requests never go live beside it.
            said = f"HTTP {error.status_code}" if isinstance(error, openai.APIStatusError) else str(error)
            found = await self.find(record, patient=True)
            if found is not None:
                self.notes.append(f"{found.id}: created although the server answered {said}; found by its metadata")
                return found
            # Not listed after all that: most likely never made. Kept open all the same, so that if it appears
            # later, the next run cancels it before it bills more.
            self._store.update_batch(record.submission, UNCERTAIN)
            self.uncertain.append(record)
            self.warnings.append(
                f"the batch may not have been created (the server answered {said}), and was not listed within "
                f"{sum(FIND_WAITS):.0f} s: its {len(record.requests)} requests went live; should it appear, the next "
                "run cancels it"
            )
            return None
        except openai.APIStatusError as error:
            self._store.update_batch(record.submission, "not created", closed=True)
            self._no_batch_api(error, "/batches")
            return None
        self._store.update_batch(record.submission, batch.status, batch.id)
        return batch

    def _no_batch_api(self, error: openai.APIStatusError, path: str) -> None:
        if error.status_code in (401, 403):
            raise key_refused(error.status_code, "", where=path, may="use the Batch API")
        if error.status_code in (404, 405, 501):
            self._live.facts = self._live.facts.model_copy(update={"batch_api": False})
            warning = (
                f"the LLM server at {self._config.base_url} has no Batch API (HTTP {error.status_code} on {path}); "
                "the requests went live (set llm.mode: live to skip this)"
            )
        else:
            warning = (
                f"the Batch API refused the batch (HTTP {error.status_code} on {path}: {error_message(error)}); "
                "the requests went live"
            )
        log.warning("%s", warning)
        self.warnings.append(warning)

    async def resume(self, wanted: dict[str, Job]) -> list[WaitingBatch]:
        """The open batches that hold answers this run needs. Ones no longer needed (their papers are decided, or
        the prompt changed since) are cancelled, to pay for nothing more, and closed."""
        waiting = []
        for record in self._store.open_batches():
            if record.model != self._config.model:
                await self.retire(record, f"asked of {record.model}; llm.model is now {self._config.model}")
                continue
            jobs = {
                cid: wanted[cid]
                for cid, (_, _, asked_with) in record.requests.items()
                if cid in wanted and prompt_hash(wanted[cid].instructions) == asked_with
            }
            batch_id = record.batch_id
            if batch_id is None:
                found = await self.find(record)
                if found is None and record.status == UNCERTAIN:
                    # Looked for a day, so that a batch listed late is still cancelled; its jobs still open go
                    # into this run's batch meanwhile.
                    if (dt.datetime.now(dt.UTC) - record.created_at).total_seconds() > WINDOW_SECONDS:
                        self._store.update_batch(record.submission, "not created", closed=True)
                    continue
                if found is None and not jobs:
                    self._store.update_batch(record.submission, "not created", closed=True)
                    continue
                created = found or await self._create(record)
                if created is None:
                    continue  # closed: its jobs are fresh, and go into this run's batch
                batch_id = created.id
            record = dataclasses.replace(record, batch_id=batch_id)
            if not jobs:
                await self.retire(record, "no longer needed (its papers are decided or the prompt changed)")
                continue
            self._report(
                f"batch: resuming {batch_id}, submitted {record.created_at.astimezone():%Y-%m-%d %H:%M}, "
                f"for {len(jobs)} requests"
            )
            waiting.append(WaitingBatch(record, jobs, total=len(record.requests)))
        return waiting

    async def retire(self, record: BatchRecord, why: str) -> None:
        """Cancel an open batch this run does not wait for, so that it bills nothing more, and close it; if the
        cancel does not go through, it stays open, and the next run cancels it again."""
        batch_id = record.batch_id
        if batch_id is None:
            found = await self.find(record)
            if found is None:
                self._store.update_batch(record.submission, "not created", closed=True)
                return
            batch_id = found.id
        try:
            await self._client.batches.cancel(batch_id)
        except openai.NotFoundError:
            pass
        except openai.APIError as error:
            self.warnings.append(
                f"batch {batch_id} ({why}) could not be cancelled ({error.__class__.__name__}); "
                "the next run tries again"
            )
            return
        self._store.update_batch(record.submission, "cancelled: " + why.partition(" (")[0], closed=True)
        log.info("batch %s: cancelled, %s", batch_id, why)
        if record.model != self._config.model:
            self.notes.append(f"{batch_id} cancelled: {why}; its papers are asked again")

    async def find(self, record: BatchRecord, *, patient: bool = False) -> Batch | None:
        """The batch of a submission whose create went unanswered (or whose run ended before it could record the
        batch's id); None if none is listed. `patient`: searched again over FIND_WAITS, for a listing that lags."""
        for wait in FIND_WAITS if patient else FIND_WAITS[:1]:
            await asyncio.sleep(wait)
            found = await self._listed(record)
            if found is not None:
                self._store.update_batch(record.submission, found.status, found.id)
                return found
        return None

    async def _listed(self, record: BatchRecord) -> Batch | None:
        """One search of the listing, newest first, bounded in pages and time whatever the server says of more."""
        searched = 0
        with contextlib.suppress(openai.APIError, TimeoutError):
            async with asyncio.timeout(LIST_SECONDS):
                async for batch in self._client.batches.list(limit=LISTED_BATCHES):
                    if (batch.metadata or {}).get(METADATA_KEY) == record.submission:
                        return batch
                    searched += 1
                    if batch.created_at < record.created_at.timestamp() - 3600:  # newest first: not further on
                        break
                    if searched >= LISTED_BATCHES * LISTED_PAGES:
                        break
        return None
