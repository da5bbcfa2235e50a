"""Save to Zotero: a paper of the digest added to the reader's Zotero library, as a preprint, in the collection the
profile names (made if missing), exactly once however often the link is followed.

The library is looked up first (the item this link saved before, else any item naming the paper); only then is an
item created, with a Zotero-Write-Token that is kept in the state before the create is sent: a create whose answer
was lost (a timeout, a crash) is sent again with the same token, and Zotero applies it once. A saved paper counts
as "more like this".
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from digest.config import Profile, ZoteroConfig
from digest.errors import LibraryError
from digest.models import Paper
from digest.state.store import Store
from digest.taste.zotero import item_row
from digest.taste.zotero_api import OBJECTS, WRITTEN, Budget, Collection, Item, ZoteroAPI

SEARCHED = 25  # items a search for the paper's id reads: the paper's own items are among the first


def save_budget() -> Budget:
    """A save is a web page the reader waits on: a few requests, within a minute."""
    return Budget(requests=12, seconds=60)


class Saved(BaseModel):
    item_key: str
    done: Literal["saved", "already"]  # "already": the library had the paper; it is in the collection now


def save_collection(profile: Profile) -> ZoteroConfig | None:
    """The profile's Zotero library, where it saves to one."""
    library = profile.library
    if library is None or library.zotero is None or library.zotero.save_to is None:
        return None
    return library.zotero


async def save_to_zotero(store: Store, profile: Profile, paper: Paper) -> Saved:
    """Add `paper` to the profile's Zotero library (see the module's docstring), and rate it "more like this"."""
    zotero = save_collection(profile)
    assert zotero is not None and zotero.save_to is not None
    library = zotero.library
    async with ZoteroAPI(zotero, save_budget()) as api:
        collection = await _collection(api, zotero.save_to)
        record = store.zotero_save(library, paper.id)
        found = await _item(api, record.item_key) if record is not None and record.item_key else None
        found = found or await _search(api, paper)
        if found is not None:
            await _into(api, found, collection)
            store.zotero_saved(library, paper.id, found.key)
            saved = Saved(item_key=found.key, done="already")
        else:
            if record is not None and record.item_key:  # saved before, and deleted since: saved anew
                store.zotero_save_forgotten(library, paper.id)
                record = None
            token = record.write_token if record is not None else secrets.token_hex(16)
            store.zotero_save_sending(library, paper.id, token)
            saved = Saved(item_key=await _create(api, paper, collection, token), done="saved")
            store.zotero_saved(library, paper.id, saved.item_key)
    store.rate(profile.name, paper, 1, "web")
    return saved


async def _collection(api: ZoteroAPI, name: str) -> str:
    """The key of the collection so named (in any case, at any depth), made at the top if there is none."""
    found = await _named(api, name)
    if found is not None:
        return found
    what = f"making the collection '{name}'"
    made = await _write(api, f"{api.config.path}/collections", [{"name": name}], secrets.token_hex(16), what)
    # None: the token was used, by this very create whose answer was lost: the collection is there.
    found = made or await _named(api, name)
    if found is None:
        raise LibraryError(f"Zotero says the collection '{name}' was made, and does not list it; try again")
    return found


async def _named(api: ZoteroAPI, name: str) -> str | None:
    what = "the collections"
    async for answer in api.pages(f"{api.config.path}/collections", {"limit": "100"}, what=what):
        for found in api.parsed(answer, OBJECTS, what):
            try:
                collection = Collection.model_validate(found)
            except ValidationError:
                continue
            if collection.data.name.casefold() == name.casefold():
                return collection.key
    return None


async def _item(api: ZoteroAPI, key: str) -> Item | None:
    """The item this link saved before, if it is still in the library (and not in the trash)."""
    what = "the item saved before"
    try:
        answer = await api.get(f"{api.config.path}/items", {"itemKey": key, "includeTrashed": "1"}, what=what)
        items = [Item.model_validate(found) for found in api.parsed(answer, OBJECTS, what)]
    except ValidationError:
        return None
    return next((item for item in items if item.key == key and not item.data.deleted), None)


async def _search(api: ZoteroAPI, paper: Paper) -> Item | None:
    """An item of the library (out of the trash) that names the paper, found by searching every field for its id."""
    what = "the search for the paper"
    params = {"q": paper.id, "qmode": "everything", "limit": str(SEARCHED)}
    answer = await api.get(f"{api.config.path}/items/top", params, what=what)
    for found in api.parsed(answer, OBJECTS, what):
        try:
            item = Item.model_validate(found)
        except ValidationError:
            continue
        if not item.data.deleted and item_row(item).paper_id == paper.id:
            return item
    return None


async def _into(api: ZoteroAPI, item: Item, collection: str) -> None:
    """The item in the collection too, if it is not: changed only if nobody changed it since it was read."""
    if collection in item.data.collections:
        return
    answer = await api.send(
        "PATCH",
        api.url(f"{api.config.path}/items/{item.key}"),
        what="adding the item to the collection",
        headers={"If-Unmodified-Since-Version": str(item.version), "Content-Type": "application/json"},
        body={"collections": [*item.data.collections, collection]},
    )
    if answer.status == 412:
        raise LibraryError("the item changed in Zotero while digest added it to the collection; try again")


async def _create(api: ZoteroAPI, paper: Paper, collection: str, token: str) -> str:
    key = await _write(api, f"{api.config.path}/items", [preprint(paper, collection)], token, "saving the paper")
    if key is not None:
        return key
    # The token was used: this very create was applied before, and its answer lost. The item is there.
    found = await _search(api, paper)
    if found is None:
        raise LibraryError("Zotero says this paper was saved already, and it is not in the library (in the trash?)")
    return found.key


async def _write(api: ZoteroAPI, path: str, objects: list[dict[str, Any]], token: str, what: str) -> str | None:
    """Create the objects (one, here) with a write token; the new key, or None when the token was used before."""
    answer = await api.send(
        "POST",
        api.url(path),
        what=what,
        headers={"Zotero-Write-Token": token, "Content-Type": "application/json"},
        body=objects,
    )
    if answer.status == 412:
        return None
    result = api.parsed(answer, WRITTEN, what)
    key = result.key(0)
    if key is None:
        failure = result.failed.get("0")
        said = f": {failure.message[:200]} (code {failure.code})" if failure is not None else ""
        raise LibraryError(f"Zotero refused {what}{said}")
    return key


def preprint(paper: Paper, collection: str) -> dict[str, Any]:
    """The paper as a Zotero `preprint` item, in the fields Zotero's own arXiv translator fills."""
    arxiv = paper.source == "arXiv"
    item: dict[str, Any] = {
        "itemType": "preprint",
        "title": paper.title,
        "creators": [_creator(name) for name in paper.authors],
        "abstractNote": paper.abstract,
        "date": paper.announced.isoformat(),
        "repository": paper.source,
        "url": paper.abs_url,
        "DOI": f"10.48550/arXiv.{paper.id}" if arxiv else paper.id,
        "collections": [collection],
        "tags": [],
        "relations": {},
    }
    if arxiv:
        category = f" [{paper.primary_category}]" if paper.primary_category else ""
        item |= {"archiveID": f"arXiv:{paper.id}", "extra": f"arXiv: {paper.id}{category}"}
    return item


def _creator(name: str) -> dict[str, str]:
    first, _, last = name.strip().rpartition(" ")
    if not first:
        return {"creatorType": "author", "name": last}
    return {"creatorType": "author", "firstName": first, "lastName": last}
