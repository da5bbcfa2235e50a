"""Seeds from the reader's own library: BibTeX or BibLaTeX (as Zotero, Mendeley, JabRef and Google Scholar export
it), Zotero's CSL JSON, or plain text with one arXiv id, DOI or link per line.

Only entries that say they are a source's papers are taken, as each source reads them (an eprint with an arXiv
archive, an arxiv.org link, arXiv's DOI 10.48550/arXiv.*, "arXiv:ID" in a note or journal; a bioRxiv or medRxiv
DOI, or a link to their pages); every other entry is counted and reported, never guessed. Nor is the server of a
bioRxiv or medRxiv DOI guessed: the two give out DOIs of one shape, so a page's link in the entry says which, or
else the state, or else their API.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bibtexparser.entrypoint import parse_string as parse_bibtex
from bibtexparser.middlewares import NormalizeFieldKeys
from pydantic import BaseModel
from pylatexenc.latex2text import LatexNodes2Text

from digest.config import Config, Profile
from digest.errors import UsageError
from digest.models import Paper
from digest.sources import Source, sources_for
from digest.state.store import Store
from digest.taste.ratings import PaperRef, find_paper, parse_paper, record, resolve

# Fields that may carry the id, most explicit first. "eprint" counts unless the entry says it is another archive's.
ID_FIELDS = ("eprint", "arxiv", "arxivid", "doi", "url", "number", "note", "journal", "journaltitle", "howpublished")
EXACT_ID_FIELDS = frozenset({"eprint", "arxiv", "arxivid"})  # an id alone; the others mention one
ARXIV_ARCHIVES = {"", "arxiv"}
# A library is parsed this many entries at a time: memory stays that of a chunk, and progress can be shown.
CHUNK_ENTRIES = 2000
# A line longer than this (a PDF or an image pasted into a field, a hostile file) is dropped before parsing: no
# field digest reads is anywhere near as long, and the parser takes minutes over one of many megabytes.
LONGEST_LINE = 65_536
ENTRY_START = re.compile(r"^[ \t]*@", re.MULTILINE)
STRING_MACRO = re.compile(r"^[ \t]*@string\b", re.MULTILINE | re.IGNORECASE)
TOO_LONG_LINE = re.compile(rf"^[^\n]{{{LONGEST_LINE + 1},}}\n?", re.MULTILINE)
ESCAPED = re.compile(r"\\([%&_#$])")  # characters BibTeX escapes that need no decoder
# The accents of names and titles (M{\\"u}ller, Caf\\'e, \\v{S}), the LaTeX most exports hold: a combining mark
# each. The decoder takes a millisecond a field; this, microseconds.
ACCENTS = {
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    '"': "\u0308",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
    "u": "\u0306",
    "v": "\u030c",
    "H": "\u030b",
    "c": "\u0327",
    "k": "\u0328",
    "r": "\u030a",
}
ACCENTED = re.compile(r"\\(['`^\"~=.]|[uvHckr](?=[{ ]))\s*\{?([A-Za-z])\}?")
OnCount = Callable[[int, int], None]  # (entries read, entries in the file)


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
    unknown: list[str]  # ids no configured source knows (nor, for a DOI alone, says which server has it)


def library_parts(path: Path, on_progress: OnCount | None = None) -> Iterator[Library]:
    """A library file part by part (a chunk of a BibTeX file at a time), so that what is made of it can be used and
    let go as it comes; its format is told by its name, else by its first character."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist", hint="give the path of a .bib, .json or .txt file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} cannot be read: {error}") from None
    start = text.lstrip()[:1]
    if path.suffix.lower() == ".json" or start in ("[", "{"):
        yield _csl_json(text, path)
    elif path.suffix.lower() in (".bib", ".bibtex") or start in ("@", "%"):
        yield from _bibtex(text, path, on_progress)
    else:
        yield _plain(text)


def _bibtex(text: str, path: Path, on_progress: OnCount | None) -> Iterator[Library]:
    """Parsed CHUNK_ENTRIES at a time (whole, if it defines @string macros, which any entry after may use). Only
    the fields digest keeps are decoded from LaTeX, and only where they hold any: decoding every field of every
    entry took 97% of the time."""
    decoder = LatexNodes2Text()
    unreadable: list[str] = []
    entries = 0
    total = len(ENTRY_START.findall(text))
    for chunk, first_line in _chunks(text, whole=STRING_MACRO.search(text) is not None):
        parsed = parse_bibtex(chunk, append_middleware=[NormalizeFieldKeys()])
        seeds: list[Seed] = []
        not_arxiv: list[str] = []
        for entry in parsed.entries:
            fields = {key: str(field.value) for key, field in entry.fields_dict.items()}
            archive = fields.get("archiveprefix", fields.get("eprinttype", "")).strip().lower()
            ref = _ref_in(fields, eprint_is_arxiv=archive in ARXIV_ARCHIVES)
            if ref is None:
                not_arxiv.append(entry.key)
                continue
            title, author = (_decoded(decoder, fields.get(name)) for name in ("title", "author"))
            authors = [" ".join(reversed(a.split(",", 1))).strip() for a in (author or "").split(" and ")]
            abstract = _unescaped(fields["abstract"]) if "abstract" in fields else None
            seeds.append(Seed(ref=ref, title=title, abstract=abstract, authors=authors))
        unreadable += [
            f"unreadable block at line {first_line + (block.start_line or 0)}" for block in parsed.failed_blocks
        ]
        entries += len(parsed.entries)
        if seeds or not_arxiv:
            yield Library(seeds=seeds, not_arxiv=not_arxiv)
        if on_progress is not None:
            on_progress(min(entries + len(unreadable), total), total)
    if not entries:
        problem = f"{len(unreadable)} unreadable blocks" if unreadable else "no entries"
        raise UsageError(f"{path}: no BibTeX entries found ({problem})", hint="export the library as BibTeX again")
    yield Library(seeds=[], not_arxiv=unreadable)


def _chunks(text: str, *, whole: bool) -> Iterator[tuple[str, int]]:
    """The text in runs of CHUNK_ENTRIES entries, each with the number of lines before it; lines longer than
    LONGEST_LINE dropped."""
    starts = [match.start() for match in ENTRY_START.finditer(text)][::CHUNK_ENTRIES] if not whole else []
    bounds = [0, *starts[1:], len(text)]
    lines_before = 0
    for start, end in itertools.pairwise(bounds):
        chunk = text[start:end]
        yield TOO_LONG_LINE.sub("\n", chunk), lines_before
        lines_before += chunk.count("\n")


def _decoded(decoder: LatexNodes2Text, value: str | None) -> str | None:
    """A field as text: protective braces dropped, escaped characters (`\\%`, `\\&`) unescaped, and only what
    holds a command (an accent, math) through the LaTeX decoder, which takes a millisecond a field."""
    if value is None:
        return None
    plain = _unescaped(value)
    if "\\" not in plain:
        return plain.replace("{", "").replace("}", "")
    return str(decoder.latex_to_text(value))


def _unescaped(value: str) -> str:
    """Escaped characters and accents as text, the rest as written: an abstract's math stays LaTeX, as arXiv's own
    abstracts are (and as the LLM reads them)."""
    return unicodedata.normalize("NFC", ACCENTED.sub(_accented, ESCAPED.sub(r"\1", value)))


def _accented(match: re.Match[str]) -> str:
    return match[2] + ACCENTS[match[1]]


def _csl_json(text: str, path: Path) -> Library:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error})", hint="export the library as CSL JSON again") from None
    except RecursionError:  # no export nests this deep: a damaged or hostile file
        raise UsageError(
            f"{path}: the JSON is nested too deeply to be CSL JSON", hint="export the library as CSL JSON again"
        ) from None
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
    return ref_in(fields, ID_FIELDS if eprint_is_arxiv else ID_FIELDS[1:], exact=EXACT_ID_FIELDS)


def ref_in(fields: Mapping[str, str], order: Sequence[str], *, exact: Collection[str]) -> PaperRef | None:
    """The paper an entry names, in the most explicit of the fields in `order`: an `exact` field holds an id as a
    reader writes it, the others may mention one (arXiv:ID, an arxiv.org link, an arXiv, bioRxiv or medRxiv DOI).
    Its version and its server from later fields when the first says neither (bioRxiv's citation export gives the
    DOI alone, and the page's URL with its version)."""
    found = [ref for name in order if (ref := _ref_in_field(fields.get(name, ""), name in exact)) is not None]
    if not found:
        return None
    same = [ref for ref in found if ref.id == found[0].id]
    version = next((ref.version for ref in same if ref.version is not None), None)
    source = next((ref.source for ref in same if ref.source is not None), None)
    return PaperRef(found[0].id, version, source)


def _ref_in_field(value: str, exact: bool) -> PaperRef | None:
    value = value.strip()
    if not value:
        return None
    if exact:
        try:
            return parse_paper(value)
        except UsageError:
            return None
    return find_paper(value)


async def import_library(
    config: Config, store: Store, profile: Profile, path: Path, rating: int, on_progress: OnCount | None = None
) -> ImportReport:
    """`digest import`: rate every paper of a library file, a part at a time. Entries without a title or abstract,
    and DOIs that do not say their server, are completed from the state or their sources; importing the same file
    again changes nothing."""
    seen: set[PaperRef] = set()  # a paper listed twice is one paper
    counts = {"added": 0, "changed": 0, "unchanged": 0}
    entries = 0
    not_arxiv: list[str] = []
    unknown: list[str] = []
    for part in library_parts(path, on_progress):
        entries += len(part.seeds) + len(part.not_arxiv)
        not_arxiv += part.not_arxiv
        seeds = {seed.ref: seed for seed in part.seeds if seed.ref not in seen}
        seen.update(seeds)
        papers, not_known = await papers_of(config, store, seeds)
        unknown += not_known
        for kind, count in record(store, profile, papers.values(), rating, "import").items():
            counts[kind] += count
    return ImportReport(
        profile=profile.name, rating=rating, entries=entries, not_arxiv=not_arxiv, unknown=unknown, **counts
    )


async def papers_of(
    config: Config, store: Store, seeds: Mapping[PaperRef, Seed]
) -> tuple[dict[PaperRef, Paper], list[str]]:
    """The papers the seeds name, as the library says them; completed from the state or the papers' sources where
    it gives no title or abstract, or does not say a DOI's server. And the ids their sources do not know."""
    named = {ref: _source_of(ref) for ref in seeds}
    incomplete = [ref for ref, seed in seeds.items() if not (seed.title and seed.abstract) or named[ref] is None]
    looked_up = await resolve(config, store, incomplete) if incomplete else {}
    papers: dict[PaperRef, Paper] = {}
    unknown: list[str] = []
    for ref, seed in seeds.items():
        source = named[ref]
        paper = looked_up.get(ref) if source is None or ref in incomplete else _paper_of(seed, source)
        if paper is None:
            unknown.append(ref.id)
            continue
        papers[ref] = paper
    return papers, unknown


def _source_of(ref: PaperRef) -> type[Source] | None:
    """The one source the entry names, if it names one for certain."""
    sources = sources_for(ref)
    return sources[0] if len(sources) == 1 else None


def _paper_of(seed: Seed, source: type[Source]) -> Paper:
    """A paper from what the library says of it; the version the reader saved, else the first."""
    version = seed.ref.version or 1
    return Paper(
        id=seed.ref.id,
        version=version,
        source=source.label,
        links=source.pages(seed.ref.id, version),
        title=" ".join((seed.title or "").replace("{", "").replace("}", "").split()),
        authors=[a for a in seed.authors if a],
        abstract=" ".join((seed.abstract or "").split()),
        categories=[],
        announce_type="new",
        announced=dt.date.today(),
    )
