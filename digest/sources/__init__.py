"""The sources of papers, one module each behind digest/sources/base.py's interface, chosen by the config's
sections (arxiv:, biorxiv:, medrxiv:). A further source is one more module, one more entry here, and its section
in digest/config/sources.py."""

from __future__ import annotations

from digest.config import Config
from digest.sources.arxiv import ArxivSource
from digest.sources.base import FeedState, PaperRef, Source
from digest.sources.biorxiv import BiorxivSource
from digest.sources.medrxiv import MedrxivSource
from digest.sources.rxiv import rxiv_pacer

__all__ = ["SOURCES", "FeedState", "PaperRef", "Source", "configured_sources", "sources_for"]

# In this order in the summary and in a mixed digest, and asked in this order for a paper.
SOURCES: tuple[type[Source], ...] = (ArxivSource, BiorxivSource, MedrxivSource)


def sources_for(ref: PaperRef) -> list[type[Source]]:
    """The sources that may have the paper: those whose ids have its id's form, or the one its link names."""
    return [source for source in SOURCES if source.knows(ref.id) and ref.source in (None, source.name)]


def configured_sources(config: Config) -> list[Source]:
    found: list[Source] = []
    if (arxiv := ArxivSource.from_config(config)) is not None:
        found.append(arxiv)
    shared = rxiv_pacer()  # bioRxiv and medRxiv are one API, on one host: a request a second between them
    for server in (BiorxivSource, MedrxivSource):
        if (source := server.from_config(config, shared)) is not None:
            found.append(source)
    return found
