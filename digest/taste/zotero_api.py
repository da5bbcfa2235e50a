"""Zotero's Web API v3, and Zotero desktop's local API that speaks it, as digest uses it: a few requests, each
answered as Zotero documents (zotero.org/support/dev/web_api/v3/basics and /syncing).

httpx directly, not pyzotero: pyzotero is synchronous, sends no `If-Modified-Since-Version` (so an unchanged
library would cost a full listing), does not wait out `Backoff`, and reads any body whole; digest needs six
endpoints, each answer bounded and checked. Every answer is untrusted: its size is capped as it streams in, its
JSON is validated into the models below (an item that does not validate is that item's loss), the `Link` it names
for the next page is followed only on the configured server, and the key is sent nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from digest.config import ZoteroConfig
from digest.errors import LibraryError
from digest.net.http import TooLarge, capped_client
from digest.net.pacing import Sleep, backoff
from digest.net.rate_headers import retry_after
from digest.sources.base import USER_AGENT

log = logging.getLogger(__name__)

T = TypeVar("T")

API_VERSION = "3"
# A page of 50 items is about 150 kB, and a versions listing of 100,000 items about 3 MB: an answer larger than
# this is a broken or hostile server, and is cut off as it streams in.
ANSWER_BYTES = 16 * 2**20
REQUEST_SECONDS = 30.0  # each request as a whole: a server trickling its answer is cut off
ATTEMPTS = 5  # a request answered 429, 409, 5xx or not at all is tried this often
FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 30.0
RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})  # 409: the library is locked for a moment
KEY = r"^[A-Za-z0-9]{1,32}$"  # Zotero's keys are 8 characters of [23456789A-Z]; nothing else goes into a URL
KEYS_SETTINGS = "https://www.zotero.org/settings/keys"


class Budget:
    """What one read of a library may spend: requests, and seconds from now. A library is read again on the next
    run from where this one stopped, so a budget bounds a run's wait, never what is eventually read."""

    def __init__(self, requests: int, seconds: float) -> None:
        self.requests = requests
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds


class OutOfBudget(LibraryError):
    """The read stopped at its budget (or at a wait Zotero asked for that goes past it): what was read is kept."""


class AnswerTooLarge(LibraryError):
    """An answer passed ANSWER_BYTES: a broken or hostile server, or one huge item among those asked for."""


class Creator(BaseModel):
    model_config = ConfigDict(extra="ignore")

    creatorType: str = ""
    firstName: str = ""
    lastName: str = ""
    name: str = ""  # one-field names: an organisation, or a name Zotero keeps whole


class ItemData(BaseModel):
    """What digest reads of an item's `data` (untrusted text, every field of it)."""

    model_config = ConfigDict(extra="ignore")

    itemType: str = ""
    title: str = ""
    creators: list[Creator] = []
    abstractNote: str = ""
    date: str = ""
    url: str = ""
    DOI: str = ""
    extra: str = ""
    archiveID: str = ""
    number: str = ""
    repository: str = ""  # a preprint's server as Zotero's translators write it: arXiv, bioRxiv, medRxiv
    dateAdded: str = ""
    collections: list[str] = []
    deleted: bool = False  # in the trash


class Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str = Field(pattern=KEY)
    version: int
    data: ItemData


class CollectionData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parentCollection: str | bool = False  # false at the top


class Collection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str = Field(pattern=KEY)
    version: int
    data: CollectionData


class Deleted(BaseModel):
    """`/deleted?since=V`: the keys of what was deleted since."""

    model_config = ConfigDict(extra="ignore")

    items: list[str] = []
    collections: list[str] = []


class Access(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user: dict[str, bool] = {}
    groups: dict[str, dict[str, bool]] = {}


class KeyInfo(BaseModel):
    """`/keys/current`: whose key it is and what it may do. (The answer also echoes the key: never kept.)"""

    model_config = ConfigDict(extra="ignore")

    userID: int
    username: str = ""
    access: Access = Access()


class WriteFailure(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: int = 0
    message: str = ""


class WriteResult(BaseModel):
    """A multi-object write's answer: by the index of each object sent, its key (`successful` with the object, or
    `success` with its key alone, as older servers answer), or why not."""

    model_config = ConfigDict(extra="ignore")

    successful: dict[str, Item | dict[str, Any]] = {}
    success: dict[str, str] = {}
    unchanged: dict[str, str] = {}
    failed: dict[str, WriteFailure] = {}

    def key(self, index: int) -> str | None:
        done = self.successful.get(str(index))
        if isinstance(done, Item):
            return done.key
        if isinstance(done, dict) and isinstance(done.get("key"), str):
            return str(done["key"])
        return self.success.get(str(index)) or self.unchanged.get(str(index))


VERSIONS = TypeAdapter(dict[str, int])
OBJECTS = TypeAdapter(list[dict[str, Any]])
DELETED = TypeAdapter(Deleted)
KEY_INFO = TypeAdapter(KeyInfo)
WRITTEN = TypeAdapter(WriteResult)


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    links: dict[str, str]  # rel -> URL, from the Link header

    @property
    def version(self) -> int | None:
        """Last-Modified-Version: every multi-object answer carries it."""
        value = self.headers.get("last-modified-version", "")
        return int(value) if value.isdigit() else None


class ZoteroAPI:
    """One library's API, within a budget. Waits out `Backoff` (on any answer) before the next request and
    `Retry-After` (on 429 and 503) before trying again."""

    def __init__(self, config: ZoteroConfig, budget: Budget, *, sleep: Sleep = asyncio.sleep) -> None:
        self.config = config
        self.requests = 0
        self._budget = budget
        self._sleep = sleep
        self._not_before = 0.0  # Backoff: no request before this (monotonic)
        self._headers = {"Zotero-API-Version": API_VERSION, "User-Agent": USER_AGENT}
        if config.api_key is not None and config.api_key.get_secret_value():
            self._headers["Zotero-API-Key"] = config.api_key.get_secret_value()
        self._origin = httpx.URL(config.api_url)
        self._http = capped_client(ANSWER_BYTES, timeout=REQUEST_SECONDS)

    async def __aenter__(self) -> ZoteroAPI:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: dict[str, str], *, what: str, since: int | None = None) -> Answer:
        """GET a path of the API (`/users/1/items`, `/keys/current`); with `since`, 304 when nothing changed after
        that version."""
        extra = {"If-Modified-Since-Version": str(since)} if since is not None else {}
        return await self.send("GET", self.url(path, params), what=what, headers=extra)

    async def pages(
        self, path: str, params: dict[str, str], *, what: str, since: int | None = None
    ) -> AsyncIterator[Answer]:
        """Every page of a listing, following the `Link` header's rel="next" (on this server only); with `since`,
        only a 304 when nothing changed after that version."""
        answer = await self.get(path, params, what=what, since=since)
        yield answer
        while (following := answer.links.get("next")) is not None:
            url = httpx.URL(following)
            if (url.scheme, url.host, url.port) != (self._origin.scheme, self._origin.host, self._origin.port):
                raise LibraryError(
                    f"the next page of {what} is on another server ({url.host}); digest sends its key to api_url only",
                    hint="check library.zotero.api_url",
                )
            answer = await self.send("GET", url, what=what)
            yield answer

    async def send(
        self,
        method: str,
        url: httpx.URL,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        body: object = None,
    ) -> Answer:
        """One request, tried again on 429, 409, 5xx and failed connections (a POST with its write token, so that
        Zotero applies it once). Returns answers below 400, and 412; any other is a LibraryError that says why."""
        attempt = 0
        while True:
            attempt += 1
            await self._wait(self._not_before - time.monotonic(), what, "a pause Zotero asked for (Backoff)")
            if self.requests >= self._budget.requests:
                raise OutOfBudget(f"its budget of {self._budget.requests} requests")
            if time.monotonic() >= self._budget.deadline:
                raise OutOfBudget(f"its budget of {self._budget.seconds:.0f} s")
            self.requests += 1
            wait: float | None = None
            try:
                async with asyncio.timeout(max(0.1, min(REQUEST_SECONDS, self._budget.deadline - time.monotonic()))):
                    response = await self._http.request(
                        method,
                        url,
                        headers={**self._headers, **(headers or {})},
                        content=None if body is None else json.dumps(body).encode(),
                    )
                    content = await response.aread()
                problem = f"HTTP {response.status_code}"
                self._read_backoff(response.headers)
                if response.status_code not in RETRYABLE:
                    return self._checked(response, content, what)
                wait = retry_after(response.headers)
            except TooLarge:
                raise AnswerTooLarge(
                    f"the answer to {what} is larger than {ANSWER_BYTES // 2**20} MB",
                    hint="check library.zotero.api_url: Zotero's own answers are far smaller",
                ) from None
            except (TimeoutError, httpx.TimeoutException):
                if time.monotonic() >= self._budget.deadline:
                    raise OutOfBudget(f"its budget of {self._budget.seconds:.0f} s") from None
                problem = "no answer in time"
            except httpx.TransportError as error:
                problem = f"cannot connect ({error.__class__.__name__})"
                if self.config.local:
                    raise LibraryError(
                        f"cannot connect to {self.config.api_url}: is Zotero desktop running?",
                        hint="start Zotero desktop, with 'Allow other applications on this computer to communicate "
                        "with Zotero' on (Settings > Advanced)",
                    ) from None
            if attempt >= ATTEMPTS:
                raise LibraryError(
                    f"{what} failed {attempt} times ({problem})",
                    hint="Zotero may be down or busy; the library is read again on the next run",
                )
            if wait is None:
                wait = backoff(attempt, first=FIRST_RETRY_SECONDS, longest=LONGEST_RETRY_SECONDS)
            log.info("zotero: %s: %s; trying again in %.1f s", what, problem, wait)
            await self._wait(wait, what, f"the wait Zotero asked for ({problem})")

    def url(self, path: str, params: dict[str, str] | None = None) -> httpx.URL:
        """A path of the API (`/users/1/items`, `/keys/current`) on the configured server."""
        return httpx.URL(f"{self.config.api_url}{path}", params=params)

    def _read_backoff(self, headers: httpx.Headers) -> None:
        value = headers.get("backoff", "").strip()
        try:
            seconds = float(value) if value else 0.0
        except ValueError:
            return
        if seconds > 0:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    async def _wait(self, seconds: float, what: str, why: str) -> None:
        if seconds <= 0:
            return
        if time.monotonic() + seconds > self._budget.deadline:
            raise OutOfBudget(f"{why} of {seconds:.0f} s, past its budget")
        await self._sleep(seconds)

    def _checked(self, response: httpx.Response, content: bytes, what: str) -> Answer:
        status = response.status_code
        if status < 400 or status == 412:
            links = {str(rel): str(link["url"]) for rel, link in response.links.items() if "url" in link}
            return Answer(status=status, headers=response.headers, body=content, links=links)
        if status in (401, 403):
            if self.config.local:
                raise LibraryError(
                    f"Zotero desktop refused {what} (HTTP {status}): its local API is off",
                    hint="in Zotero, Settings > Advanced, turn on 'Allow other applications on this computer to "
                    "communicate with Zotero'",
                )
            if "Zotero-API-Key" not in self._headers:
                raise LibraryError(
                    f"the library is not public (HTTP {status})",
                    hint=f"give library.zotero.api_key, a key that may read it ({KEYS_SETTINGS})",
                )
            raise LibraryError(
                f"the API key may not do this: {what} (HTTP {status})",
                hint=f"check library.zotero.api_key and what it may do at {KEYS_SETTINGS}; `digest check` says",
            )
        if status == 404:
            raise LibraryError(
                f"{self.config.api_url} has no such library (HTTP 404 for {what})",
                hint="check library.zotero.user_id or group_id (your userID is on "
                f"{KEYS_SETTINGS}; 0 for the local API) and api_url",
            )
        raise LibraryError(f"Zotero refused {what} (HTTP {status})", hint="check library.zotero")

    def parsed(self, answer: Answer, adapter: TypeAdapter[T], what: str) -> T:
        """The answer's JSON as `adapter` reads it; anything else (an HTML page with 200) is a LibraryError."""
        try:
            return adapter.validate_json(answer.body)
        except ValidationError:
            kind = answer.headers.get("content-type", "no content type").partition(";")[0]
            raise LibraryError(
                f"the answer to {what} is not Zotero's JSON (it is {kind})",
                hint="check library.zotero.api_url: it should be https://api.zotero.org, or "
                "http://localhost:23119/api for Zotero desktop",
            ) from None

    def version_of(self, answer: Answer, what: str) -> int:
        version = answer.version
        if version is None:
            raise LibraryError(
                f"the answer to {what} has no Last-Modified-Version, as Zotero's always have",
                hint="check library.zotero.api_url",
            )
        return version
