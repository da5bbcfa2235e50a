"""What every source is (digest/sources/<name>.py, registered in digest/sources/__init__.py): it fetches the papers
announced since its last fetch, catches up since a day, and looks papers up by id, producing the same Paper as
every other source; and it knows its own papers as readers name them (ids, links to its pages, DOIs), so that
ratings and libraries need no knowledge of any source. The pipeline learns nothing of a source beyond a paper's
id, links and source name."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, NamedTuple, Protocol

from digest import __version__
from digest.models import Feed, Paper, PaperLinks

USER_AGENT = f"digest/{__version__} (self-hosted preprint digest; +https://github.com/digest-dev/digest)"


class FeedState(NamedTuple):
    """What the state remembers of a source's last fetch."""

    etag: str | None
    last_modified: str | None
    last_announced: dt.date | None


class PaperRef(NamedTuple):
    """A paper as a reader names it."""

    id: str  # without version, in its source's canonical form (arXiv's id, a DOI)
    version: int | None
    # The source's name (its config section) where the id alone does not say and the reader's text does: a link
    # to a page on medrxiv.org, for a DOI of the form bioRxiv and medRxiv share. Otherwise None.
    source: str | None = None


class Mention(NamedTuple):
    """A paper a longer text names, and where in the text that starts."""

    at: int
    ref: PaperRef


class Source(Protocol):
    name: ClassVar[str]  # its config section: arxiv, biorxiv, medrxiv
    label: ClassVar[str]  # its name as readers know it: arXiv, bioRxiv, medRxiv
    service: ClassVar[str]  # what `digest check` reaches, in words: "arXiv feed", "bioRxiv API"
    pasted_forms: ClassVar[str]  # what a reader may give for one of its papers, for a message: "a DOI like 10.1101/..."

    @classmethod
    def pasted(cls, text: str) -> PaperRef | None:
        """The paper of this source that `text`, the whole of it, names as a reader pastes it: an id, a link to one
        of its pages, a DOI."""
        ...

    @classmethod
    def mentioned(cls, text: str) -> Mention | None:
        """The first paper of this source that a longer text (a BibTeX note, a URL or DOI field) names where it says
        it is this source's, with where in the text that starts."""
        ...

    @classmethod
    def knows(cls, paper_id: str) -> bool:
        """Whether the id has the form of this source's ids (an arXiv id, a DOI)."""
        ...

    @classmethod
    def pages(cls, paper_id: str, version: int) -> PaperLinks:
        """The paper's pages on this source's site: abstract, PDF, full text."""
        ...

    def state_key(self) -> str:
        """What the state keeps this source's FeedState under."""
        ...

    async def fetch(self, state: FeedState | None) -> Feed:
        """The papers announced since the fetch `state` remembers (the latest day's, without one). Raises
        FetchError when the source cannot be read at all."""
        ...

    async def since(self, day: dt.date) -> Feed:
        """Every paper announced since `day`: catching up on missed days."""
        ...

    async def check(self) -> str:
        """Reach the source with as few requests as it takes (one), storing nothing; say what was found, or raise
        FetchError."""
        ...

    async def lookup(self, paper_ids: list[str]) -> dict[str, Paper]:
        """The newest version of each paper it has, by id; the others are missing."""
        ...
