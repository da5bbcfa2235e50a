"""fetch -> classify -> render -> deliver, with SQLite state between runs.

Every fetched paper is stored before anything else happens; a paper stays "undigested" for a profile until a
digest that accounts for it is recorded, together with one pending delivery per recipient, in one transaction.
Each recipient's delivery is marked sent the moment the server accepts its message. So a crash at any point loses
nothing, and a re-run repeats nothing: cached verdicts cost no request, and a recorded digest is never built or sent
again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from digest.config import Config
from digest.errors import DeliveryError, DigestError
from digest.links import Links
from digest.llm.batch import batch_allowance_seconds
from digest.llm.prices import estimate_cost
from digest.models import OnProgress, Paper, RunSummary
from digest.pipeline.deliver import Delivered, deliver_pending
from digest.pipeline.fetch import Fetched, fetch_missed, fetch_new
from digest.pipeline.judge import Judge, Judged, taste_of
from digest.pipeline.record import Composer
from digest.pipeline.select import build_digest
from digest.pipeline.taste import place_by_taste
from digest.render import Renderer
from digest.secrets import redact
from digest.state.store import Store
from digest.stopping import Stopped, unless_stopped
from digest.taste.evaluate import with_learned_cut
from digest.wording import paper_count

log = logging.getLogger(__name__)

MISSED_AFTER = dt.timedelta(hours=30)  # a weekday run every 24 h; more than this apart, a day was missed


class Pipeline:
    def __init__(
        self, config: Config, *, on_progress: OnProgress | None = None, on_note: Callable[[str], None] | None = None
    ) -> None:
        """`on_progress` and `on_note`: how far the classification is, and a batch's lines, for whoever shows them."""
        self.config = config
        self._secrets = config.secrets
        self._judge = Judge(config, on_progress=on_progress, on_note=on_note)

    async def run(
        self, since: dt.date | None = None, *, catch_up: bool = False, stop: asyncio.Event | None = None
    ) -> RunSummary:
        """Fetch, classify, record one digest per profile, and deliver everything pending, oldest first.

        `catch_up`: when the last good run is more than a day old, also fetch what was missed in between.
        `stop`: once set, the run ends at the next safe point (in-flight LLM requests are abandoned, a message
        being sent is finished); what is left stays pending for the next run.
        Errors a user can act on end up in the summary's `errors`, so the summary is always there to print. Each
        stage returns what it did; the summary is put together here, from what they return.
        """
        started, clock = dt.datetime.now(dt.UTC), time.monotonic()
        summary = RunSummary()
        # Past max_run_minutes the run stops at its next safe point, as on a signal, and says so.
        # In batch mode, waiting for the batch (until llm.batch_deadline, or its 24 h) comes on top.
        limit = self.config.max_run_minutes
        signalled, deadline, stop = stop or asyncio.Event(), asyncio.Event(), asyncio.Event()
        seconds = run_allowance_seconds(self.config)
        watcher = asyncio.ensure_future(_stop_at(signalled, seconds, deadline, stop))
        store = Store(self.config.state)
        try:
            store.lock_for_run()
        except DigestError:
            watcher.cancel()
            store.close()
            raise
        bug: Exception | None = None
        try:
            if catch_up and since is None:
                since = self._missed_since(store)
            previous_ok = True
            if last := store.recent_runs(1):
                previous_start, previous_ok, previous = last[0]
                if previous.stopped:
                    summary.resumed = _what_was_left(previous_start, previous)
            try:
                await unless_stopped(self._read_libraries(store, summary), stop)
                fetched = await unless_stopped(fetch_new(self.config, store, warn_stale=previous_ok), stop)
                _add_fetched(summary, fetched)
                if fetched.nothing_read is not None:
                    raise fetched.nothing_read
                if since is not None:
                    _add_fetched(summary, await unless_stopped(fetch_missed(self.config, store, since), stop))
                pending = {p.name: store.undigested_papers(p.name) for p in self.config.profiles}
                tasted = await unless_stopped(place_by_taste(self.config, store, pending, self._judge.in_scope), stop)
                summary.taste_model = tasted.model if tasted.by_profile else None
                summary.embedded, summary.embedding_seconds = tasted.embedded, tasted.seconds
                if tasted.problem:
                    summary.warnings.append(f"taste: {tasted.problem}; the LLM read every paper")
                judged = await self._judge.classify(store, pending, stop, batch_from=started, tastes=tasted.by_profile)
                _add_judged(summary, judged)
                if judged.interrupted is not None:
                    raise judged.interrupted
                announced = fetched.announced or dt.date.today()
                renderer, clock_render = Renderer(self.config.output, Links.of(self.config, store)), time.monotonic()
                composer = Composer(
                    self.config,
                    self._judge,
                    store,
                    renderer,
                    usage=summary.usage,
                    cost=summary.cost,
                    unreadable=len(summary.unreadable),
                )
                # A signal leaves the digests to the next run; past max_run_minutes, what was judged goes out now.
                for profile, profile_summary in zip(self.config.profiles, summary.profiles, strict=True):
                    if not signalled.is_set():
                        recorded = composer.record(profile, announced, pending[profile.name], judged.verdicts)
                        profile_summary.digest, profile_summary.relevant = recorded.said, recorded.relevant
                log.info(
                    "render: %s, in %.2f s",
                    "; ".join(f"{p.name}: {p.digest}" for p in summary.profiles),
                    time.monotonic() - clock_render,
                )
            except DigestError as error:
                summary.errors.append(str(error))
            except Stopped:
                pass  # nothing of an abandoned download was recorded
            except Exception as error:  # a bug: reported once the digests pending from earlier days are out
                bug = error
                summary.errors.append(f"internal error: {error.__class__.__name__}")
            # Digests left pending by earlier runs go out even when today's fetch or classification failed.
            try:
                _add_delivered(summary, await deliver_pending(self.config, store, signalled))
            except DeliveryError as error:
                summary.errors.append(str(error))
            if bug is not None:
                raise bug
            if deadline.is_set() and not signalled.is_set():
                carried = sum(max(0, p.to_classify - p.classified - p.failed) for p in summary.profiles)
                summary.warnings.append(
                    f"the run passed max_run_minutes ({limit:g}): what was judged went out, and "
                    f"{paper_count(carried)} still to judge come in the next digest"
                    if carried
                    else f"the run passed max_run_minutes ({limit:g}) and stopped at a safe point; the next run does "
                    "the rest"
                )
            elif stop.is_set():
                summary.stopped = True
                summary.warnings.append("stopped by a signal at a safe point; the next run does what was left")
            elif not summary.errors:
                forgotten = store.prune(started - dt.timedelta(days=self.config.retention_days))
                if forgotten:
                    log.info("prune: forgot %d papers older than %d days", forgotten, self.config.retention_days)
        finally:
            watcher.cancel()
            summary.seconds = time.monotonic() - clock
            if summary.cost is None:  # a run that failed before its cost was reckoned: what it spent, often nothing
                summary.cost = estimate_cost(summary.usage, self.config.llm)
            # What servers said is in the summary: it is kept without the secrets they may have echoed.
            store.record_run(started, RunSummary.model_validate_json(redact(summary.model_dump_json(), self._secrets)))
            store.close()
        return summary

    async def _read_libraries(self, store: Store, summary: RunSummary) -> None:
        """The readers' libraries first, so that what changed in them teaches this run's judging. A library that
        cannot be read, for whatever reason, costs that library and never the digest."""
        if not any(profile.library for profile in self.config.profiles):
            return
        from digest.taste.zotero import read_libraries

        try:
            summary.libraries = await read_libraries(self.config, store)
        except Exception as error:  # a bug: said in the summary, the traceback in the log with -v
            log.debug("library: internal error", exc_info=True)
            summary.warnings.append(
                f"the libraries were not read: internal error {error.__class__.__name__}; this is a bug in digest, "
                "please report it"
            )
        summary.warnings += [failure for outcome in summary.libraries if (failure := outcome.failure) is not None]

    def _missed_since(self, store: Store) -> dt.date | None:
        last = store.last_good_run()
        if last is not None and dt.datetime.now(dt.UTC) - last > MISSED_AFTER:
            log.info("catch up: the last good run was at %s; fetching what was announced since", last)
            return last.date()
        return None

    async def preview(self, min_score: int | None = None) -> list[tuple[Path, str]]:
        """Write each profile's digest to a file without sending it: the papers waiting for the next digest, or,
        when there are none, the latest recorded digest again. Verdicts come from the cache; papers without one
        for the profile's current prompt are classified (and cached for the run that follows). `min_score`
        shows what another threshold would give, at no cost: from the verdicts cached for the profile's current
        interests and ratings, with no LLM request. What a preview spends is recorded for `digest status`.
        Returns each file with a line about it."""
        summary = RunSummary(command="preview")
        started = dt.datetime.now(dt.UTC)
        store = Store(self.config.state)
        try:
            store.lock_for_run()  # it fetches and classifies: never beside a run on the same state
            fetched = await fetch_new(self.config, store)
            _add_fetched(summary, fetched)
            if fetched.nothing_read is not None:
                raise fetched.nothing_read
            shown: dict[str, tuple[dt.date, list[Paper]]] = {}
            for profile in self.config.profiles:
                papers = store.undigested_papers(profile.name)
                # After a 304 the feed says no date: the one it had when it was last read.
                announced = fetched.announced or dt.date.today()
                latest = store.latest_digest_date(profile.name)
                if not self._judge.in_scope(profile, papers) and latest is not None:
                    announced, papers = latest, store.papers_of_digest(profile.name, latest)
                shown[profile.name] = (announced, self._judge.in_scope(profile, papers))
            papers_of = {name: papers for name, (_, papers) in shown.items()}
            tastes = (await place_by_taste(self.config, store, papers_of, self._judge.in_scope)).by_profile
            if min_score is None:
                judged = await self._judge.classify(store, papers_of, tastes=tastes)
                _add_judged(summary, judged)
                if judged.interrupted is not None:
                    raise judged.interrupted
                verdicts = judged.verdicts
            else:  # another threshold only re-renders: what is not judged yet stays so
                verdicts, _, summary.profiles = self._judge.plan(store, papers_of, tastes)
            renderer = Renderer(self.config.output, Links.of(self.config, store))
            previews = []
            for profile in (with_learned_cut(store, p) for p in self.config.profiles):
                announced, papers = shown[profile.name]
                mine = verdicts[profile.name]

                unclassified = sum(p.key not in mine for p in papers)
                taste = taste_of(store, profile)
                digests = {
                    threshold: build_digest(
                        profile.model_copy(update={"min_score": threshold}),
                        announced,
                        self.config.categories_of(profile),
                        papers,
                        mine,
                        unclassified,
                        summary.usage,
                        summary.cost,
                        rated=len(taste.ratings),
                        liked_before={p.key for p in papers if taste.liked_before(p)},
                    )
                    for threshold in {profile.min_score, profile.min_score if min_score is None else min_score}
                }
                digest = digests[profile.min_score if min_score is None else min_score]
                note = f"{profile.name}: {paper_count(digest.relevant_count)} for you at min_score {digest.min_score}"
                if digest.min_score != profile.min_score:
                    usual = digests[profile.min_score].relevant_count
                    change = digest.relevant_count - usual
                    note += (
                        f", {abs(change)} {'more' if change >= 0 else 'fewer'} than at {profile.min_score} ({usual})"
                    )
                rendered = renderer.render(digest)
                body, suffix = (rendered.html, "html") if rendered.html is not None else (rendered.markdown, "md")
                path = self.config.output.outbox / profile.name / f"{announced.isoformat()}-preview.{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body or "", "utf-8")
                if unclassified and min_score is not None:
                    note += f"; {paper_count(unclassified)} not judged yet (a run, or a preview without --min-score)"
                previews.append((path, note))
            return previews
        finally:
            if summary.usage.requests:
                store.record_run(
                    started, RunSummary.model_validate_json(redact(summary.model_dump_json(), self._secrets))
                )
            store.close()


def _add_fetched(summary: RunSummary, fetched: Fetched) -> None:
    summary.announced = summary.announced or fetched.announced
    summary.sources.update(fetched.sources)
    summary.fetched = dict(Counter(summary.fetched) + Counter(fetched.by_type))
    summary.not_modified = summary.not_modified or fetched.not_modified
    summary.unreadable += fetched.unreadable
    summary.new_papers += fetched.new_papers
    summary.backfilled += fetched.backfilled
    summary.warnings += fetched.warnings
    summary.errors += fetched.errors


def _add_judged(summary: RunSummary, judged: Judged) -> None:
    summary.profiles = judged.profiles
    summary.usage, summary.cost, summary.live_cost = judged.usage, judged.cost, judged.live_cost
    summary.free = judged.free
    summary.batches = judged.batches
    summary.concurrency = judged.concurrency
    summary.warnings += judged.warnings


def _add_delivered(summary: RunSummary, delivered: Delivered) -> None:
    summary.deliveries_sent = delivered.sent
    summary.deliveries_pending = delivered.pending
    summary.deliveries_failed = delivered.failed
    summary.deliveries_uncertain = delivered.uncertain
    summary.destinations = delivered.destinations
    summary.warnings += delivered.warnings
    summary.errors += delivered.errors
    if delivered.problem is not None:
        summary.errors.append(str(delivered.problem))


def run_allowance_seconds(config: Config) -> float:
    """How long a run may take before it stops at a safe point: max_run_minutes, and in batch mode the wait for the
    batch (until llm.batch_deadline, or its 24 h) on top."""
    return config.max_run_minutes * 60 + batch_allowance_seconds(config.llm)


async def _stop_at(signalled: asyncio.Event, seconds: float, deadline: asyncio.Event, stop: asyncio.Event) -> None:
    """Set `stop` when `signalled` is set, or, setting `deadline` too, when `seconds` have passed."""
    try:
        await asyncio.wait_for(signalled.wait(), seconds)
    except TimeoutError:
        deadline.set()
    stop.set()


def _what_was_left(started: dt.datetime, stopped: RunSummary) -> str:
    """What a run stopped by a signal had not done, in words, for the summary of the run that does it."""
    left = sum(max(0, p.to_classify - p.classified - p.failed) for p in stopped.profiles)
    if not stopped.profiles:
        what = "before the feed was read"
    elif left:
        what = f"with {paper_count(left)} still to classify"
    else:
        what = "before its digests were recorded and sent"
    when = f"{started.astimezone():%Y-%m-%d %H:%M}"
    return f"the run started {when} was stopped by a signal {what}; this run did the rest"
