"""Which papers a profile's digest shows, and grouped how: what the reader's rules put in and what scores at least
min_score, best first, up to max_papers, in the groups the profile asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence

from digest.config import Profile
from digest.models import Digest, Entry, Paper, Usage, Verdict, best_first

OTHER_GROUP = "Also relevant"


AUTHOR_GROUP = "By authors you follow"


KEYWORD_GROUP = "Matching your keywords"


ALL_GROUP = "For you"
AUTO_GIVE = 2  # points a learned cut (min_score: auto) may come down on a day with nothing above it


def build_digest(
    profile: Profile,
    announced: dt.date,
    categories: list[str],
    papers: Iterable[Paper],
    verdicts: Mapping[str, Verdict],
    unclassified: int,
    usage: Usage,
    cost: float | None,
    *,
    rated: int = 0,
    liked_before: Collection[str] = (),
    unreadable: int = 0,
    unclassifiable: Sequence[Paper] = (),
    carried_over: int = 0,
) -> Digest:
    """Pick the papers the reader's rules put in and those scoring at least min_score, best first, up to
    max_papers, grouped as the profile asks (papers by followed authors and keyword matches first). `liked_before`:
    the keys of new versions of papers the reader liked, marked as such."""
    read = [p for p in papers if p.key in verdicts]
    cut = profile.min_score
    # A learned cut is no promise that a day has papers above it: it comes down, a point at a time (AUTO_GIVE at
    # most), until the day's best candidate is in, rather than leave the reader without a digest.
    while (
        profile.auto_min_score
        and cut > profile.min_score - AUTO_GIVE
        and not any(_selected(verdicts[p.key], cut) for p in read)
    ):
        cut -= 1
    if not any(_selected(verdicts[p.key], cut) for p in read):
        cut = profile.min_score
    chosen = sorted(
        (
            Entry(paper=p, verdict=verdicts[p.key], liked_before=p.key in liked_before)
            for p in read
            if _selected(verdicts[p.key], cut)
        ),
        key=best_first,
    )
    left_out = 0
    if profile.max_papers is not None and len(chosen) > profile.max_papers:
        left_out = len(chosen) - profile.max_papers
        chosen = chosen[: profile.max_papers]
    groups: dict[str, list[Entry]] = {}
    for entry in chosen:
        groups.setdefault(_group_of(entry, profile.group_by), []).append(entry)
    first = {AUTHOR_GROUP: 0, KEYWORD_GROUP: 1}
    ordered = sorted(
        groups.items(),
        key=lambda g: (first.get(g[0], 2), g[0] == OTHER_GROUP, -g[1][0].verdict.fused, g[0].lower()),
    )
    return Digest(
        profile=profile.name,
        grouped_by=profile.group_by,
        announced=announced,
        categories=categories,
        groups=ordered,
        papers_read=len(read),
        unclassified=unclassified,
        min_score=cut,
        left_out=left_out,
        usage=usage,
        cost=cost,
        rated=rated,
        unreadable=unreadable,
        carried_over=carried_over,
        unclassifiable=list(unclassifiable),
    )


def _selected(verdict: Verdict, min_score: int) -> bool:
    """min_score is the reader's knob: lowering it shows papers the LLM scored lower, whatever it called them; taste
    moves a score by up to the profile's taste_weight either way. A paper taste kept from the LLM is not picked."""
    if verdict.rule is not None:
        return verdict.rule not in ("excluded", "rated", "taste")
    return verdict.fused >= min_score


def _group_of(entry: Entry, group_by: str) -> str:
    if entry.verdict.rule == "author":
        return AUTHOR_GROUP
    if entry.verdict.rule == "keyword":
        return KEYWORD_GROUP
    if group_by == "category":
        return entry.paper.primary_category
    if group_by == "none":
        return ALL_GROUP
    interests = entry.verdict.matched_interests
    return interests[0].strip() if interests else OTHER_GROUP
