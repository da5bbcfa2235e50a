"""Fetch arXiv's announcement feed and its export API politely; digest/sources/arxiv_parse.py reads what they answer
into Paper models."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import ClassVar

import httpx

from digest.config import ArxivConfig, Config
from digest.models import Feed, Paper, PaperLinks
from digest.net.http import capped_client
from digest.net.pacing import RateLimiter, Sleep
from digest.sources.arxiv_parse import NEW_STYLE_ID, OLD_STYLE_ID, parse_api_page, parse_feed
from digest.sources.base import USER_AGENT, FeedState, Mention, PaperRef
from digest.sources.retrying import get_with_retries

log = logging.getLogger(__name__)

API_REQUESTS_PER_MINUTE = 20  # the export API's terms: one request every three seconds
SETTINGS = "arxiv.feed_url, arxiv.api_url and arxiv.categories"


def feed_url(config: ArxivConfig) -> str:
    return f"{config.feed_url}/{'+'.join(config.categories)}"


async def fetch_feed(
    config: ArxivConfig,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    sleep: Sleep = asyncio.sleep,
) -> Feed:
    """One request for all followed categories; retried with backoff, then a FetchError."""
    url = feed_url(config)
    headers = {"User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    attempts = 0

    async def count() -> None:
        nonlocal attempts
        attempts += 1

    async with _client(config) as http:
        response = await get_with_retries(
            http,
            url,
            headers,
            config.max_retry_seconds,
            sleep,
            what="arXiv feed",
            who="arXiv",
            settings=SETTINGS,
            before_each=count,
        )
    if response.status_code == 304:
        log.info("feed not modified since the last run: %s", url)
        return Feed(
            url=url,
            announced=None,
            papers=[],
            not_modified=True,
            etag=etag,
            last_modified=last_modified,
            requests=attempts,
        )
    feed = parse_feed(response.content, url=url, categories=config.categories, announce_types=config.announce_types)
    return feed.model_copy(
        update={
            "etag": response.headers.get("etag"),
            "last_modified": response.headers.get("last-modified"),
            "requests": attempts,
        }
    )


def _client(config: ArxivConfig) -> httpx.AsyncClient:
    """Bodies up to arxiv.max_feed_mb; each attempt within timeout_seconds as a whole (see _get_with_retries)."""
    return capped_client(int(config.max_feed_mb * 1_000_000), timeout=config.timeout_seconds, follow_redirects=True)


def api_pacer(*, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep) -> RateLimiter:
    """One request every three seconds, strictly: no burst."""
    return RateLimiter(API_REQUESTS_PER_MINUTE, 10**12, burst_seconds=0, opening_seconds=0, clock=clock, sleep=sleep)


async def fetch_since(
    config: ArxivConfig,
    since: dt.date,
    *,
    pacer: RateLimiter | None = None,
    sleep: Sleep = asyncio.sleep,
) -> Feed:
    """Catch up on missed days through the export API: every paper submitted since `since`, paged politely.

    The API's terms ask for at most one request every three seconds on a single connection; every request,
    retries included, waits for its slot from `pacer`.
    """
    pacer = pacer or api_pacer(sleep=sleep)
    categories = " OR ".join(f"cat:{c}" for c in config.categories)
    # The API checks the range's bounds: the end is a real one, the end of tomorrow (UTC, as the API reckons).
    until = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    query = f"({categories}) AND submittedDate:[{since:%Y%m%d}0000 TO {until:%Y%m%d}2359]"
    papers: dict[str, Paper] = {}
    skipped: dict[str, int] = {}
    start, total = 0, None
    async with _client(config) as http:
        while total is None or start < total:
            params: dict[str, str | int] = {
                "search_query": query,
                "start": start,
                "max_results": config.api_page_size,
                "sortBy": "submittedDate",
                "sortOrder": "ascending",
            }
            page, total = await _api_page(http, config, params, pacer, sleep)
            for paper in page:
                if paper.announce_type not in config.announce_types:
                    skipped[paper.announce_type] = skipped.get(paper.announce_type, 0) + 1
                else:
                    papers.setdefault(paper.key, paper)
            log.info("backfill: %d of %d papers since %s", min(start + len(page), total), total, since)
            if not page:
                break
            start += len(page)
    return Feed(url=config.api_url, announced=None, papers=list(papers.values()), skipped=skipped)


async def lookup_papers(
    config: ArxivConfig,
    paper_ids: Iterable[str],
    *,
    pacer: RateLimiter | None = None,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Paper]:
    """The newest version of each paper, by versionless id, through the export API: one request for up to
    `api_page_size` ids, paced like the backfill. Ids arXiv does not know are missing from the answer."""
    pacer = pacer or api_pacer(sleep=sleep)
    wanted = list(dict.fromkeys(paper_ids))
    found: dict[str, Paper] = {}
    async with _client(config) as http:
        for start in range(0, len(wanted), config.api_page_size):
            chunk = wanted[start : start + config.api_page_size]
            page, _ = await _api_page(
                http, config, {"id_list": ",".join(chunk), "max_results": len(chunk)}, pacer, sleep
            )
            found.update({p.id: p for p in page if p.id in chunk})
    return found


async def _api_page(
    http: httpx.AsyncClient, config: ArxivConfig, params: dict[str, str | int], pacer: RateLimiter, sleep: Sleep
) -> tuple[list[Paper], int]:
    """One request to the export API, in its turn (every attempt waits for `pacer`): its papers and its total."""
    url = str(httpx.URL(config.api_url, params=params))
    response = await get_with_retries(
        http,
        url,
        {"User-Agent": USER_AGENT},
        config.max_retry_seconds,
        sleep,
        what="arXiv API",
        who="arXiv",
        settings=SETTINGS,
        before_each=lambda: pacer.acquire(0),
    )
    return parse_api_page(response.content, url=url, categories=config.categories)


ARXIV_ID = re.compile(rf"{NEW_STYLE_ID}|{OLD_STYLE_ID}")
VERSIONED_ID = rf"(?P<id>{NEW_STYLE_ID}|{OLD_STYLE_ID})(?:v(?P<version>\d+))?"
# What a reader pastes: an id, arXiv:id, or an abs, pdf or html link.
PASTED = re.compile(
    rf"(?:arxiv:\s*|https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/)?{VERSIONED_ID}(?:\.pdf)?/?", re.IGNORECASE
)
# An id inside a longer text (a BibTeX note or journal, a URL, a DOI): only where it says it is arXiv's.
MENTIONED = re.compile(
    rf"(?:arxiv[:\s]\s*|arxiv\.org/(?:abs|pdf|html)/|10\.48550/arxiv\.){VERSIONED_ID}(?![\d.])", re.IGNORECASE
)


def _ref(match: re.Match[str]) -> PaperRef:
    paper_id = match["id"]
    if "/" in paper_id:  # old style: the canonical id names the archive only (math/0601001, not math.AP/0601001)
        archive, number = paper_id.split("/")
        paper_id = f"{archive.split('.')[0].lower()}/{number}"
    return PaperRef(paper_id, int(match["version"]) if match["version"] else None)


class ArxivSource:
    """arXiv: the day's announcement feed for every followed category in one request, the export API to catch up
    and to look papers up."""

    name: ClassVar[str] = "arxiv"
    label: ClassVar[str] = "arXiv"
    service: ClassVar[str] = "arXiv feed"
    pasted_forms: ClassVar[str] = (
        "an arXiv id like 2606.29563 (or 2606.29563v2, arXiv:2606.29563, hep-th/9901001) or a link like "
        "https://arxiv.org/abs/2606.29563"
    )

    def __init__(self, config: ArxivConfig) -> None:
        self._config = config

    @classmethod
    def from_config(cls, config: Config) -> ArxivSource | None:
        return cls(config.fetched) if config.arxiv is not None else None

    @classmethod
    def pasted(cls, text: str) -> PaperRef | None:
        match = PASTED.fullmatch(text.strip())
        return _ref(match) if match else None

    @classmethod
    def mentioned(cls, text: str) -> Mention | None:
        match = MENTIONED.search(text)
        return Mention(match.start(), _ref(match)) if match else None

    @classmethod
    def knows(cls, paper_id: str) -> bool:
        return ARXIV_ID.fullmatch(paper_id) is not None

    @classmethod
    def pages(cls, paper_id: str, version: int) -> PaperLinks:
        return PaperLinks(
            abstract=f"https://arxiv.org/abs/{paper_id}",
            pdf=f"https://arxiv.org/pdf/{paper_id}v{version}",
            html=f"https://arxiv.org/html/{paper_id}v{version}",
        )

    def state_key(self) -> str:
        return feed_url(self._config)

    async def fetch(self, state: FeedState | None) -> Feed:
        etag, last_modified, last_announced = state or FeedState(None, None, None)
        feed = await fetch_feed(self._config, etag=etag, last_modified=last_modified)
        # Dated no later than what was processed: the feed has not been rebuilt since (a weekend, a holiday).
        stale = last_announced is not None and feed.announced is not None and feed.announced <= last_announced
        return feed.model_copy(update={"stale": stale})

    async def since(self, day: dt.date) -> Feed:
        return await fetch_since(self._config, day)

    async def check(self) -> str:
        feed = await fetch_feed(self._config.model_copy(update={"max_retry_seconds": 0}))
        return f"{feed_url(self._config)}: {len(feed.papers)} papers dated {feed.announced}"

    async def lookup(self, paper_ids: list[str]) -> dict[str, Paper]:
        return await lookup_papers(self._config, paper_ids)
