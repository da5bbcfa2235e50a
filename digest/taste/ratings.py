"""The reader's ratings: papers as readers paste them, the papers they name, and what the daily run makes of them.

A rating is about a paper, not one version of it. A rated paper is never shown again; a newer version of one the
reader liked may be, marked as such. The ratings, newest first, are the examples in the profile's prompt.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from digest.config import Config, Profile
from digest.errors import UsageError
from digest.models import RATING_WORDS, Paper, Rating, RatingSource, Verdict
from digest.sources import SOURCES, PaperRef, configured_sources, sources_for
from digest.state.store import Store
from digest.wording import either

__all__ = ["PaperRef", "Taste", "find_paper", "parse_paper", "parse_word", "pick_profile", "rate", "record", "resolve"]

WORDS = {"up": 1, "down": -1, "clear": 0}


def parse_paper(text: str) -> PaperRef:
    """A paper as a reader pastes it, in any of the forms its source takes: 2606.29563, arXiv:2606.29563v2, an
    arxiv.org link; a bioRxiv or medRxiv DOI (10.1101/2026.06.30.612345), or a link to its page."""
    for source in SOURCES:
        if (ref := source.pasted(text)) is not None:
            return ref
    labels = either([source.label for source in SOURCES])
    raise UsageError(
        f"'{text}' is not {'an' if labels[0].lower() in 'aeiou' else 'a'} {labels} paper",
        hint="give " + "; or ".join(source.pasted_forms for source in SOURCES),
    )


def find_paper(text: str) -> PaperRef | None:
    """The paper a longer text names where it says whose it is (an arXiv id after "arXiv:", a bioRxiv or medRxiv
    DOI, a link to a paper's page), if any: the one named first, and named most exactly there (a medrxiv.org link
    before the DOI it holds)."""
    found = [where for source in SOURCES if (where := source.mentioned(text)) is not None]
    return min(found, key=lambda where: (where.at, where.ref.source is None)).ref if found else None


def parse_word(word: str) -> int:
    """up -> 1, down -> -1, clear -> 0."""
    if word not in WORDS:
        raise UsageError(f"'{word}' is not a rating", hint="say up (more like this), down (not for me) or clear")
    return WORDS[word]


def pick_profile(config: Config, name: str | None) -> Profile:
    if name is None:
        if len(config.profiles) == 1:
            return config.profiles[0]
        raise UsageError(
            "there are several profiles; say which with --profile",
            hint=f"one of: {', '.join(p.name for p in config.profiles)}",
        )
    for profile in config.profiles:
        if profile.name == name:
            return profile
    names = [p.name for p in config.profiles]
    close = difflib.get_close_matches(name, names, n=1)
    raise UsageError(
        f"there is no profile '{name}' in the config",
        hint=f"did you mean '{close[0]}'?" if close else f"one of: {', '.join(names)}",
    )


async def resolve(config: Config, store: Store, refs: Iterable[PaperRef]) -> dict[PaperRef, Paper]:
    """The papers these refs name: from the state when it has them, else from their sources (arXiv's export API in
    one request per page of ids; bioRxiv's and medRxiv's API a request each). A ref with a version gets the paper at
    that version. Unknown papers are missing."""
    wanted = list(dict.fromkeys(refs))
    known = store.latest_papers(r.id for r in wanted)
    for source in configured_sources(config):
        missing = [r.id for r in wanted if r.id not in known and type(source) in sources_for(r)]
        if missing:
            known.update(await source.lookup(missing))
    found: dict[PaperRef, Paper] = {}
    for ref in wanted:
        paper = known.get(ref.id)
        if paper is not None:
            found[ref] = paper if ref.version is None else paper.model_copy(update={"version": ref.version})
    return found


async def rate(config: Config, store: Store, text: str, word: str, profile_name: str | None) -> str:
    """`digest rate`: record, change or clear one rating; returns what was done, in words."""
    ref, rating, profile = parse_paper(text), parse_word(word), pick_profile(config, profile_name)
    if rating == 0:
        if store.clear_rating(profile.name, ref.id):
            return f"cleared the rating of {ref.id} for profile {profile.name}"
        return f"{ref.id} had no rating for profile {profile.name}; nothing to clear"
    paper = (await resolve(config, store, [ref])).get(ref)
    if paper is None:
        candidates = sources_for(ref)
        asked = [source.label for source in configured_sources(config) if type(source) in candidates]
        if not asked:
            sections = " or ".join(f"{source.name}:" for source in candidates)
            raise UsageError(
                f"no source in the config takes {ref.id}",
                hint=f"it needs a {sections} section in config.yaml",
            )
        raise UsageError(
            f"{' nor '.join(asked)} does not know the paper {ref.id}",
            hint="check the id; copy it from the paper's page",
        )
    done = store.rate(profile.name, paper, rating, "cli")
    said = f"{RATING_WORDS[rating]}: {paper.id} {paper.title!r}"
    if done == "unchanged":
        return f"{said} (already rated so for profile {profile.name})"
    return f"{said} ({done} for profile {profile.name}; the next digest learns from it)"


def record(
    store: Store, profile: Profile, papers: Iterable[Paper], rating: int, source: RatingSource
) -> dict[str, int]:
    """Rate many papers at once; returns how many were added, changed and unchanged."""
    return store.rate_many(profile.name, ((paper, rating, None) for paper in papers), source)


class Taste:
    """What a profile's ratings mean for the daily run."""

    def __init__(self, ratings: list[Rating]) -> None:
        self.ratings = ratings  # newest first: the prompt's examples
        self._by_id = {r.paper.id: r for r in ratings}

    def decide(self, paper: Paper) -> Verdict | None:
        """A rated paper is decided already, and never shown again: the reader has seen it."""
        rating = self._by_id.get(paper.id)
        if rating is None or self.liked_before(paper):
            return None
        return Verdict(
            paper_key=paper.key,
            score=0,
            reason="You have rated this paper already.",
            matched_interests=[],
            rule="rated",
        )

    def liked_before(self, paper: Paper) -> bool:
        """A newer version of a paper the reader liked: worth a look again, and marked as such."""
        rating = self._by_id.get(paper.id)
        return rating is not None and rating.liked and paper.version > rating.paper.version
