"""bioRxiv, the preprint server for biology, through the API it shares with medRxiv (digest/sources/rxiv.py)."""

from __future__ import annotations

from typing import ClassVar

from digest.sources.rxiv import PreprintServer


class BiorxivSource(PreprintServer):
    name: ClassVar[str] = "biorxiv"
    label: ClassVar[str] = "bioRxiv"
    site: ClassVar[str] = "https://www.biorxiv.org"
    doi_example: ClassVar[str] = "10.1101/2026.06.30.612345"
