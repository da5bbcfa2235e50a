"""The read side that `digest mcp` and the web side's JSON answer from, so that both say the same: the digests, the
archive, a paper with each profile's verdict and the reader's ratings, why a paper was or was not picked, and a
full-text search over every paper digest has seen.

Whatever a paper's source or the LLM wrote (titles, abstracts, authors, reasons, TL;DRs, matched interests) is a
field of its own, never part of digest's own sentences: whoever reads the answer gets it as data, not as
instructions. Nothing returned carries a key, a secret or a signed link. Every list has a limit.
"""

from __future__ import annotations

import datetime as dt
import re

from digest.agents.answers import (
    Archive,
    DigestAnswer,
    DigestListed,
    DigestPaper,
    Explanation,
    Found,
    PaperBrief,
    PaperDetail,
    PaperFull,
    ProfileRating,
    ProfileRules,
    ProfileVerdict,
    RatingName,
    SearchResults,
    Standing,
    VerdictFrom,
)
from digest.config import Config, Profile
from digest.errors import NotFoundError, UsageError
from digest.models import Digest, Entry, Paper, Verdict
from digest.pipeline.judge import Judge
from digest.render import Renderer
from digest.state.store import Store
from digest.taste.ratings import parse_paper, pick_profile

MAX_QUERY_CHARACTERS = 500
MAX_PHRASES = 16
MAX_LISTED = 100  # papers or digests in one answer
SEARCHED_AT_MOST = 500  # the best matches a search pages through: offset + limit stays within them
RATING_NAMES: dict[int, RatingName] = {1: "more", -1: "less"}


def phrases(query: str) -> list[list[str]]:
    """A reader's query as phrases to find: "words in quotes" are one, every other word is one of its own. Nothing
    else means anything: FTS5's operators, brackets and stray quotes are only text."""
    if len(query) > MAX_QUERY_CHARACTERS:
        raise UsageError(
            f"the query is {len(query):,} characters long; at most {MAX_QUERY_CHARACTERS} are searched",
            hint="search for a few words of a title or an abstract, or an author's name",
        )
    found = [words for quoted, word in re.findall(r'"([^"]*)"|([^"\s]+)', query) if (words := _words(quoted or word))]
    if not found:
        raise UsageError(
            "the query has no words to search for", hint="give words of a title or an abstract, or an author's name"
        )
    if len(found) > MAX_PHRASES:
        raise UsageError(f"the query has {len(found)} words or phrases; at most {MAX_PHRASES}", hint="use fewer")
    return found


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _page(offset: int, limit: int, total: int) -> int | None:
    return offset + limit if offset + limit < total else None


def _bounded(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LISTED:
        raise UsageError(f"limit {limit} is out of range", hint=f"ask for 1 to {MAX_LISTED}")
    if offset < 0:
        raise UsageError(f"offset {offset} is negative", hint="start at 0, then give the answer's next_offset")


class Reader:
    """Answers from the state file, each call in a store of its own (`digest run` may be writing beside it)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._judge = Judge(config)

    def profile(self, name: str | None) -> Profile:
        """The named profile; or, when the config has one, that one."""
        if name is None and len(self.config.profiles) > 1:
            raise UsageError(
                "there are several profiles; say which",
                hint=f"name one of: {', '.join(p.name for p in self.config.profiles)}",
            )
        return pick_profile(self.config, name)

    def latest_digest(self, profile_name: str | None, limit: int = 50, offset: int = 0) -> DigestAnswer:
        profile = self.profile(profile_name)
        with Store(self.config.state) as store:
            dates = store.digest_dates(profile.name)
        if not dates:
            raise NotFoundError(
                f"profile {profile.name} has no digest yet", hint="the first `digest run` (or `digest serve`) makes one"
            )
        return self.digest(profile.name, dates[0], limit, offset)

    def digest(self, profile_name: str | None, day: dt.date, limit: int = 50, offset: int = 0) -> DigestAnswer:
        _bounded(limit, offset)
        digest = self._recorded(self.profile(profile_name), day)
        listed = [(group, entry) for group, entries in digest.groups for entry in entries]
        return DigestAnswer(
            profile=digest.profile,
            date=digest.announced,
            since=digest.since,
            sources=digest.sources,
            categories=digest.categories,
            papers_read=digest.papers_read,
            papers_shown=digest.relevant_count,
            min_score=digest.min_score,
            left_out_by_max_papers=digest.left_out,
            not_yet_classified=digest.unclassified + digest.carried_over,
            papers=[_digest_paper(group, entry) for group, entry in listed[offset : offset + limit]],
            offset=offset,
            next_offset=_page(offset, limit, len(listed)),
        )

    def digest_markdown(self, profile_name: str, day: dt.date) -> str:
        """A digest as its Markdown email part reads, without rating or archive links (they carry signatures)."""
        digest = self._recorded(self.profile(profile_name), day)
        markdown = Renderer(self.config.output.model_copy(update={"format": "markdown"})).render(digest).markdown
        assert markdown is not None  # asked for
        return markdown

    def _recorded(self, profile: Profile, day: dt.date) -> Digest:
        with Store(self.config.state) as store:
            found = store.digest_content(profile.name, day)
        if found is None:
            raise NotFoundError(f"profile {profile.name} has no digest of {day}", hint="list the digests there are")
        return found.content

    def recent_digests(self, most: int) -> list[tuple[str, dt.date]]:
        """Each profile's newest `most` digests, as (profile, date)."""
        with Store(self.config.state) as store:
            return [(p.name, day) for p in self.config.profiles for day in store.digest_dates(p.name)[:most]]

    def archive(self, profile_name: str | None, limit: int = 20, offset: int = 0) -> Archive:
        profile = self.profile(profile_name)
        _bounded(limit, offset)
        with Store(self.config.state) as store:
            dates = store.digest_dates(profile.name)
            recorded = [store.digest_content(profile.name, day) for day in dates[offset : offset + limit]]
        return Archive(
            profile=profile.name,
            digests=[
                DigestListed(date=d.announced, since=d.since, papers_read=d.papers_read, papers_shown=d.relevant_count)
                for d in (found.content for found in recorded if found is not None)
            ],
            offset=offset,
            next_offset=_page(offset, limit, len(dates)),
        )

    def search(
        self,
        query: str,
        *,
        profile_name: str | None = None,
        since: dt.date | None = None,
        min_score: int | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> SearchResults:
        """Papers holding every word or phrase of the query, best first, with the verdicts of the named profile (of
        every profile when none is named); with `min_score`, only those it scored at least that (any profile, when
        none is named)."""
        wanted = phrases(query)
        profiles = [self.profile(profile_name)] if profile_name is not None else self.config.profiles
        _bounded(limit, offset)
        if offset + limit > SEARCHED_AT_MOST:
            raise UsageError(
                f"a search lists its best {SEARCHED_AT_MOST} matches at most", hint="narrow the query instead"
            )
        with Store(self.config.state) as store:
            ids, unranked = store.search_papers(wanted, since=since, most=SEARCHED_AT_MOST)
            if min_score is None:
                ids, more = ids[offset : offset + limit], len(ids) > offset + limit
                found = self._found(store, profiles, ids)
            else:
                found, more = self._scoring(store, profiles, ids, min_score, limit, offset)
        return SearchResults(
            query=query,
            phrases=[" ".join(words) for words in wanted],
            papers=found,
            offset=offset,
            next_offset=offset + limit if more else None,
            older_matches_unranked=unranked,
        )

    def _scoring(
        self, store: Store, profiles: list[Profile], ids: list[str], min_score: int, limit: int, offset: int
    ) -> tuple[list[Found], bool]:
        """The matches, best first, that a profile scored at least `min_score`: judged a page at a time, until the
        page asked for and one more are found. Judging a paper may read its digest; so those the verdict cache
        scores lower under every prompt and profile are left out first (one with no cached verdict, ruled or not
        judged yet, is judged), and most of the rest pass."""
        best = store.best_cached_scores(ids)
        maybe = [i for i in ids if best.get(i, min_score) >= min_score]
        passing: list[Found] = []
        for start in range(0, len(maybe), limit + 1):
            found = self._found(store, profiles, maybe[start : start + limit + 1])
            passing += [f for f in found if any(v.score is not None and v.score >= min_score for v in f.verdicts)]
            if len(passing) > offset + limit:
                break
        return passing[offset : offset + limit], len(passing) > offset + limit

    def _found(self, store: Store, profiles: list[Profile], ids: list[str]) -> list[Found]:
        papers = store.latest_papers(ids)
        listed = [papers[i] for i in ids if i in papers]
        verdicts = self._verdicts(store, profiles, listed)
        return [Found.of(p, verdicts=[verdicts[q.name][p.key] for q in profiles]) for p in listed]

    def paper(self, text: str, profile_name: str | None = None) -> PaperDetail:
        """One paper, by id, DOI or link, with the named profile's verdict and rating (every profile's when none is
        named)."""
        profiles = [self.profile(profile_name)] if profile_name is not None else self.config.profiles
        with Store(self.config.state) as store:
            paper = self._stored(store, text)
            verdicts = self._verdicts(store, profiles, [paper])
            ratings = [
                ProfileRating(profile=r.profile, rating=RATING_NAMES[r.rating], rated_at=r.rated_at)
                for p in profiles
                for r in store.ratings(p.name)
                if r.paper.id == paper.id
            ]
        return PaperDetail(
            paper=PaperFull.of(paper, abstract=paper.abstract),
            verdicts=[verdicts[p.name][paper.key] for p in profiles],
            ratings=ratings,
        )

    def explain(self, text: str, profile_name: str | None) -> Explanation:
        """Why the profile's digest shows the paper, or does not: its verdict, the reader's rules, and the cut."""
        profile = self.profile(profile_name)
        with Store(self.config.state) as store:
            paper = self._stored(store, text)
            verdict = self._verdicts(store, [profile], [paper])[profile.name][paper.key]
            rating = store.rating_of(profile.name, paper.id)
        return Explanation(
            paper=PaperBrief.of(paper),
            verdict=verdict,
            why=_why(verdict, profile, self.config.categories_of(profile)),
            min_score=profile.min_score,
            max_papers=profile.max_papers,
            rules=ProfileRules(
                follow_authors=profile.follow_authors, must_include=profile.must_include, exclude=profile.exclude
            ),
            rating=RATING_NAMES.get(rating),
        )

    def _stored(self, store: Store, text: str) -> Paper:
        ref = parse_paper(text)
        paper = store.latest_papers([ref.id]).get(ref.id)
        if paper is None:
            raise NotFoundError(
                f"digest has not seen the paper {ref.id}",
                hint="it knows the papers its runs fetched and those rated; search_papers finds them by their words",
            )
        return paper

    def _verdicts(
        self, store: Store, profiles: list[Profile], papers: list[Paper]
    ) -> dict[str, dict[str, ProfileVerdict]]:
        """Each profile's verdict on each paper, by profile and paper key: as its digest showed it; else as the next
        run would decide it now (the reader's rating or rules, the cached verdict under the profile's current
        instructions); else, when the config has one profile, the model's last verdict on it (every cached verdict
        is that profile's)."""
        decided, _, _ = self._judge.plan(store, {p.name: papers for p in self.config.profiles})
        before = store.newest_verdicts(p.key for p in papers) if len(self.config.profiles) == 1 else {}
        answers: dict[str, dict[str, ProfileVerdict]] = {}
        for profile in profiles:
            holding = store.digests_holding(profile.name, (p.key for p in papers))
            recorded = [store.digest_content(profile.name, day) for day in set(holding.values())]
            digests = [found.content for found in recorded if found is not None]
            shown = {entry.paper.key: entry for digest in digests for entry in digest.entries}
            # Shown as they are, for the reader to judge: the LLM failed on them run after run.
            unjudged = {paper.key for digest in digests for paper in digest.unclassifiable}
            in_scope = {p.key for p in self._judge.in_scope(profile, papers)}
            mine = answers[profile.name] = {}
            for paper in papers:
                day = holding.get(paper.key)
                if paper.key in shown:
                    mine[paper.key] = _verdict(profile, "shown", day, shown[paper.key].verdict, "digest")
                elif paper.key in unjudged:
                    mine[paper.key] = ProfileVerdict(profile=profile.name, standing="shown", digest=day)
                elif paper.key not in in_scope:
                    mine[paper.key] = ProfileVerdict(profile=profile.name, standing="outside")
                else:
                    standing: Standing = "waiting" if day is None else "left_out"
                    if (verdict := decided[profile.name].get(paper.key)) is not None:
                        mine[paper.key] = _verdict(profile, standing, day, verdict, "rule" if verdict.rule else "model")
                    elif (verdict := before.get(paper.key)) is not None:
                        mine[paper.key] = _verdict(profile, standing, day, verdict, "model_before")
                    else:
                        mine[paper.key] = ProfileVerdict(profile=profile.name, standing=standing, digest=day)
        return answers


def _verdict(
    profile: Profile, standing: Standing, day: dt.date | None, verdict: Verdict, source: VerdictFrom
) -> ProfileVerdict:
    return ProfileVerdict(
        profile=profile.name,
        standing=standing,
        digest=day,
        score=verdict.score,
        verdict_from=source,
        rule=verdict.rule,
        reason=verdict.reason,
        matched_interests=verdict.matched_interests,
        tldr=verdict.tldr,
    )


def _digest_paper(group: str, entry: Entry) -> DigestPaper:
    verdict = entry.verdict
    return DigestPaper(
        paper=PaperBrief.of(entry.paper),
        group=group,
        score=verdict.score,
        rule=verdict.rule,
        reason=verdict.reason,
        matched_interests=verdict.matched_interests,
        tldr=verdict.tldr,
        new_version_of_a_liked_paper=entry.liked_before,
    )


def _why(verdict: ProfileVerdict, profile: Profile, categories: list[str]) -> str:
    """digest's own words: figures, dates and the reader's own rules, never a word of the paper's or the LLM's."""
    if verdict.standing == "outside":
        return f"Not in profile {profile.name}'s categories ({', '.join(categories)}): never judged for it."
    where = {
        "shown": f"In the digest of {verdict.digest}",
        "left_out": f"Read for the digest of {verdict.digest} and left out",
        "waiting": "In no digest yet",
    }[verdict.standing]
    # A rule's matched "interest" is the reader's own followed author or keyword, from config.yaml.
    ruled = verdict.matched_interests[0] if verdict.rule is not None and verdict.matched_interests else ""
    cut = f"min_score {profile.min_score}"
    if verdict.rule == "author":
        cause = f"it is by an author you follow ({ruled})"
    elif verdict.rule == "keyword":
        cause = f"it matches your keyword '{ruled}'"
    elif verdict.rule == "excluded":
        cause = f"it matches '{ruled}', which you exclude"
    elif verdict.rule == "rated":
        cause = "you have rated it already, and a rated paper is not shown again"
    elif verdict.score is None:
        cause = {
            "shown": "the model failed on it run after run, so it is listed unjudged, for you to judge",
            "left_out": "there is no verdict on it under the profile's current instructions",
            "waiting": "the model has not judged it yet: the next run asks",
        }[verdict.standing]
    else:
        earlier = " (before the profile's instructions last changed)" if verdict.verdict_from == "model_before" else ""
        makes = verdict.score >= profile.min_score
        cause = f"the model scored it {verdict.score}{earlier}, {'at least' if makes else 'below'} {cut}"
        if verdict.standing == "left_out" and makes:
            cause += "; the digest was cut at max_papers, or min_score was higher then"
        elif verdict.standing == "waiting":
            cause += "; the next digest " + ("shows it" if makes else "leaves it out")
    return f"{where}: {cause}."
