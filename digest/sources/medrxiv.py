"""medRxiv, the preprint server for the health sciences, through the API it shares with bioRxiv
(digest/sources/rxiv.py)."""

from __future__ import annotations

from typing import ClassVar

from digest.sources.rxiv import PreprintServer


class MedrxivSource(PreprintServer):
    name: ClassVar[str] = "medrxiv"
    label: ClassVar[str] = "medRxiv"
    site: ClassVar[str] = "https://www.medrxiv.org"
    doi_example: ClassVar[str] = "10.1101/2020.09.09.20191205"
