"""The plain data the pipeline's stages pass to one another."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from digest.wording import UNSAFE_CHARACTERS

AnnounceType = Literal["new", "cross", "replace", "replace-cross"]
# A followed author, a must_include keyword, an exclude keyword; or a paper the reader has rated already.
# "taste": not asked of the LLM, its place by taste being below the share of the day the LLM reads.
Rule = Literal["author", "keyword", "excluded", "rated", "taste"]
RatingSource = Literal["cli", "import", "web", "zotero"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Paper(Frozen):
    """One announced paper, as its source wrote it: everything in it is untrusted text. Where it came from is its
    source's name and its links; nothing else in the pipeline knows or asks."""

    # Without version: 2606.28354, or a DOI (10.1101/2026.06.30.612345). Stored states say arxiv_id.
    id: Annotated[str, Field(validation_alias=AliasChoices("id", "arxiv_id"))]
    version: int
    title: str
    authors: list[str]
    abstract: str
    categories: list[str]  # primary first
    announce_type: AnnounceType
    announced: dt.date
    source: str = "arXiv"  # the source's name, as readers know it: arXiv, bioRxiv, medRxiv
    # Its pages, as its source links them; arXiv's are made from the id (papers stored before had none).
    links: PaperLinks | None = None

    @property
    def key(self) -> str:
        """The paper at this version: what verdicts and digests refer to."""
        return f"{self.id}v{self.version}"

    @property
    def primary_category(self) -> str:
        return self.categories[0] if self.categories else ""

    @property
    def abs_url(self) -> str:
        return self.links.abstract if self.links is not None else f"https://arxiv.org/abs/{self.id}"

    @property
    def pdf_url(self) -> str:
        return self.links.pdf if self.links is not None else f"https://arxiv.org/pdf/{self.key}"

    @property
    def html_url(self) -> str | None:
        """The full text as a web page, where the source has one."""
        return self.links.html if self.links is not None else f"https://arxiv.org/html/{self.key}"

    @property
    def anchor(self) -> str:
        """The paper's fragment id on a page (old-style arXiv ids and DOIs have a slash)."""
        return anchor(self.id)


class PaperLinks(Frozen):
    abstract: str
    pdf: str
    html: str | None = None


def anchor(paper_id: str) -> str:
    return "p-" + paper_id.replace("/", "-")


class Feed(Frozen):
    """What one fetch of the announcement feed brought."""

    url: str
    announced: dt.date | None  # the channel's pubDate; None when the server said 304 Not Modified
    papers: list[Paper]
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
    skipped: dict[str, int] = {}  # announce types left out by the config, with their counts
    unreadable: list[str] = []  # items that were not papers (a malformed guid, say), left out: what was wrong
    source: str = "arXiv"
    requests: int = 0  # made to the source for it, retries included
    notes: list[str] = []  # what the reader should know of this fetch: an empty day, a gap
    stale: bool = False  # dated no later than the last fetch: nothing announced since
    # One day's announcement (arXiv's feed): a paper announced new in it was never announced before, so a feed whose
    # new papers were all seen before is an earlier day's under a new date. A listing read again from its last day
    # (bioRxiv's) is not.
    one_day: bool = False

    def count_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for paper in self.papers:
            counts[paper.announce_type] = counts.get(paper.announce_type, 0) + 1
        return counts


def _cut(limit: int) -> BeforeValidator:
    """Control characters out, and longer text cut to `limit`, before it is checked: the schema asks for less, and
    the code holds to it."""
    return BeforeValidator(lambda value: UNSAFE_CHARACTERS.sub("", value)[:limit] if isinstance(value, str) else value)


MAX_INTERESTS = 8


class Judgement(BaseModel):
    """The LLM's answer for one paper; its JSON schema is what the model is asked to produce. Lengths and counts
    are bounded in the schema, and cut to the bounds here whatever the model sends: it does not decide the digest's
    size."""

    model_config = ConfigDict(extra="forbid")

    # The reason comes first: a model that writes why before it scores scores more consistently.
    reason: Annotated[
        str,
        _cut(400),
        Field(
            min_length=1,
            max_length=400,
            description="One sentence to the reader on why it does or does not match.",
        ),
    ]
    score: Annotated[
        int, Field(ge=0, le=10, description="0 = unrelated, 10 = exactly what the reader works on; 6+ to read it.")
    ]
    matched_interests: Annotated[
        list[Annotated[str, _cut(120), Field(max_length=120)]],
        BeforeValidator(lambda value: value[:MAX_INTERESTS] if isinstance(value, list) else value),
        Field(
            max_length=MAX_INTERESTS,
            description="The reader's interests this paper matches, in the reader's own words; empty if none.",
        ),
    ]


class JudgementWithTLDR(Judgement):
    tldr: Annotated[
        str,
        _cut(300),
        Field(min_length=1, max_length=300, description="One plain-language sentence: what the paper does."),
    ]


class Verdict(Frozen):
    paper_key: str
    score: int  # the one measure of relevance: a profile's min_score decides what is in its digest
    reason: str
    matched_interests: list[str]
    tldr: str | None = None
    rule: Rule | None = None  # set when one of the reader's rules decided, not the LLM (see rules.py)
    # The paper's place among the day's papers by the reader's taste, from 0 to 1 (None without embeddings), how
    # far that may move the LLM's score (the profile's taste_weight), and the title of a paper the reader liked
    # that it is close to. Set for the run, never cached with the verdict: taste changes with every rating.
    taste: float | None = None
    taste_weight: float = 0.0
    close_to: str | None = None

    @property
    def fused(self) -> float:
        """What a digest is cut and ordered by: the LLM's score, moved up to taste_weight points up for the day's
        closest paper and down for the farthest. A rule's verdict is the rule's."""
        if self.taste is None or self.rule is not None:
            return float(self.score)
        return self.score + self.taste_weight * (2 * self.taste - 1)


class DayTaste(Frozen):
    """One profile's papers of the day by taste: each one's place (0 the farthest, 1 the closest), and the liked
    paper it is close to, if any."""

    place: dict[str, float]
    close_to: dict[str, str]
    trained: bool  # shaped by the reader's ratings, beyond the interests


class Failure(Frozen):
    """A paper that could not be classified this time; it is retried on the next run."""

    paper_key: str
    reason: str


class Usage(BaseModel):
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    timed_out: int = 0
    timed_out_tokens: int = 0  # prompt and completion tokens (estimated) of requests that timed out: work lost
    busy: int = 0  # 503 answers: the server's queue was full (Ollama) or it was overloaded
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    # Answered through the Batch API, billed at its prices: apart from the live figures above.
    batch_requests: int = 0
    batch_prompt_tokens: int = 0
    batch_cached_tokens: int = 0
    batch_completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens + self.batch_prompt_tokens + self.batch_completion_tokens

    def add(self, other: Usage) -> None:
        for name in Usage.model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Progress(BaseModel):
    """How far a long stage has got, for whoever shows it (a terminal line, a log): figures, never a screen."""

    done: int
    total: int
    usage: Usage
    cost: float | None  # None: the model's price is not known
    free: bool  # a server that charges nothing
    finished: bool = False


OnProgress = Callable[[Progress], None]

RATING_WORDS = {1: "more like this", -1: "not for me"}


class Rating(Frozen):
    """The reader's word on one paper for one profile: more like this (1) or not for me (-1)."""

    profile: str
    paper: Paper  # as it was when rated: the prompt's examples and `digest eval` read its title and abstract
    rating: Literal[1, -1]
    source: RatingSource
    rated_at: dt.datetime

    @property
    def liked(self) -> bool:
        return self.rating == 1


class Entry(Frozen):
    paper: Paper
    verdict: Verdict
    liked_before: bool = False  # a new version of a paper the reader rated "more like this"


def best_first(entry: Entry) -> tuple[bool, float, str]:
    """Best first: what the reader's rules put in, then by score (nudged by taste)."""
    return entry.verdict.rule is None, -entry.verdict.fused, entry.paper.title.lower()


class Digest(Frozen):
    """One profile's digest for one announcement date, ready to render."""

    profile: str
    grouped_by: str  # "interest", "category" or "none"
    announced: dt.date
    categories: list[str]
    groups: list[tuple[str, list[Entry]]]  # (interest, entries by score), best group first
    papers_read: int
    unclassified: int  # papers that could not be classified yet and are carried to the next run
    min_score: int
    left_out: int  # relevant papers beyond the profile's max_papers
    usage: Usage
    cost: float | None
    rated: int = 0  # papers the profile's reader has rated, for the footer
    unreadable: int = 0  # items of the day's feed that could not be read, and were left out
    unclassifiable: list[Paper] = []  # papers the LLM failed on run after run: shown unjudged, then retired
    carried_over: int = 0  # papers the run had no time to judge (max_run_minutes): they come in the next digest
    since: dt.date | None = None  # a weekly digest: the first announcement day it covers (`announced`: its day)
    sources: list[str] = ["arXiv"]  # where the papers it read came from, as readers know them

    @property
    def mixed(self) -> bool:
        """Papers from several sources, or from one that is not arXiv: each paper then says where it is from."""
        return self.sources != ["arXiv"]

    @property
    def relevant_count(self) -> int:
        return sum(len(entries) for _, entries in self.groups)

    @property
    def entries(self) -> list[Entry]:
        return [entry for _, entries in self.groups for entry in entries]


class Rendered(Frozen):
    subject: str
    text: str
    html: str | None  # None when the output format is Markdown
    markdown: str | None


class Delivery(Frozen):
    """One digest to one recipient."""

    digest_id: int
    profile: str
    announced: dt.date
    recipient: str
    message_id: str | None  # None for deliveries recorded before each recipient had one: the digest's own is used
    message: bytes  # the digest's message, addressed and dated when it is sent
    subject: str = ""
    content: Digest | None = None  # the digest as rendered, for channels that format it their own way (chat)


class ProfileSummary(BaseModel):
    name: str
    to_classify: int = 0
    cached: int = 0
    ruled: int = 0  # decided by the reader's rules (followed authors, keywords), without a request
    by_taste: int = 0  # below the share of the day the LLM reads: judged by taste alone, without a request
    classified: int = 0
    failed: int = 0
    relevant: int = 0
    digest: str = "none"  # what happened to this run's digest, in words


class SourceFetch(BaseModel):
    """What one source gave a run."""

    papers: int = 0
    new: int = 0  # not seen before
    requests: int = 0
    by_type: dict[str, int] = {}
    not_modified: bool = False
    failed: bool = False  # it could not be read: the run's errors say why


class LibraryOutcome(BaseModel):
    """What reading one profile's library came to: its Zotero library, or the library file it names."""

    profile: str
    kind: Literal["zotero", "file"]
    library: str  # in words: "the Zotero library of user 1234567", or the file's path
    failed: str | None = None  # why it could not be read, with the fix: the digest went on without it
    stopped: str | None = None  # why a read stopped short (its budget, a wait Zotero asked for): the next goes on
    unchanged: bool = False  # Zotero answered 304, or the file is as it was last read
    requests: int = 0
    read: int = 0  # items (or entries) read this time
    unreadable: int = 0  # items that are not Zotero's JSON, or too large: left out
    items: int = 0  # in the library (out of the trash), or entries in the file
    with_paper: int = 0  # naming an arXiv, bioRxiv or medRxiv paper; the others are counted, never guessed
    unread: int = 0  # listed and not read yet: the next read goes on with them
    up: int = 0  # what the library says now: more like this
    down: int = 0  # not for me
    added: int = 0
    changed: int = 0
    removed: int = 0  # ratings taken back: their items left the library, or its chosen collections
    by_hand: int = 0  # papers rated otherwise by hand: the reader's word stands
    unknown: list[str] = []  # ids their sources do not know
    missing: list[str] = []  # collections named in the config that the library does not have

    @property
    def failure(self) -> str | None:
        """Why it could not be read, in words that name the library and the fix."""
        return None if self.failed is None else f"{self.library} (profile {self.profile}) not read: {self.failed}"


class RunSummary(BaseModel):
    command: Literal["run", "preview"] = "run"  # a preview classifies too, and what it spends is recorded
    announced: dt.date | None = None
    fetched: dict[str, int] = {}
    sources: dict[str, SourceFetch] = {}  # by source name (arXiv, bioRxiv), in the config's order
    not_modified: bool = False  # arXiv answered 304: nothing new since the last run
    backfilled: int = 0  # papers brought by `run --since` from the export API
    unreadable: list[str] = []  # items of the feed that could not be read, and were left out
    new_papers: int = 0
    profiles: list[ProfileSummary] = []
    usage: Usage = Usage()
    concurrency: str | None = None  # requests in flight: what the run settled on, in words
    taste_model: str | None = None  # the embedding model that placed papers by taste; None: no taste this run
    embedded: int = 0  # papers it embedded (the others' vectors were kept from earlier runs)
    embedding_seconds: float = 0.0
    cost: float | None = None
    free: bool = False  # a local server, or a price of 0: nothing is charged
    live_cost: float | None = None  # what the same tokens would have cost live, when some went in a batch
    batches: list[str] = []  # what each Batch API batch came to
    deliveries_sent: int = 0
    deliveries_pending: int = 0
    deliveries_failed: int = 0  # refused for good (5xx): reported by this run once, never retried
    deliveries_uncertain: int = 0  # may have arrived (a request never answered): reported once, never sent again
    # Each destination tried in this run, by its name (never a token): how many digests it took (sent), refused
    # for good (failed), left for the next run (pending), or may have (uncertain).
    destinations: dict[str, dict[str, int]] = {}
    warnings: list[str] = []
    errors: list[str] = []
    stopped: bool = False  # a signal stopped the run at a safe point; what was left is done by the next run
    resumed: str | None = None  # what the previous run, stopped by a signal, had left for this one
    libraries: list[LibraryOutcome] = []  # the readers' libraries, read at the start of the run
    seconds: float = 0.0
