"""Each profile's digest, recorded: which papers it accounts for, what it says, and one pending delivery per
destination, in one transaction. Daily, of the papers waiting; weekly, on the profile's weekday, of the papers
announced before it (the week's best, up to max_papers), while the other days' runs fetch and judge as they come.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from digest.channels import destinations
from digest.channels.message import build_message, new_message_id
from digest.config import Config, Profile
from digest.config.profiles import WEEKDAYS
from digest.models import Paper, Usage, Verdict
from digest.pipeline.judge import Judge, taste_of
from digest.pipeline.select import build_digest
from digest.render import Renderer
from digest.sources import SOURCES
from digest.state.store import Store
from digest.taste.evaluate import with_learned_cut
from digest.wording import paper_count

RETIRE_AFTER_RUNS = 3  # a paper the LLM failed on in this many runs goes into the digest unjudged, and is retired


def digest_day(profile: Profile, announced: dt.date, latest: dt.date | None) -> dt.date | None:
    """The date the profile's digest is recorded under by a run of the feed of `announced`, or None when none is
    due: that date for a daily profile; for a weekly one, its latest weekday on or before that date, unless a
    digest has been recorded since (so a missed weekday is made up by the next run, and a week has one digest)."""
    if profile.cadence == "daily":
        return announced
    day = announced - dt.timedelta(days=(announced.weekday() - WEEKDAYS.index(profile.weekday)) % 7)
    return day if latest is None or latest < day else None


@dataclass(frozen=True)
class Recorded:
    """What came of one profile's digest in a run."""

    said: str  # in words: recorded (of how many, for when), already recorded, not due, nothing to say
    relevant: int = 0  # papers it shows as relevant


class Composer:
    """`usage`, `cost`: what this run's judging spent, which its digests say; `unreadable`: the feed's items that
    could not be read."""

    def __init__(
        self,
        config: Config,
        judge: Judge,
        store: Store,
        renderer: Renderer,
        *,
        usage: Usage,
        cost: float | None,
        unreadable: int,
    ) -> None:
        self._config = config
        self._judge = judge
        self._store = store
        self._renderer = renderer
        self._usage = usage
        self._cost = cost
        self._unreadable = unreadable

    def record(
        self, profile: Profile, announced: dt.date, papers: list[Paper], verdicts: dict[str, dict[str, Verdict]]
    ) -> Recorded:
        store = self._store
        latest = store.latest_digest_date(profile.name)
        day = digest_day(profile, announced, latest)
        if day is None:
            assert latest is not None
            waiting = len(self._judge.in_scope(profile, papers))
            return Recorded(
                f"weekly, on {profile.weekday.capitalize()}s: {paper_count(waiting)} wait for the digest of "
                f"{latest + dt.timedelta(days=7 - (latest.weekday() - WEEKDAYS.index(profile.weekday)) % 7)}"
            )
        weekly = profile.cadence == "weekly"
        if weekly:  # the week before the digest's day; that day's papers are the next week's
            papers = [p for p in papers if p.announced < day]
        mine = verdicts[profile.name]
        in_scope = self._judge.in_scope(profile, papers)
        classified = [p for p in in_scope if p.key in mine]
        # A paper the LLM failed on in RETIRE_AFTER_RUNS runs is shown as it is, for the reader to judge, and retired.
        attempts = store.failure_attempts(profile.name, [p.key for p in in_scope if p.key not in mine])
        given_up = [p for p in in_scope if attempts.get(p.key, 0) >= RETIRE_AFTER_RUNS]
        # Without a verdict and never failed: not reached before max_run_minutes. They stay undigested.
        carried_over = sum(1 for p in in_scope if p.key not in mine and p.key not in attempts)
        unclassified = len(in_scope) - len(classified) - len(given_up) - carried_over
        if store.has_digest(profile.name, day):
            queued = f"; {paper_count(len(classified))} wait for the next digest" if classified else ""
            return Recorded(f"already recorded for {day}{queued}")
        if not classified and not given_up and not profile.send_empty:
            nothing = not unclassified and not carried_over
            return Recorded("nothing new: no digest" if nothing else "none: nothing classified")
        taste = taste_of(store, profile)
        profile = with_learned_cut(store, profile)
        usage, cost = self._usage, self._cost
        if weekly:  # what the week's runs spent on its papers, this one included
            recorded = store.digest_content(profile.name, latest) if latest is not None else None
            usage, spent = store.spent_since(recorded.recorded_at if recorded is not None else None)
            usage.add(self._usage)
            cost = None if spent is None or self._cost is None else spent + self._cost
        digest = build_digest(
            profile,
            day,
            self._config.categories_of(profile),
            classified,
            mine,
            unclassified,
            usage,
            cost,
            rated=len(taste.ratings),
            liked_before={p.key for p in classified if taste.liked_before(p)},
            unreadable=self._unreadable,
            unclassifiable=given_up,
            carried_over=carried_over,
        )
        read = {p.source for p in classified + given_up}
        update: dict[str, object] = {"sources": [s.label for s in SOURCES if s.label in read] or ["arXiv"]}
        if weekly:
            update["since"] = min((p.announced for p in in_scope), default=day - dt.timedelta(days=7))
        digest = digest.model_copy(update=update)
        rendered = self._renderer.render(digest)
        message = build_message(rendered, self._config.email.from_)
        send = digest.relevant_count > 0 or bool(given_up) or profile.send_empty
        # Papers outside the profile's categories are retired with this digest, so they are not looked at again.
        scope = {p.key for p in in_scope}  # by key: comparing papers to papers is quadratic in a catch-up's thousands
        outside = [p.key for p in papers if p.key not in scope]
        store.record_digest(
            profile.name,
            day,
            rendered.subject,
            message.as_bytes(),
            [p.key for p in classified + given_up] + outside,
            {r: new_message_id(self._config.email.from_) for r in destinations(profile, self._config)} if send else {},
            content=digest,
        )
        when = f"the week to {day - dt.timedelta(days=1)}" if weekly else str(day)
        said = f"{digest.relevant_count} of {paper_count(len(classified))} for {when}"
        if carried_over:
            said += f"; {carried_over} still to judge, for the next digest"
        if not send:
            said += ": nothing relevant, nothing sent (send_empty: true sends one)"
        return Recorded(said, digest.relevant_count)
