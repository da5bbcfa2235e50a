"""The sources section: arXiv, and bioRxiv and medRxiv through their shared API."""

from __future__ import annotations

import difflib
from typing import Annotated, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
)

from digest.config.base import HttpURL, StrictModel
from digest.models import AnnounceType
from digest.taxonomy import (
    BIORXIV_SUBJECTS,
    MEDRXIV_SUBJECTS,
    check_arxiv_category,
    normalise_subject,
)


class ArxivConfig(StrictModel):
    categories: Annotated[list[str], Field(min_length=1)]
    announce_types: Annotated[list[AnnounceType], Field(min_length=1)] = ["new", "cross"]
    feed_url: HttpURL = "https://rss.arxiv.org/rss"
    api_url: HttpURL = "http://export.arxiv.org/api/query"
    api_page_size: Annotated[int, Field(ge=1, le=2000)] = 200
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0  # each download as a whole, not just each read
    max_retry_seconds: Annotated[float, Field(ge=0)] = 120.0
    max_feed_mb: Annotated[float, Field(gt=0)] = 50.0  # arXiv's biggest daily feeds are a few MB

    @field_validator("categories")
    @classmethod
    def _valid_categories(cls, categories: list[str]) -> list[str]:
        checked = [check_arxiv_category(c.strip()) for c in categories]
        return list(dict.fromkeys(checked))


def _check_subject(name: str, subjects: tuple[str, ...], server: str) -> str:
    """A subject as the server's API spells it, from any spelling of it (Cell-Biology, cell_biology)."""
    found = normalise_subject(name)
    if found in subjects:
        return found
    close = difflib.get_close_matches(found, subjects, n=1, cutoff=0.6)
    said = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"'{name}' is not a {server} subject; {said}its subjects: {', '.join(subjects)}")


class PreprintServerConfig(StrictModel):
    """bioRxiv or medRxiv, through their shared API (api.biorxiv.org): the subjects followed, and the same
    politeness as for arXiv. Paced at one request a second whatever is set: the API publishes no limit."""

    label: ClassVar[str]
    subjects: ClassVar[tuple[str, ...]]

    categories: Annotated[list[str], Field(min_length=1)]
    # new: a paper's first version; replace: a later one (as arXiv's replacements; a reader's liked paper's new
    # version comes whatever this says, as for arXiv).
    announce_types: Annotated[list[Literal["new", "replace"]], Field(min_length=1)] = ["new"]
    api_url: HttpURL = "https://api.biorxiv.org"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0  # each page as a whole
    max_retry_seconds: Annotated[float, Field(ge=0)] = 120.0
    max_page_mb: Annotated[float, Field(gt=0)] = 20.0  # a page is 30 to 100 records, well under 1 MB

    @field_validator("categories")
    @classmethod
    def _valid_subjects(cls, categories: list[str]) -> list[str]:
        return list(dict.fromkeys(_check_subject(c, cls.subjects, cls.label) for c in categories))


class BiorxivConfig(PreprintServerConfig):
    label: ClassVar[str] = "bioRxiv"
    subjects: ClassVar[tuple[str, ...]] = BIORXIV_SUBJECTS


class MedrxivConfig(PreprintServerConfig):
    label: ClassVar[str] = "medRxiv"
    subjects: ClassVar[tuple[str, ...]] = MEDRXIV_SUBJECTS
