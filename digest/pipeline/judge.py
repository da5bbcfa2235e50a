"""Each profile's verdict on each paper: by the reader's ratings and rules first (free), then from the cache, and
only then from the LLM, live or through the Batch API; failures recorded, and what was learned of the server kept
for the next run."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from digest.config import Config, Profile
from digest.llm.answers import Outcome
from digest.llm.batch import BatchClassifier
from digest.llm.facts import MEASURED_AFTER, load_facts, save_facts
from digest.llm.live import Classifier
from digest.llm.prices import charges_nothing, estimate_cost, live_cost
from digest.llm.prompt import PROMPT_VERSION, system_prompt
from digest.llm.requests import Job
from digest.llm.tally import Tally
from digest.models import DayTaste, Failure, OnProgress, Paper, ProfileSummary, Usage, Verdict
from digest.secrets import redact
from digest.state.store import Store
from digest.taste.ratings import Taste
from digest.taste.rules import Rules

log = logging.getLogger(__name__)


@dataclass
class Judged:
    """Every verdict, by profile, and what judging took, for the run's summary."""

    verdicts: dict[str, dict[str, Verdict]]
    profiles: list[ProfileSummary]  # per profile: how many were judged, and how
    usage: Usage
    cost: float | None  # None: the model's price is not known
    free: bool  # a local server, or a price of 0: nothing is charged
    live_cost: float | None = None  # what the same tokens would have cost live, when some went in a batch
    batches: list[str] = field(default_factory=list)  # what each Batch API batch came to
    concurrency: str | None = None  # requests in flight: what the run settled on, in words
    warnings: list[str] = field(default_factory=list)
    # What ended the judging before every paper had its verdict (an error to report, a signal, a bug): the caller
    # raises it once it has taken in what was done.
    interrupted: Exception | None = None


class Judge:
    def __init__(
        self, config: Config, *, on_progress: OnProgress | None = None, on_note: Callable[[str], None] | None = None
    ) -> None:
        """`on_progress`: the classification's figures as it goes; `on_note`: a batch's progress, which may take
        hours, in lines (the log when not given)."""
        self.config = config
        self._secrets = config.secrets
        self._on_progress = on_progress
        self._report = on_note or (lambda line: log.info("%s", line))

    def in_scope(self, profile: Profile, papers: list[Paper]) -> list[Paper]:
        """The papers in the profile's own categories (all of them when it follows the global ones)."""
        mine = set(self.config.categories_of(profile))
        return [p for p in papers if mine.intersection(p.categories)]

    def plan(
        self, store: Store | None, papers_of: dict[str, list[Paper]], tastes: Mapping[str, DayTaste] | None = None
    ) -> tuple[dict[str, dict[str, Verdict]], list[Job], list[ProfileSummary]]:
        """Per profile: the papers in its categories, decided by its ratings or rules, found in the cache, left to
        ask, or, below the share of the day the LLM reads (by taste), judged by taste alone."""
        verdicts: dict[str, dict[str, Verdict]] = {}
        jobs: list[Job] = []
        summaries = []
        for profile in self.config.profiles:
            papers = self.in_scope(profile, papers_of[profile.name])
            taste = taste_of(store, profile)
            rules = Rules(profile.follow_authors, profile.must_include, profile.exclude)
            # Ratings and rules decide for free and are never cached: a change decides again at once.
            ruled = {p.key: v for p in papers if (v := taste.decide(p) or rules.decide(p)) is not None}
            undecided = [p for p in papers if p.key not in ruled]
            instructions = system_prompt(profile, taste.ratings)
            cached = (
                store.cached_verdicts((p.key for p in undecided), instructions, self.config.llm.model, PROMPT_VERSION)
                if store is not None
                else {}
            )
            day = (tastes or {}).get(profile.name)
            unread: set[str] = set()
            by_taste: dict[str, Verdict] = {}
            if day is not None:
                unread = _beyond_share(profile, papers, day)
                by_taste = {p.key: _taste_verdict(p, day) for p in undecided if p.key in unread and p.key not in cached}
            mine = {**cached, **by_taste, **ruled}
            verdicts[profile.name] = {key: _placed(v, profile, day) for key, v in mine.items()}
            todo = [Job(profile, p, instructions) for p in undecided if p.key not in cached and p.key not in unread]
            jobs += todo
            summaries.append(
                ProfileSummary(
                    name=profile.name,
                    to_classify=len(todo),
                    cached=len(cached),
                    ruled=len(ruled),
                    by_taste=len(by_taste),
                )
            )
        return verdicts, jobs, summaries

    async def classify(
        self,
        store: Store,
        papers_of: dict[str, list[Paper]],
        stop: asyncio.Event | None = None,
        *,
        batch_from: dt.datetime | None = None,
        tastes: Mapping[str, DayTaste] | None = None,
    ) -> Judged:
        """Classify each profile's papers that have no cached verdict; return every verdict, by profile, with what
        judging took. `batch_from`: when the run started, for a run that may use the Batch API (llm.mode: batch)."""
        verdicts, jobs, profiles = self.plan(store, papers_of, tastes)
        llm = self.config.llm
        judged = Judged(verdicts, profiles, Usage(), estimate_cost(Usage(), llm), charges_nothing(llm))
        by_name = {s.name: s for s in profiles}

        def record(job: Job, outcome: Outcome) -> None:
            name = job.profile.name
            if isinstance(outcome, Failure):
                store.save_failure(outcome.model_copy(update={"reason": redact(outcome.reason, self._secrets)}), name)
                by_name[name].failed += 1
                log.warning("could not classify %s for %s: %s", job.paper.key, name, outcome.reason)
                return
            store.save_verdict(outcome, name, job.instructions, self.config.llm.model, PROMPT_VERSION)
            day = (tastes or {}).get(name)
            verdicts[name][outcome.paper_key] = _placed(outcome, job.profile, day)
            by_name[name].classified += 1

        if not jobs:
            return judged
        clock = time.monotonic()
        live = Classifier(self.config.llm, facts=load_facts(store, self.config.llm))
        classifier: Classifier | BatchClassifier = live
        if batch_from is not None and self.config.llm.mode == "batch":
            classifier = BatchClassifier(self.config, store, live, started=batch_from, report=self._report)
        elif batch_from is not None and store.open_batches():
            # Batches an earlier run in batch mode left open are paid for: what they finished is kept.
            classifier = BatchClassifier(
                self.config, store, live, started=batch_from, report=self._report, resume_only=True
            )
        progress = Tally(len(jobs), self.config.llm, self._on_progress)
        try:
            await classifier.classify(jobs, record, progress, stop=stop)
        except Exception as error:
            judged.interrupted = error
        finally:
            judged.usage = classifier.usage
            judged.cost = estimate_cost(classifier.usage, llm)
            if classifier.usage.batch_requests:
                judged.live_cost = live_cost(classifier.usage, llm)
            if isinstance(classifier, BatchClassifier):
                judged.batches, judged.warnings = classifier.notes, classifier.warnings
            progress.finish(classifier.usage)
            await classifier.close()
            judged.concurrency = live.capacity.describe()
            answered = sum(s.classified + s.failed for s in profiles)
            self._remember(store, live, answered, time.monotonic() - clock)
        log.info(
            "classify: %d of %d papers in %.2f s, %d requests, %d failed; in flight: %s",
            sum(s.classified + s.failed for s in profiles),
            len(jobs),
            time.monotonic() - clock,
            classifier.usage.requests,
            sum(s.failed for s in profiles),
            judged.concurrency or "none",
        )
        return judged

    def _remember(self, store: Store, live: Classifier, answered: int, seconds: float) -> None:
        """What this run learned of the server, for the next: the form it took, its speed, its concurrency."""
        facts = live.facts
        if answered >= MEASURED_AFTER and not live.usage.batch_requests:
            settled = live.capacity.sent_at.most_common(1)[0][0] if live.capacity.adaptive else None
            facts = facts.model_copy(update={"answers_per_second": answered / seconds, "concurrency": settled})
        save_facts(store, self.config.llm, facts)


def _beyond_share(profile: Profile, papers: list[Paper], day: DayTaste) -> set[str]:
    """The keys of the papers below the share of the day the LLM reads, by taste (none when it reads them all)."""
    read = math.ceil(profile.judge_share * len(papers))
    ranked = sorted(papers, key=lambda p: day.place.get(p.key, 1.0), reverse=True)
    return {p.key for p in ranked[read:]}


def _taste_verdict(paper: Paper, day: DayTaste) -> Verdict:
    place = day.place.get(paper.key, 0.0)
    return Verdict(
        paper_key=paper.key,
        score=round(10 * place),
        reason=f"Not asked of the LLM: by your {'ratings and ' if day.trained else ''}interests it ranked below "
        f"{100 * (1 - place):.0f}% of the day's papers.",
        matched_interests=[],
        rule="taste",
    )


def _placed(verdict: Verdict, profile: Profile, day: DayTaste | None) -> Verdict:
    """The verdict with the paper's place by taste for this run, when there is one."""
    if day is None or verdict.paper_key not in day.place:
        return verdict
    return verdict.model_copy(
        update={
            "taste": day.place[verdict.paper_key],
            "taste_weight": profile.taste_weight,
            "close_to": day.close_to.get(verdict.paper_key),
        }
    )


def taste_of(store: Store | None, profile: Profile) -> Taste:
    return Taste(store.ratings(profile.name) if store is not None else [])
