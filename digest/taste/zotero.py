"""The reader's library where it lives: Zotero, read as it changes, and a library file re-read when it changes.

A Zotero library is read incrementally, as Zotero's sync documentation has it. Its Last-Modified-Version is kept;
each read asks for the top-level items changed since, with If-Modified-Since-Version (an unchanged library answers
304: one request), then reads the changed items by key, 50 a request, and what was deleted since. The items still to
read are kept in the state, so a read stopped by its budget, a signal or a failure goes on from there next time, and
a library of any size is read in the memory of one page.

What an item means for a profile: a paper in the profile's collections (with their subcollections; the whole
library when it names none) is "more like this", unless it is also in a collection the reader calls "not for me";
an item deleted, put in the trash or taken out of those collections stops counting. Ratings given by hand always
stand. Each rating is dated by the item's dateAdded, so recent additions come first among the prompt's examples.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from digest.config import Config, Profile, ZoteroConfig
from digest.errors import DigestError
from digest.models import LibraryOutcome
from digest.sources import sources_for
from digest.state.store import Store
from digest.state.zotero import CollectionRow, ItemRow
from digest.taste.library import OnCount, Seed, import_library, papers_of, ref_in
from digest.taste.zotero_api import (
    DELETED,
    KEY,
    OBJECTS,
    VERSIONS,
    AnswerTooLarge,
    Budget,
    Collection,
    Deleted,
    Item,
    OutOfBudget,
    ZoteroAPI,
)

# Where an item may name its paper, most explicit first: Zotero's arXiv translator writes archiveID
# "arXiv:2606.29563", extra "arXiv:2606.29563 [cs.CL]", the DOI 10.48550/arXiv.* (or the journal's, once
# published), and the arxiv.org url.
ID_FIELDS = ("archiveid", "extra", "doi", "url", "number")
EXACT_ID_FIELDS = frozenset({"number"})
KEYS_PER_REQUEST = 50  # itemKey takes at most 50
WRITE_CHUNK = 500  # ratings are written (and their papers completed) this many at a time
# Everything an item says is untrusted: no title, abstract or name digest keeps is anywhere near this long.
TITLE_CHARACTERS = 2_000
ABSTRACT_CHARACTERS = 20_000
NAME_CHARACTERS = 200
AUTHORS = 500
VALID_KEY = re.compile(KEY)
MEANING_SETTING = "zotero-meaning/"  # + profile: the collections its ratings were last worked out for
FILE_SETTING = "library-file/"  # + profile: the library file as last read (its path, time and size)


def run_budget() -> Budget:
    """A run's library step: a first read of a large library goes on over several runs, and the digest never
    waits more than five minutes for it."""
    return Budget(requests=500, seconds=300)


def import_budget() -> Budget:
    """`digest import`, which is there to read it: 100,000 items in one go, within half an hour."""
    return Budget(requests=2_100, seconds=1_800)


async def read_libraries(config: Config, store: Store) -> list[LibraryOutcome]:
    """Every profile's library, at the start of a run, within one run's budget."""
    reader = LibraryReader(config, store, run_budget())
    return [outcome for profile in config.profiles for outcome in await reader.read(profile)]


class LibraryReader:
    """Each profile's library, read once per command: a Zotero library several profiles share is read once."""

    def __init__(self, config: Config, store: Store, budget: Budget, on_progress: OnCount | None = None) -> None:
        self._config = config
        self._store = store
        self._budget = budget
        self._on_progress = on_progress
        self._synced: dict[str, LibraryOutcome | DigestError] = {}

    async def read(self, profile: Profile, *, every_time: bool = False) -> list[LibraryOutcome]:
        """What reading the profile's library came to: its Zotero library, then its file. A library that fails
        is said in its outcome; `every_time`: re-read the file and work the ratings out again even if unchanged."""
        library = profile.library
        outcomes: list[LibraryOutcome] = []
        if library is not None and library.zotero is not None:
            outcomes.append(await self._zotero(profile, library.zotero, every_time))
        if library is not None and library.file is not None:
            outcomes.append(await self._file(profile, library.file, every_time))
        return outcomes

    async def _zotero(self, profile: Profile, zotero: ZoteroConfig, every_time: bool) -> LibraryOutcome:
        synced = self._synced.get(zotero.library)
        if synced is None:
            try:
                synced = await _sync(self._store, zotero, self._budget, self._on_progress)
            except DigestError as error:
                synced = error
            self._synced[zotero.library] = synced
        outcome = LibraryOutcome(profile=profile.name, kind="zotero", library=zotero.label)
        if isinstance(synced, DigestError):
            return outcome.model_copy(update={"failed": str(synced)})
        outcome = synced.model_copy(update={"profile": profile.name}, deep=True)
        changed = every_time or not synced.unchanged or synced.read > 0
        try:
            await _rate(self._config, self._store, profile, zotero, outcome, changed=changed)
        except DigestError as error:
            outcome.failed = str(error)
        return outcome

    async def _file(self, profile: Profile, path: Path, every_time: bool) -> LibraryOutcome:
        outcome = LibraryOutcome(profile=profile.name, kind="file", library=str(path))
        try:
            signature = _signature(path)
        except OSError as error:
            outcome.failed = f"library.file {path} cannot be read ({error.strerror or error})\n  fix: check the path"
            return outcome
        setting = FILE_SETTING + profile.name
        if not every_time and self._store.get_setting(setting) == signature:
            outcome.unchanged = True
            return outcome
        try:
            imported = await import_library(self._config, self._store, profile, path, 1, self._on_progress)
        except DigestError as error:
            outcome.failed = str(error)
            return outcome
        self._store.put_setting(setting, signature)
        taken = imported.added + imported.changed + imported.unchanged
        outcome.items, outcome.with_paper, outcome.read = imported.entries, taken, imported.entries
        outcome.up, outcome.added, outcome.changed = taken, imported.added, imported.changed
        outcome.unknown = imported.unknown
        return outcome


def _signature(path: Path) -> str:
    """The file as it is now: Better BibTeX rewrites it on every change, so its time and size tell."""
    stat = path.stat()
    return f"{path}:{stat.st_mtime_ns}:{stat.st_size}"


async def _sync(store: Store, zotero: ZoteroConfig, budget: Budget, on_progress: OnCount | None) -> LibraryOutcome:
    """Bring the state's copy of the library up to date (as far as the budget goes); what it took."""
    outcome = LibraryOutcome(profile="", kind="zotero", library=zotero.label)
    async with ZoteroAPI(zotero, budget) as api:
        try:
            outcome.unchanged = not await _changes(api, store)
            await _read_items(api, store, outcome, on_progress)
        except OutOfBudget as stop:
            outcome.stopped = stop.message
        outcome.requests = api.requests
    counts = store.zotero_counts(zotero.library)
    outcome.items, outcome.with_paper, outcome.unread = counts
    return outcome


async def _changes(api: ZoteroAPI, store: Store) -> bool:
    """What changed in the library since the version kept: the items to read, the collections, what was deleted;
    recorded together with the new version. False when nothing changed (a 304).

    Zotero desktop's local API has no /deleted: there, a change lists every key (a request on this computer, no
    network, and the local API pages nothing), and what is no longer listed was deleted."""
    library, path = api.config.library, api.config.path
    known = store.zotero_version(library)
    whole = known is None or api.config.local
    since = "0" if whole else str(known)
    what = "the list of changed items"
    listed: dict[str, int] = {}
    version: int | None = None
    params = {"since": since, "format": "versions", "includeTrashed": "1"}
    async for answer in api.pages(f"{path}/items/top", params, what=what, since=known):
        if answer.status == 304:
            return False
        page = api.parsed(answer, VERSIONS, what)
        version = version if version is not None else api.version_of(answer, what)
        listed.update((key, number) for key, number in page.items() if VALID_KEY.match(key))
    assert version is not None
    collections: list[CollectionRow] = []
    what = "the collections"
    async for answer in api.pages(f"{path}/collections", {"since": since, "limit": "100"}, what=what):
        for found in api.parsed(answer, OBJECTS, what):
            try:
                collection = Collection.model_validate(found)
            except ValidationError:
                continue  # not a collection Zotero would send: it names nothing
            parent = collection.data.parentCollection
            name = collection.data.name[:NAME_CHARACTERS]
            collections.append(CollectionRow(collection.key, name, parent if isinstance(parent, str) else None))
    if whole:
        kept = {c.key for c in store.zotero_collections(library)}
        deleted = Deleted(
            items=sorted(store.zotero_item_keys(library) - listed.keys()),
            collections=sorted(kept - {c.key for c in collections}),
        )
    else:
        what = "the list of deleted items"
        deleted = api.parsed(await api.get(f"{path}/deleted", {"since": since}, what=what), DELETED, what)
    store.zotero_changes(library, version, listed, collections, deleted.items, deleted.collections)
    return True


async def _read_items(api: ZoteroAPI, store: Store, outcome: LibraryOutcome, on_progress: OnCount | None) -> None:
    """The items listed and not read yet, 50 a request, each page recorded as it comes. A page too large is read
    in halves, down to the one item that is: that item is left out, and the rest read."""
    library = api.config.library
    unread = store.zotero_unread(library)
    waiting = [unread[start : start + KEYS_PER_REQUEST] for start in range(0, len(unread), KEYS_PER_REQUEST)]
    while waiting:
        keys = waiting.pop(0)
        what = f"{len(keys)} items by key"
        params = {"itemKey": ",".join(keys), "includeTrashed": "1", "limit": str(KEYS_PER_REQUEST)}
        rows: dict[str, ItemRow] = {}
        try:
            async for answer in api.pages(f"{api.config.path}/items", params, what=what):
                rows |= _rows(api.parsed(answer, OBJECTS, what), keys)
        except AnswerTooLarge:
            if len(keys) > 1:
                waiting[:0] = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
                continue
            rows = {keys[0]: _unreadable(keys[0])}
        outcome.unreadable += sum(1 for row in rows.values() if row.version == 0)
        store.zotero_read(library, rows.values(), [key for key in keys if key not in rows])
        outcome.read += len(keys)
        if on_progress is not None:
            on_progress(outcome.read, len(unread))


def _rows(objects: list[dict[str, Any]], keys: list[str]) -> dict[str, ItemRow]:
    """What the items asked for say; one that is not Zotero's JSON is read, and names nothing. An item not asked for
    is not this library's answer, and is left out."""
    rows: dict[str, ItemRow] = {}
    for found in objects:
        try:
            item = Item.model_validate(found)
        except ValidationError:
            key = found.get("key")
            if isinstance(key, str) and key in keys:
                rows[key] = _unreadable(key)
            continue
        if item.key in keys:
            rows[item.key] = item_row(item)
    return rows


def item_row(item: Item) -> ItemRow:
    data = item.data
    fields = {"archiveid": data.archiveID, "extra": data.extra, "doi": data.DOI, "url": data.url, "number": data.number}
    ref = ref_in(fields, ID_FIELDS, exact=EXACT_ID_FIELDS)
    if ref is not None and ref.source is None:
        # A DOI bioRxiv and medRxiv share does not name its server; a preprint item's repository does.
        servers = [s.name for s in sources_for(ref) if s.label.lower() == data.repository.strip().lower()]
        ref = ref._replace(source=servers[0]) if len(servers) == 1 else ref
    seed = None
    if ref is not None:
        named = [c for c in data.creators if c.creatorType in ("author", "")] or data.creators
        authors = [(c.name or f"{c.firstName} {c.lastName}").strip()[:NAME_CHARACTERS] for c in named[:AUTHORS]]
        seed = Seed(
            ref=ref,
            title=" ".join(data.title.split())[:TITLE_CHARACTERS] or None,
            abstract=" ".join(data.abstractNote.split())[:ABSTRACT_CHARACTERS] or None,
            authors=[a for a in authors if a],
        )
    return ItemRow(
        key=item.key,
        version=item.version,
        paper_id=ref.id if ref is not None else None,
        seed=seed.model_dump_json() if seed is not None else None,
        collections=[key for key in data.collections if VALID_KEY.match(key)],
        trashed=data.deleted,
        added_at=data.dateAdded if _when(data.dateAdded) is not None else None,
    )


def _unreadable(key: str) -> ItemRow:
    """An item that is not Zotero's JSON, or too large: read (not asked for again until it changes), and names
    nothing. Its version 0 says so."""
    return ItemRow(key=key, version=0, paper_id=None, seed=None, collections=[], trashed=False, added_at=None)


def _when(text: str | None) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class _Wanted(NamedTuple):
    """What the library says of one paper."""

    rating: int  # 1: more like this, -1: not for me
    added: str  # the item's dateAdded
    item: str  # the key of the item that says so


async def _rate(
    config: Config, store: Store, profile: Profile, zotero: ZoteroConfig, outcome: LibraryOutcome, *, changed: bool
) -> None:
    """Work out what each item means for the profile, and bring its ratings from the library in line: rate what
    the library says, take back what it no longer says. Only where something changed: the library, or the
    collections the profile names."""
    library = zotero.library
    collections = store.zotero_collections(library)
    chosen, missing = _within(collections, zotero.collections) if zotero.collections is not None else (None, [])
    rejected, also_missing = _within(collections, zotero.not_for_me)
    outcome.missing = missing + also_missing
    wanted: dict[str, _Wanted] = {}  # by paper id
    for row in store.zotero_papers(library):
        assert row.paper_id is not None
        held = set(row.collections)
        rating = -1 if held & rejected else 1 if chosen is None or held & chosen else 0
        if row.trashed or not rating:
            continue
        added = row.added_at or ""
        before = wanted.get(row.paper_id)
        # The same paper in two items: "not for me" wins, then the latest addition.
        if before is None or rating < before.rating or (rating == before.rating and added > before.added):
            wanted[row.paper_id] = _Wanted(rating, added, row.key)
    outcome.up = sum(1 for want in wanted.values() if want.rating == 1)
    outcome.down = len(wanted) - outcome.up
    given = store.rating_sources(profile.name)
    by_hand = {paper_id for paper_id, had in given.items() if had.source in ("cli", "web")}
    outcome.by_hand = sum(
        1 for paper_id, want in wanted.items() if paper_id in by_hand and given[paper_id].rating != want.rating
    )
    meaning = json.dumps([library, zotero.collections, zotero.not_for_me])
    setting = MEANING_SETTING + profile.name
    if outcome.missing or not (changed or store.get_setting(setting) != meaning):
        return  # a collection named and not found: nothing is changed until the name is fixed
    store.put_setting(setting, "")  # until every rating is written: a failure leaves it to the next run
    writes = [
        paper_id
        for paper_id, want in wanted.items()
        if paper_id not in given
        or (given[paper_id].source in ("zotero", "import") and given[paper_id].rating != want.rating)
    ]
    for start in range(0, len(writes), WRITE_CHUNK):
        chunk = writes[start : start + WRITE_CHUNK]
        said = store.zotero_seeds(library, (wanted[paper_id].item for paper_id in chunk))
        seeds = [Seed.model_validate_json(said[wanted[paper_id].item]) for paper_id in chunk]
        papers, unknown = await papers_of(config, store, {seed.ref: seed for seed in seeds})
        outcome.unknown += unknown
        rated = ((paper, wanted[paper.id].rating, _when(wanted[paper.id].added)) for paper in papers.values())
        done = store.rate_many(profile.name, rated, "zotero")
        outcome.added += done["added"]
        outcome.changed += done["changed"]
    gone = [paper_id for paper_id, had in given.items() if had.source == "zotero" and paper_id not in wanted]
    outcome.removed = store.clear_ratings_from(profile.name, gone, "zotero")
    store.put_setting(setting, meaning)


def _within(collections: list[CollectionRow], names: Iterable[str]) -> tuple[set[str], list[str]]:
    """The keys of the collections so named, with their subcollections; and the names the library does not have."""
    wanted = {name.casefold(): name for name in names}
    children: dict[str | None, list[str]] = defaultdict(list)
    for collection in collections:
        children[collection.parent].append(collection.key)
    found = [c for c in collections if c.name.casefold() in wanted]
    keys: set[str] = set()
    stack = [c.key for c in found]
    while stack:
        key = stack.pop()
        if key not in keys:
            keys.add(key)
            stack += children.get(key, [])
    named = {c.name.casefold() for c in found}
    return keys, [name for folded, name in wanted.items() if folded not in named]
