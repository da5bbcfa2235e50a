"""Seeds from the reader's own library: BibTeX or BibLaTeX (as Zotero, Mendeley, JabRef and Google Scholar export
it), Zotero's CSL JSON, or plain text with one arXiv id or link per line.

Only entries that say they are arXiv papers are taken (an eprint with an arXiv archive, an arxiv.org link, arXiv's
DOI 10.48550/arXiv.*, "arXiv:ID" in a note or journal); every other entry is counted and reported, never guessed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bibtexparser.entrypoint import parse_string as parse_bibtex
from bibtexparser.middlewares import LatexDecodingMiddleware, NormalizeFieldKeys
from pydantic import BaseModel

from digest.config import Config, Profile
from digest.errors import UsageError
from digest.models import Paper
from digest.ratings import PaperRef, find_paper, parse_paper, record, resolve
from digest.store import Store

# Fields that may carry the id, most explicit first. "eprint" counts unless the entry says it is another archive's.
ID_FIELDS = ("eprint", "arxiv", "arxivid", "doi", "url", "number", "note", "journal", "journaltitle", "howpublished")
ARXIV_ARCHIVES = {"", "arxiv"}


class Seed(BaseModel):
    """One library entry that names an arXiv paper, with what the entry itself says of it."""

    ref: PaperRef
    title: str | None = None
    abstract: str | None = None
    authors: list[str] = []


class Library(BaseModel):
    seeds: list[Seed]
    not_arxiv: list[str]  # the entries without an arXiv id: their keys, or line numbers


class ImportReport(BaseModel):
    profile: str
    rating: int
    entries: int
    added: int
    changed: int
    unchanged: int
    not_arxiv: list[str]
    unknown: list[str]  # ids arXiv does not know


def read_library(path: Path) -> Library:
    """Parse a library file; its format is told by its name, else by its first character."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist", hint="give the path of a .bib, .json or .txt file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} cannot be read: {error}") from None
    start = text.lstrip()[:1]
    if path.suffix.lower() == ".json" or start in ("[", "{"):
        return _csl_json(text, path)
    if path.suffix.lower() in (".bib", ".bibtex") or start in ("@", "%"):
        return _bibtex(text, path)
    return _plain(text)


def _bibtex(text: str, path: Path) -> Library:
    parsed = parse_bibtex(text, append_middleware=[NormalizeFieldKeys(), LatexDecodingMiddleware()])
    if not parsed.entries:
        problem = f"{len(parsed.failed_blocks)} unreadable blocks" if parsed.failed_blocks else "no entries"
        raise UsageError(f"{path}: no BibTeX entries found ({problem})", hint="export the library as BibTeX again")
    seeds, not_arxiv = [], []
    for entry in parsed.entries:
        fields = {key: str(field.value) for key, field in entry.fields_dict.items()}
        archive = fields.get("archiveprefix", fields.get("eprinttype", "")).strip().lower()
        ref = _ref_in(fields, eprint_is_arxiv=archive in ARXIV_ARCHIVES)
        if ref is None:
            not_arxiv.append(entry.key)
            continue
        authors = [" ".join(reversed(a.split(",", 1))).strip() for a in fields.get("author", "").split(" and ")]
        seeds.append(Seed(ref=ref, title=fields.get("title"), abstract=fields.get("abstract"), authors=authors))
    not_arxiv += [f"unreadable block at line {block.start_line}" for block in parsed.failed_blocks]
    return Library(seeds=seeds, not_arxiv=not_arxiv)


def _csl_json(text: str, path: Path) -> Library:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error})", hint="export the library as CSL JSON again") from None
    if isinstance(items, dict):
        items = items.get("items", [items])
    if not isinstance(items, list):
        raise UsageError(f"{path}: CSL JSON is a list of items", hint="export the library as CSL JSON again")
    seeds, not_arxiv = [], []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            not_arxiv.append(f"item {index + 1}")
            continue
        fields = {key.lower(): value for key, value in item.items() if isinstance(value, str)}
        ref = _ref_in(fields, eprint_is_arxiv=True)
        if ref is None:
            not_arxiv.append(str(item.get("id", f"item {index + 1}")))
            continue
        seeds.append(
            Seed(ref=ref, title=fields.get("title"), abstract=fields.get("abstract"), authors=_csl_authors(item))
        )
    return Library(seeds=seeds, not_arxiv=not_arxiv)


def _csl_authors(item: dict[str, Any]) -> list[str]:
    names = item.get("author", [])
    if not isinstance(names, list):
        return []
    return [
        " ".join(str(n.get(k, "")) for k in ("given", "family") if n.get(k)) or str(n.get("literal", ""))
        for n in names
        if isinstance(n, dict)
    ]


def _plain(text: str) -> Library:
    seeds, not_arxiv = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            seeds.append(Seed(ref=parse_paper(line)))
        except UsageError:
            not_arxiv.append(f"line {number}")
    return Library(seeds=seeds, not_arxiv=not_arxiv)


def _ref_in(fields: dict[str, str], *, eprint_is_arxiv: bool) -> PaperRef | None:
    for name in ID_FIELDS:
        value = fields.get(name, "").strip()
        if not value:
            continue
        if name in ("eprint", "arxiv", "arxivid"):
            if name == "eprint" and not eprint_is_arxiv:
                continue
            try:
                return parse_paper(value)
            except UsageError:
                continue
        if (found := find_paper(value)) is not None:
            return found
    return None


async def import_library(config: Config, store: Store, profile: Profile, path: Path, rating: int) -> ImportReport:
    """`digest import`: rate every arXiv paper of a library file. Entries without a title or abstract are completed
    from the state or the export API; importing the same file again changes nothing."""
    library = read_library(path)
    seeds = {seed.ref: seed for seed in library.seeds}  # a paper listed twice is one paper
    incomplete = [ref for ref, seed in seeds.items() if not (seed.title and seed.abstract)]
    looked_up = await resolve(config, store, incomplete) if incomplete else {}
    papers: list[Paper] = []
    unknown: list[str] = []
    for ref, seed in seeds.items():
        paper = looked_up.get(ref)
        if paper is None and ref in incomplete:
            unknown.append(ref.arxiv_id)
            continue
        papers.append(paper or _paper_of(seed))
    counts = record(store, profile, papers, rating, "import")
    return ImportReport(
        profile=profile.name,
        rating=rating,
        entries=len(library.seeds) + len(library.not_arxiv),
        not_arxiv=library.not_arxiv,
        unknown=unknown,
        **counts,
    )


def _paper_of(seed: Seed) -> Paper:
    """A paper from what the library says of it; the version the reader saved, else the first."""
    return Paper(
        arxiv_id=seed.ref.arxiv_id,
        version=seed.ref.version or 1,
        title=" ".join((seed.title or "").replace("{", "").replace("}", "").split()),
        authors=[a for a in seed.authors if a],
        abstract=" ".join((seed.abstract or "").split()),
        categories=[],
        announce_type="new",
        announced=dt.date.today(),
    )
