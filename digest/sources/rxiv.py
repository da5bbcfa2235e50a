"""The API bioRxiv and medRxiv share (api.biorxiv.org, Cold Spring Harbor Laboratory): the papers posted in an
interval of days, page by page, and a paper by its DOI. digest/sources/biorxiv.py and medrxiv.py are its two
servers.

What the API really does, as its users found it (see tests/fixtures/SOURCES.md): a page is 30 records (its help
page says 100), `cursor` is a record offset, so the next page starts where this one's records end; each record is
one version of a paper, its `version` a string, its `date` the day that version was posted, its `published` a
journal DOI or "NA"; its text is flattened JATS (digest/sources/rxiv_text.py); an empty interval is `"status": "no
posts found"`, and a broken one can be a 200 with an empty body; a record's `type` is "withdrawn" (bioRxiv) or
"WITHDRAWN" (medRxiv) for the version that withdraws its paper. Nothing it sends is trusted: each record is checked
on its own and one that does not read costs itself only, and a listing that does not behave as one (pages that
repeat, a `total` it never reaches) is ended, bounded in pages and in time, and said.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from digest.config import Config, PreprintServerConfig
from digest.errors import FetchError
from digest.models import Feed, Paper, PaperLinks
from digest.net.http import capped_client
from digest.net.pacing import RateLimiter, Sleep
from digest.sources.base import USER_AGENT, FeedState, PaperRef
from digest.sources.retrying import get_with_retries
from digest.sources.rxiv_text import plain_abstract, plain_text
from digest.taxonomy import normalise_subject
from digest.wording import counted

log = logging.getLogger(__name__)

REQUESTS_PER_MINUTE = 60  # the API publishes no limit: a request a second, on one connection
CATCH_UP_DAYS = 30  # after a longer gap, the last 30 days are read and the rest is said to be missed
MAX_PAGES = 500  # 15,000 records at 30 a page, a month of bioRxiv; a longer listing is cut, and said so
# A listing takes at most this share of max_run_minutes: an API that never ends its listing must not hold up the
# other sources' judging and delivery (bioRxiv's and medRxiv's listings together, half the run at most).
LISTING_SHARE_OF_RUN = 0.25
EMPTY_PAGE_ASKS = 3  # a page with no records before the listing's total is asked this often before it is given up
EMPTY_PAGE_WAIT_SECONDS = 2.0
WITHDRAWN_SHOWN = 5
DOI = re.compile(r"10\.\d{4,9}/[0-9A-Za-z.\-_/]{1,100}")
# bioRxiv's and medRxiv's DOIs, under Cold Spring Harbor's prefix 10.1101 and, since December 2025, 10.64898:
# 10.1101/2026.06.30.612345, and 10.1101/833400 of the first years. Both servers give out DOIs of one shape, so a
# DOI alone does not say which server has the paper.
RXIV_DOI = re.compile(r"10\.(?:1101|64898)/(?:\d{4}\.\d{2}\.\d{2}\.)?\d{6,8}")
VERSIONED_DOI = rf"(?P<doi>{RXIV_DOI.pattern})(?:v(?P<version>\d+))?"
DOI_LINK = r"(?:doi:\s*|https?://(?:dx\.)?doi\.org/)"
PAGE_SUFFIX = r"(?:\.full|\.full\.pdf|\.abstract|\.full-text)?/?"


def _text(clean: Callable[[str], str], limit: int) -> BeforeValidator:
    """Untrusted text made plain by `clean` and cut to `limit`; a null as no text (a paper with no abstract is still
    a paper)."""

    def plain(value: object) -> object:
        if value is None:
            return ""
        return clean(value)[:limit] if isinstance(value, str) else value

    return BeforeValidator(plain)


class Record(BaseModel):
    """One version of one paper, as the API writes it; what digest does not use is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    doi: Annotated[str, _text(plain_text, 200), Field(pattern=DOI.pattern)]
    version: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")]
    date: dt.date
    title: Annotated[str, _text(plain_text, 1000), Field(min_length=1)]
    authors: Annotated[str, _text(plain_text, 20_000)] = ""
    abstract: Annotated[str, _text(plain_abstract, 20_000)] = ""
    category: Annotated[str, _text(plain_text, 200), Field(min_length=1)]
    type: Annotated[str, _text(plain_text, 100)] = ""  # "new results", "PUBLISHAHEADOFPRINT"; or withdrawn
    server: Annotated[str, _text(plain_text, 100)] = ""  # "bioRxiv", "medRxiv"

    @property
    def withdrawn(self) -> bool:
        """The version that withdraws the paper: `withdrawn` on bioRxiv, `WITHDRAWN` on medRxiv."""
        return self.type.strip().lower() == "withdrawn"


def rxiv_pacer(*, sleep: Sleep = asyncio.sleep) -> RateLimiter:
    """A request a second, no burst: the API publishes no limit."""
    return RateLimiter(REQUESTS_PER_MINUTE, 10**12, burst_seconds=0, opening_seconds=0, sleep=sleep)


def _author(name: str) -> str:
    """ "Wheatley, A. K." -> "A. K. Wheatley", as arXiv writes names, so followed authors match either way."""
    family, _, given = name.partition(",")
    return f"{given.strip()} {family.strip()}".strip() if given.strip() else family.strip()


@functools.cache
def _forms(site: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """What names a paper of the server at `site`: pasted whole (a DOI, a doi.org link, a page of the site, with a
    version as the pages write it), and inside a longer text (a DOI, or a page of the site)."""
    host = re.escape((urlsplit(site).hostname or "").removeprefix("www."))
    page = rf"https?://(?:www\.)?{host}/content/(?:early/\d{{4}}/\d{{2}}/\d{{2}}/)?"
    pasted = re.compile(rf"(?:(?P<page>{page})|{DOI_LINK})?{VERSIONED_DOI}{PAGE_SUFFIX}", re.IGNORECASE)
    mentioned = re.compile(rf"(?P<page>{page})?{VERSIONED_DOI}(?![\d.])", re.IGNORECASE)
    return pasted, mentioned


class PreprintServer:
    """One of the API's servers. `name` is its config section and its name in the API's paths."""

    name: ClassVar[str]
    label: ClassVar[str]
    site: ClassVar[str]  # where its papers' pages are: https://www.biorxiv.org
    doi_example: ClassVar[str]  # one of its DOIs, for messages
    service: ClassVar[str]
    pasted_forms: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.service = f"{cls.label} API"
        host = (urlsplit(cls.site).hostname or "").removeprefix("www.")
        cls.pasted_forms = f"a {cls.label} DOI like {cls.doi_example} or its page on {host}"

    def __init__(
        self, config: PreprintServerConfig, pacer: RateLimiter, *, listing_seconds: float, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._config = config
        self._pacer = pacer  # every request, retries included, waits its turn
        self._listing_seconds = listing_seconds  # what one listing may take, retries included
        self._sleep = sleep
        self.requests = 0

    @classmethod
    def from_config(cls, config: Config, pacer: RateLimiter) -> PreprintServer | None:
        section: PreprintServerConfig | None = getattr(config, cls.name)
        if section is None:
            return None
        return cls(
            config.fetched_from(section), pacer, listing_seconds=config.max_run_minutes * 60 * LISTING_SHARE_OF_RUN
        )

    @classmethod
    def pasted(cls, text: str) -> PaperRef | None:
        match = _forms(cls.site)[0].fullmatch(text.strip())
        return cls._ref(match) if match else None

    @classmethod
    def mentioned(cls, text: str) -> tuple[int, PaperRef] | None:
        match = _forms(cls.site)[1].search(text)
        return (match.start(), cls._ref(match)) if match else None

    @classmethod
    def _ref(cls, match: re.Match[str]) -> PaperRef:
        """A page of this server's site names it; a DOI alone names either server."""
        version = int(match["version"]) if match["version"] else None
        return PaperRef(match["doi"], version, cls.name if match["page"] else None)

    @classmethod
    def knows(cls, paper_id: str) -> bool:
        return RXIV_DOI.fullmatch(paper_id) is not None

    @classmethod
    def pages(cls, paper_id: str, version: int) -> PaperLinks:
        page = f"{cls.site}/content/{paper_id}v{version}"
        return PaperLinks(abstract=page, pdf=f"{page}.full.pdf", html=f"{page}.full")

    def state_key(self) -> str:
        return f"{self._config.api_url}/details/{self.name}"

    async def fetch(self, state: FeedState | None) -> Feed:
        """The papers posted since the last fetch (that day included: the API lists a day's papers into the next
        day), or yesterday's and today's on the first; after a gap, at most CATCH_UP_DAYS back."""
        today = dt.date.today()
        last = state.last_announced if state is not None else None
        start = today - dt.timedelta(days=1) if last is None else max(last, today - dt.timedelta(days=CATCH_UP_DAYS))
        feed = await self._interval(start, today)
        if last is not None and last < today - dt.timedelta(days=CATCH_UP_DAYS):
            missed = f"{self.label}: the last fetch was on {last}; only the last {CATCH_UP_DAYS} days were read"
            feed = feed.model_copy(update={"notes": [*feed.notes, missed]})
        return feed

    async def since(self, day: dt.date) -> Feed:
        return await self._interval(day, dt.date.today())

    async def check(self) -> str:
        today = dt.date.today()
        url = f"{self._config.api_url}/details/{self.name}/{today - dt.timedelta(days=1)}/{today}/0/json"
        async with self._client() as http:
            page = await self._page(http, url)
        return f"{url}: {_total(page) or 0} papers posted yesterday and today"

    async def lookup(self, paper_ids: list[str]) -> dict[str, Paper]:
        """The newest version of each DOI this server has; the others are missing. A record the API says is the
        other server's is not this server's paper."""
        found: dict[str, Paper] = {}
        async with self._client() as http:
            for doi in dict.fromkeys(paper_ids):
                page = await self._page(http, f"{self._config.api_url}/details/{self.name}/{doi}/na/json")
                versions = [
                    r for r in _records(page, self.label, []) if r.doi == doi and r.server.lower() in ("", self.name)
                ]
                if versions:
                    found[doi] = self._paper(max(versions, key=lambda r: int(r.version)), first=False)
        return found

    def _client(self) -> httpx.AsyncClient:
        limit = int(self._config.max_page_mb * 1_000_000)
        return capped_client(limit, timeout=self._config.timeout_seconds, follow_redirects=True)

    async def _interval(self, start: dt.date, end: dt.date) -> Feed:
        """The interval's listing, page by page, each page starting where the records before it end, until the
        listing's total; with no total, while pages are full. It ends early, said in the summary and read again by
        the next run, when a page does not read, when it is longer than MAX_PAGES pages or takes longer than its
        share of the run, and when the API is not listing at all: a page that brings only records already read, an
        answer for another cursor than the one asked, a page with no records before the total (asked again first).
        """
        base = f"{self._config.api_url}/details/{self.name}/{start.isoformat()}/{end.isoformat()}"
        records: dict[tuple[str, str], Record] = {}  # by DOI and version
        unreadable: list[str] = []
        skipped: dict[str, int] = {}
        notes: list[str] = []
        ended: str | None = None  # why the listing ended before its end, in words
        page_unread = False
        cursor = 0
        full = 0  # the most records a page has held: the API's page size, as far as it is seen
        total: int | None = None
        deadline = time.monotonic() + self._listing_seconds
        async with self._client() as http:
            for pages in itertools.count():
                if pages == MAX_PAGES:
                    ended = f"it is longer than {MAX_PAGES} pages"
                    break
                if time.monotonic() >= deadline:
                    ended = f"reading it took longer than {self._listing_seconds:.0f} s, a quarter of max_run_minutes"
                    break
                try:
                    page = await self._listed_page(http, f"{base}/{cursor}/json", cursor, deadline)
                except FetchError as error:
                    if cursor == 0:
                        raise
                    # The pages before are kept; the listing is asked again from its start by the next run.
                    unreadable.append(f"{self.label} page at record {cursor}: {error.message}")
                    page_unread = True
                    break
                listed = page.get("collection") or []
                total = _total(page)
                answered = _cursor(page)
                if answered is not None and answered != cursor:
                    ended = f"the API answered the page at record {cursor} with the one at record {answered}"
                    break
                if not listed:
                    if total is not None and cursor < total:
                        ended = f"the page at record {cursor} had no records, {EMPTY_PAGE_ASKS} times"
                    break
                read = _records(page, self.label, unreadable)
                if read and all((r.doi, r.version) in records for r in read):
                    ended = f"the page at record {cursor} brought only records of the pages before it"
                    break
                records.update({(r.doi, r.version): r for r in read})
                cursor += len(listed)
                full = max(full, len(listed))
                if (total is not None and cursor >= total) or (total is None and len(listed) < full):
                    break
        if ended is not None:
            of_total = f" of {total:,}" if total is not None else ""
            notes.append(
                f"{self.label}: the listing from {start} to {end} ended early, at record {cursor:,}{of_total}: "
                f"{ended}; the next run reads it again"
            )
        papers = self._chosen(list(records.values()), skipped, notes)
        if not records and not unreadable and ended is None:
            notes.append(f"{self.label}: no new papers in {', '.join(self._config.categories)} from {start} to {end}")
        log.info("%s: %d papers from %s to %s in %d requests", self.label, len(papers), start, end, self.requests)
        complete = ended is None and not page_unread
        return Feed(
            url=self.state_key(),
            # An incomplete listing leaves the state where it was, so that the next run reads it again.
            announced=end if complete else start,
            papers=papers,
            skipped=skipped,
            unreadable=unreadable,
            source=self.label,
            requests=self.requests,
            notes=notes,
        )

    async def _listed_page(self, http: httpx.AsyncClient, url: str, cursor: int, deadline: float) -> dict[str, Any]:
        """A page of a listing; one with no records before the listing's total is asked again (EMPTY_PAGE_ASKS in
        all), as a page that read but said nothing."""
        budget = max(1.0, min(self._config.max_retry_seconds, deadline - time.monotonic()))
        asked = 0
        while True:
            page = await self._page(http, url, budget)
            asked += 1
            total = _total(page)
            if page.get("collection") or total is None or cursor >= total or asked == EMPTY_PAGE_ASKS:
                return page
            log.warning("%s %s: no records before the listing's total (%d); asking again", self.label, url, total)
            await self._sleep(EMPTY_PAGE_WAIT_SECONDS)

    async def _page(self, http: httpx.AsyncClient, url: str, budget: float | None = None) -> dict[str, Any]:
        """One page as JSON, paced and retried within `budget` seconds (max_retry_seconds); a FetchError when it
        never reads as a page of the API's."""
        what = f"{self.label} API"
        settings = f"{self.name}.api_url"
        budget = self._config.max_retry_seconds if budget is None else budget

        async def take_turn() -> None:
            self.requests += 1
            await self._pacer.acquire(0)

        clock = time.monotonic()
        while True:
            response = await get_with_retries(
                http,
                url,
                {"User-Agent": USER_AGENT},
                budget,
                self._sleep,
                what=what,
                who=self.label,
                settings=settings,
                before_each=take_turn,
            )
            page, problem = _read_page(response.content)
            if page is not None:
                return page
            # A 200 that is not a page (an empty body, a proxy's HTML): retried like a 5xx, within the same budget.
            if time.monotonic() - clock + 2 > budget:
                raise FetchError(
                    f"{what} {url} answered with {problem}",
                    hint=f"{self.label}'s API may be having trouble; the next run asks again",
                )
            log.warning("%s %s answered with %s; asking again", what, url, problem)
            await self._sleep(2)

    def _chosen(self, records: list[Record], skipped: dict[str, int], notes: list[str]) -> list[Paper]:
        """Of each paper listed, its newest version: new when its first version was posted the same day (posted and
        revised at once: new to the reader), a replacement otherwise, as arXiv's (a first version of an earlier day
        was read by that day's run); then those of the followed subjects and announce types. A paper whose newest
        version withdraws it is left out, and named: it is not for reading, and not news to send again."""
        subjects = set(self._config.categories)
        by_doi: dict[str, list[Record]] = {}
        for record in records:
            by_doi.setdefault(record.doi, []).append(record)
        found = []
        withdrawn: list[str] = []
        for versions in by_doi.values():
            newest = max(versions, key=lambda r: int(r.version))
            paper = self._paper(newest, first=any(r.version == "1" and r.date == newest.date for r in versions))
            if paper.primary_category not in subjects:
                continue
            if newest.withdrawn:
                withdrawn.append(newest.doi)
                continue
            if paper.announce_type not in self._config.announce_types:
                skipped[paper.announce_type] = skipped.get(paper.announce_type, 0) + 1
                continue
            found.append(paper)
        if withdrawn:
            more = f" and {len(withdrawn) - WITHDRAWN_SHOWN} more" if len(withdrawn) > WITHDRAWN_SHOWN else ""
            notes.append(
                f"{self.label}: {counted(len(withdrawn), 'paper')} withdrawn by the authors, left out: "
                f"{', '.join(withdrawn[:WITHDRAWN_SHOWN])}{more}"
            )
        return found

    def _paper(self, record: Record, *, first: bool) -> Paper:
        version = int(record.version)
        return Paper(
            id=record.doi,
            version=version,
            title=record.title,
            authors=[_author(a) for a in record.authors.split(";") if a.strip()],
            abstract=record.abstract,
            categories=[normalise_subject(record.category)],
            announce_type="new" if first else "replace",
            announced=record.date,
            source=self.label,
            links=self.pages(record.doi, version),
        )


def _records(page: dict[str, Any], label: str, unreadable: list[str]) -> list[Record]:
    """The page's records, each checked on its own: one that does not read is left out and named."""
    found = []
    for number, raw in enumerate(page.get("collection") or []):
        try:
            found.append(Record.model_validate(raw))
        except ValidationError as error:
            doi = raw.get("doi") if isinstance(raw, dict) else None
            name = f"{doi!r}"[:120] if isinstance(doi, str) else f"number {number + 1} of its page"
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors())
            unreadable.append(f"{label} record {name} was left out ({problem[:200]})")
    return found


def _read_page(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The page, or None and what it was instead."""
    if not body.strip():
        return None, "an empty body"
    try:
        page = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, f"something that is not JSON ({body[:60]!r})"
    if not isinstance(page, dict) or not isinstance(page.get("messages"), list):
        return None, "JSON that is not one of its pages (no messages)"
    status = str((page["messages"][:1] or [{}])[0].get("status", "") if page["messages"] else "")
    if status != "ok" and "no posts found" not in status.lower():
        return None, f"the status {status[:100]!r}"
    if not isinstance(page.get("collection", []), list):
        return None, "a collection that is not a list"
    return page, ""


def _message(page: dict[str, Any]) -> dict[str, Any]:
    first = page["messages"][0] if page["messages"] else None
    return first if isinstance(first, dict) else {}


def _total(page: dict[str, Any]) -> int | None:
    """The records in the whole listing (the API writes it as a string), if the page says."""
    return _whole_number(_message(page).get("total"))


def _cursor(page: dict[str, Any]) -> int | None:
    """The record the page says it starts at, if it says."""
    return _whole_number(_message(page).get("cursor"))


def _whole_number(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None
