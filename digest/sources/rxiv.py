"""The API bioRxiv and medRxiv share (api.biorxiv.org, Cold Spring Harbor Laboratory): the papers posted in an
interval of days, page by page, and a paper by its DOI. digest/sources/biorxiv.py and medrxiv.py are its two
servers; rxiv_page.py reads one of its pages, rxiv_listing.py an interval's listing, page by page.

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
import logging
import re
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from digest.config import Config, PreprintServerConfig
from digest.errors import FetchError
from digest.models import Feed, Paper, PaperLinks
from digest.net.http import capped_client
from digest.net.pacing import RateLimiter, Sleep
from digest.sources.base import USER_AGENT, FeedState, Mention, PaperRef
from digest.sources.retrying import get_with_retries
from digest.sources.rxiv_listing import read_listing
from digest.sources.rxiv_page import Record, read_page, records_of, total_of
from digest.taxonomy import normalise_subject
from digest.wording import counted

log = logging.getLogger(__name__)

REQUESTS_PER_MINUTE = 60  # the API publishes no limit: a request a second, on one connection
CATCH_UP_DAYS = 30  # after a longer gap, the last 30 days are read and the rest is said to be missed
# A listing takes at most this share of max_run_minutes: an API that never ends its listing must not hold up the
# other sources' judging and delivery (bioRxiv's and medRxiv's listings together, half the run at most).
LISTING_SHARE_OF_RUN = 0.25
WITHDRAWN_SHOWN = 5
# bioRxiv's and medRxiv's DOIs, under Cold Spring Harbor's prefix 10.1101 and, since December 2025, 10.64898:
# 10.1101/2026.06.30.612345, and 10.1101/833400 of the first years. Both servers give out DOIs of one shape, so a
# DOI alone does not say which server has the paper.
RXIV_DOI = re.compile(r"10\.(?:1101|64898)/(?:\d{4}\.\d{2}\.\d{2}\.)?\d{6,8}")
VERSIONED_DOI = rf"(?P<doi>{RXIV_DOI.pattern})(?:v(?P<version>\d+))?"
DOI_LINK = r"(?:doi:\s*|https?://(?:dx\.)?doi\.org/)"
PAGE_SUFFIX = r"(?:\.full|\.full\.pdf|\.abstract|\.full-text)?/?"


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
    def mentioned(cls, text: str) -> Mention | None:
        match = _forms(cls.site)[1].search(text)
        return Mention(match.start(), cls._ref(match)) if match else None

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
        return f"{url}: {total_of(page) or 0} papers posted yesterday and today"

    async def lookup(self, paper_ids: list[str]) -> dict[str, Paper]:
        """The newest version of each DOI this server has; the others are missing. A record the API says is the
        other server's is not this server's paper."""
        found: dict[str, Paper] = {}
        async with self._client() as http:
            for doi in dict.fromkeys(paper_ids):
                page = await self._page(http, f"{self._config.api_url}/details/{self.name}/{doi}/na/json")
                versions = [
                    r for r in records_of(page, self.label, []) if r.doi == doi and r.server.lower() in ("", self.name)
                ]
                if versions:
                    found[doi] = self._paper(max(versions, key=lambda r: int(r.version)), first=False)
        return found

    def _client(self) -> httpx.AsyncClient:
        limit = int(self._config.max_page_mb * 1_000_000)
        return capped_client(limit, timeout=self._config.timeout_seconds, follow_redirects=True)

    async def _interval(self, start: dt.date, end: dt.date) -> Feed:
        """The papers of the interval's listing (digest/sources/rxiv_listing.py); one that ended early is said in
        the summary, and leaves the state where it was."""
        base = f"{self._config.api_url}/details/{self.name}/{start.isoformat()}/{end.isoformat()}"
        skipped: dict[str, int] = {}
        notes: list[str] = []
        async with self._client() as http:
            listing = await read_listing(
                base,
                functools.partial(self._page, http),
                label=self.label,
                seconds=self._listing_seconds,
                max_retry_seconds=self._config.max_retry_seconds,
                sleep=self._sleep,
            )
        if listing.ended is not None:
            of_total = f" of {listing.total:,}" if listing.total is not None else ""
            notes.append(
                f"{self.label}: the listing from {start} to {end} ended early, at record {listing.cursor:,}{of_total}: "
                f"{listing.ended}; the next run reads it again"
            )
        papers = self._chosen(listing.records, skipped, notes)
        if not listing.records and not listing.unreadable and listing.ended is None:
            notes.append(f"{self.label}: no new papers in {', '.join(self._config.categories)} from {start} to {end}")
        log.info("%s: %d papers from %s to %s in %d requests", self.label, len(papers), start, end, self.requests)
        return Feed(
            url=self.state_key(),
            # An incomplete listing leaves the state where it was, so that the next run reads it again.
            announced=end if listing.complete else start,
            papers=papers,
            skipped=skipped,
            unreadable=listing.unreadable,
            source=self.label,
            requests=self.requests,
            notes=notes,
        )

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
            page, problem = read_page(response.content)
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
