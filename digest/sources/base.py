"""What every source is (digest/sources/<name>.py, registered in digest/sources/__init__.py): it fetches the papers
announced since its last fetch, catches up since a day, and looks papers up by id, producing the same Paper as
every other source. The pipeline learns nothing of a source beyond a paper's id, links and source name."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, NamedTuple, Protocol

from digest import __version__
from digest.models import Feed, Paper

USER_AGENT = f"digest/{__version__} (self-hosted preprint digest; +https://github.com/digest-dev/digest)"


class FeedState(NamedTuple):
    """What the state remembers of a source's last fetch."""

    etag: str | None
    last_modified: str | None
    last_announced: dt.date | None


class Source(Protocol):
    name: ClassVar[str]  # its config section: arxiv, biorxiv, medrxiv
    label: ClassVar[str]  # its name as readers know it: arXiv, bioRxiv, medRxiv

    def state_key(self) -> str:
        """What the state keeps this source's FeedState under."""
        ...

    def knows(self, paper_id: str) -> bool:
        """Whether the id has this source's form (an arXiv id, a DOI)."""
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
