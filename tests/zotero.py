"""A loopback server speaking Zotero's Web API v3 (and Zotero desktop's local API under /api), built on the real
responses in fixtures/zotero/ (see fixtures/SOURCES.md): each item is the real single-item document with its `data`
replaced, each collection the real collection document, and `/keys/current`, `/deleted` and write answers are the
real ones with their values changed.

It keeps a library as Zotero does: one version counter, bumped by every write, each object carrying the version of
its last change; deletions remembered by version. It answers `If-Modified-Since-Version` with 304, `since`,
`format=versions`, `itemKey` (at most 50), `includeTrashed`, `q` with `qmode=everything`, paging by `start` and
`limit` with a `Link` header, `Backoff` on any answer when told to, scripted failures (429 with `Retry-After`, 503,
an HTML page with 200, an endless body), the local API's 403, writes with `Zotero-Write-Token` (a token used twice
is a 412) and `If-Unmodified-Since-Version`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from tests.servers import Receive, Scope, Send, _read_body, _respond

FIXTURES = Path(__file__).parent / "fixtures" / "zotero"
ITEM_DOC = json.loads((FIXTURES / "pyzotero_item_doc.json").read_text())
REAL_ITEMS = json.loads((FIXTURES / "pyzotero_items_doc.json").read_text())  # 20 items, none a preprint
COLLECTION_DOC = json.loads((FIXTURES / "pyzotero_collection_doc.json").read_text())
REAL_COLLECTIONS = json.loads((FIXTURES / "pyzotero_collections_doc.json").read_text())
KEY_DOC = json.loads((FIXTURES / "zotero-api-client_keys-current-response.json").read_text())
DELETED_DOC = json.loads((FIXTURES / "zotero-api-client_deleted-response.json").read_text())
WRITE_DOC = json.loads((FIXTURES / "zotero-api-client_multi-success-write-response.json").read_text())
FAILED_WRITE_DOC = json.loads((FIXTURES / "zotero-api-client_multi-mixed-write-response.json").read_text())
KEY_CHARACTERS = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ"  # Zotero's object keys
HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Captive portal</body></html>"
API_KEY = "zoteroTESTkey0123456789ab"


def new_key(rng: random.Random) -> str:
    return "".join(rng.choice(KEY_CHARACTERS) for _ in range(8))


def preprint_data(
    arxiv_id: str,
    title: str,
    *,
    abstract: str = "",
    authors: Iterable[str] = (),
    collections: Iterable[str] = (),
    added: str = "2026-06-01T09:00:00Z",
    where: str = "archiveID",
) -> dict[str, Any]:
    """An item's `data` as Zotero's arXiv translator fills a preprint (see the notes), the id in the field `where`
    names only: archiveID, extra, DOI, url or number."""
    fields = {
        "archiveID": f"arXiv:{arxiv_id}",
        "extra": f"arXiv: {arxiv_id} [cs.CL]",
        "DOI": f"10.48550/arXiv.{arxiv_id}",
        "url": f"http://arxiv.org/abs/{arxiv_id}v1",
        "number": arxiv_id,
    }
    return {
        "itemType": "preprint",
        "title": title,
        "creators": [
            {"creatorType": "author", "firstName": " ".join(name.split()[:-1]), "lastName": name.split()[-1]}
            for name in authors
        ],
        "abstractNote": abstract,
        "genre": "",
        "repository": "arXiv",
        "archiveID": "",
        "place": "",
        "date": "2026-06-30",
        "series": "",
        "seriesNumber": "",
        "DOI": "",
        "citationKey": "",
        "url": "",
        "accessDate": "2026-07-01T08:00:00Z",
        "archive": "",
        "archiveLocation": "",
        "shortTitle": "",
        "language": "",
        "libraryCatalog": "arXiv.org",
        "callNumber": "",
        "rights": "",
        "extra": "",
        "dateAdded": added,
        "dateModified": added,
        "tags": [],
        "collections": list(collections),
        "relations": {},
    } | {where: fields[where]}


@dataclass
class FakeZotero:
    """One user's library (USER_ID's), or a group's, on loopback; `local`: Zotero desktop's local API (under /api,
    user 0, no key, 403 until `local_enabled`)."""

    user_id: int = 475425
    group_id: int | None = None  # a group's library, under /groups/ID
    local: bool = False
    local_enabled: bool = True
    key_may_write: bool = True
    page_limit: int = 100  # the most a page of JSON holds (Zotero: 100)
    versions_page: int | None = None  # format=versions paged this many at a time (None: all at once)
    backoff: str | None = None  # sent with every answer
    script: list[tuple[int, dict[str, str], bytes | str]] = field(default_factory=list)  # answered first, in turn
    hostile: str | None = None  # "endless": every answer a body that never ends
    requests: list[dict[str, Any]] = field(default_factory=list)
    received_writes: list[Any] = field(default_factory=list)  # the JSON of each write request, as received
    version: int = 1
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the item document
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: list[tuple[int, str, str]] = field(default_factory=list)  # (version, "items"/"collections", key)
    tokens: set[str] = field(default_factory=set)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    bulk: int = 0  # this many more preprints (2401.00000, ...), made as they are asked for: a large library
    bulk_version: int = 1
    bulk_collection: str | None = None
    lose_write_answers: int = 0  # this many writes are applied and then answered 503, as if the answer were lost
    base_url: str = ""  # set once the server listens: the Link header's URLs are absolute
    _bulk_keys: list[str] = field(default_factory=list)

    # The library, as a test sets it up and changes it (each change is one write: the version goes up).

    @property
    def prefix(self) -> str:
        if self.local:
            return "/api/users/0"
        return f"/users/{self.user_id}" if self.group_id is None else f"/groups/{self.group_id}"

    def add_collection(self, name: str, parent: str | None = None, key: str | None = None) -> str:
        self.version += 1
        key = key or new_key(self.rng)
        document = copy.deepcopy(COLLECTION_DOC)
        document.update(key=key, version=self.version)
        document["data"].update(key=key, version=self.version, name=name, parentCollection=parent or False)
        self.collections[key] = document
        return key

    def add_real_collections(self) -> None:
        """The real library's 15 collections, as they are."""
        self.version += 1
        for document in REAL_COLLECTIONS:
            self.collections[document["key"]] = copy.deepcopy(document) | {"version": self.version}

    def add_real_items(self) -> None:
        """The real library's 20 items (web pages, articles, books, a film): none names an arXiv paper."""
        self.version += 1
        for document in REAL_ITEMS:
            self.items[document["key"]] = copy.deepcopy(document) | {"version": self.version}

    def add_item(self, data: dict[str, Any], key: str | None = None, *, bump: bool = True) -> str:
        if bump:
            self.version += 1
        key = key or new_key(self.rng)
        document = copy.deepcopy(ITEM_DOC)
        document.update(key=key, version=self.version)
        document["library"]["id"] = self.user_id
        document["meta"] = {"creatorSummary": "", "parsedDate": data.get("date", ""), "numChildren": 0}
        document["data"] = {"key": key, "version": self.version} | data
        self.items[key] = document
        return key

    def change_item(self, key: str, **changes: Any) -> None:
        self.version += 1
        document = self.items[key]
        document["version"] = self.version
        document["data"].update(changes, version=self.version)

    def delete_item(self, key: str) -> None:
        self.version += 1
        del self.items[key]
        self.deleted.append((self.version, "items", key))

    def add_bulk(self, count: int, collection: str | None = None) -> None:
        """`count` preprints made as they are asked for, all in one write (an import of a large library)."""
        self.version += 1
        self.bulk, self.bulk_version, self.bulk_collection = count, self.version, collection

    def bulk_item(self, key: str) -> dict[str, Any]:
        number = int(key[1:])
        data = preprint_data(
            f"2401.{number:05d}",
            f"Bulk paper {number}",
            abstract=f"An abstract of paper {number} of a large library.",
            authors=["Ada Lovelace", "Alan Turing"],
            collections=[self.bulk_collection] if self.bulk_collection else [],
        )
        # The real document's envelope, shared (never changed): a large library is made fast enough to read.
        return ITEM_DOC | {
            "key": key,
            "version": self.bulk_version,
            "data": {"key": key, "version": self.bulk_version} | data,
        }

    def bulk_keys(self) -> list[str]:
        if len(self._bulk_keys) != self.bulk:
            self._bulk_keys = [f"B{number:07d}" for number in range(self.bulk)]
        return self._bulk_keys

    def bump(self) -> None:
        """A change elsewhere in the library (a tag, a setting): a new version, no item or collection changed."""
        self.version += 1

    # The API.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = dict(parse_qsl(scope["query_string"].decode()))
        body = await _read_body(receive)
        self.requests.append({"method": scope["method"], "path": scope["path"], "query": query, "headers": headers})
        if self.hostile == "endless":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            for _ in range(100_000):
                await send({"type": "http.response.body", "body": b"[" + b" " * 65536, "more_body": True})
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b""})
            return
        if self.script:
            status, extra, content = self.script.pop(0)
            payload = content.encode() if isinstance(content, str) else content
            await _respond(send, status, payload, {"content-type": "text/html"} | extra | self._backoff())
            return
        status, answer, out = self._answer(scope["method"], scope["path"], query, headers, body)
        content = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        kind = "application/json" if not isinstance(answer, bytes) else "text/plain"
        await _respond(send, status, content, {"content-type": kind} | out | self._backoff())

    def _backoff(self) -> dict[str, str]:
        return {"backoff": self.backoff} if self.backoff else {}

    def _answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if self.local and not self.local_enabled:
            return 403, b"Local API is not enabled", {}
        if not self.local and headers.get("zotero-api-key") != API_KEY:
            return 403, b"Forbidden", {}
        if path == ("/api" if self.local else "") + "/keys/current":
            if self.local:
                return 404, b"Not found", {}
            document = copy.deepcopy(KEY_DOC)
            document.update(key=API_KEY, userID=self.user_id)
            document["access"]["user"]["write"] = self.key_may_write
            return 200, document, {}
        if not path.startswith(self.prefix + "/"):
            return 404, b"Not found", {}
        route = path[len(self.prefix) :]
        since = int(query.get("since", "0") or 0)
        changed_since = headers.get("if-modified-since-version")
        if method == "GET" and changed_since is not None and self.version <= int(changed_since):
            return 304, b"", {"last-modified-version": str(self.version)}
        if method == "GET" and route in ("/items", "/items/top"):
            return self._items(route, query, since)
        if method == "GET" and route == "/collections":
            listed = [c for c in self.collections.values() if c["version"] > since]
            return self._page(sorted(listed, key=lambda c: c["data"]["name"]), query, route)
        if method == "GET" and route == "/deleted" and not self.local:  # Zotero desktop has no /deleted
            document = copy.deepcopy(DELETED_DOC)
            for kind in ("items", "collections"):
                document[kind] = [key for version, what, key in self.deleted if what == kind and version > since]
            return 200, document, {"last-modified-version": str(self.version)}
        if method in ("POST", "PATCH") and not self.key_may_write:
            return 403, b"Write access denied", {}
        if method == "POST" and route in ("/items", "/collections"):
            return self._write(route[1:], headers, body)
        if method == "PATCH" and route.startswith("/items/"):
            return self._patch(route.removeprefix("/items/"), headers, body)
        return 404, b"Not found", {}

    def _items(self, route: str, query: dict[str, str], since: int) -> tuple[int, Any, dict[str, str]]:
        listed = [i for i in self.items.values() if i["version"] > since]
        if query.get("includeTrashed") != "1":
            listed = [i for i in listed if not i["data"].get("deleted")]
        bulk = self.bulk_keys() if self.bulk_version > since else []
        if "itemKey" in query:
            keys = query["itemKey"].split(",")
            if len(keys) > 50:
                return 400, b"Too many keys", {}
            listed = [i for i in listed if i["key"] in keys]
            listed += [self.bulk_item(key) for key in keys if key.startswith("B") and key[1:].isdigit()]
        elif "q" in query:  # qmode=everything: every field (of the items a test made one by one)
            listed = [i for i in listed if query["q"].lower() in json.dumps(i["data"]).lower()]
        if query.get("format") == "versions":
            versions = {i["key"]: i["version"] for i in listed} | dict.fromkeys(bulk, self.bulk_version)
            if self.versions_page is None:
                return 200, versions, {"last-modified-version": str(self.version), "total-results": str(len(versions))}
            return self._page(listed, query, route, limit=self.versions_page, shape=versions_of)
        return self._page(listed, query, route)

    def _page(
        self,
        listed: list[dict[str, Any]],
        query: dict[str, str],
        route: str,
        *,
        limit: int | None = None,
        shape: Any = None,
    ) -> tuple[int, Any, dict[str, str]]:
        start = int(query.get("start", "0"))
        limit = limit or min(int(query.get("limit", "25")), self.page_limit)
        page = listed[start : start + limit]
        headers = {"last-modified-version": str(self.version), "total-results": str(len(listed))}
        if start + limit < len(listed):
            following = urlencode(query | {"start": str(start + limit), "limit": str(limit)})
            base = f"{self.base_url}{self.prefix}{route}"
            headers["link"] = (
                f'<{base}?{following}>; rel="next", <{base}?{urlencode(query | {"start": str(len(listed) - 1)})}>; '
                f'rel="last", <https://www.zotero.org/users/{self.user_id}{route}>; rel="alternate"'
            )
        return 200, shape(page) if shape else page, headers

    def _write(self, kind: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        token = headers.get("zotero-write-token")
        if token is not None and token in self.tokens:
            return 412, b"Write token already used", {}
        objects = json.loads(body)
        self.received_writes.append(objects)
        if token is not None:
            self.tokens.add(token)
        if self.lose_write_answers:
            self.lose_write_answers -= 1
            self._write_objects(kind, objects)
            return 503, b"Service Unavailable", {}
        return 200, self._write_objects(kind, objects), {"last-modified-version": str(self.version)}

    def _write_objects(self, kind: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
        document = copy.deepcopy(WRITE_DOC)
        document["success"] = {}
        for index, data in enumerate(objects):
            if kind == "items" and not data.get("title"):
                failed = copy.deepcopy(FAILED_WRITE_DOC)["failed"]["1"]
                document["failed"][str(index)] = failed | {"key": "", "message": "Item title is empty"}
                continue
            key = self.add_item(data) if kind == "items" else self.add_collection(data["name"])
            document["success"][str(index)] = key
        return document

    def _patch(self, key: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        item = self.items.get(key)
        if item is None:
            return 404, b"Not found", {}
        if headers.get("if-unmodified-since-version") != str(item["version"]):
            return 412, b"Item has been modified since specified version", {}
        self.received_writes.append(json.loads(body))
        self.change_item(key, **json.loads(body))
        return 204, b"", {"last-modified-version": str(self.version)}


def versions_of(items: list[dict[str, Any]]) -> dict[str, int]:
    return {i["key"]: i["version"] for i in items}
