"""An interval's listing on the API bioRxiv and medRxiv share (digest/sources/rxiv.py), read page by page and
bounded: in pages, in time, and against an API that is not listing at all (pages that repeat, an answer for another
cursor, empty pages before the total it says)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from digest.errors import FetchError
from digest.net.pacing import Sleep
from digest.sources.rxiv_page import Record, cursor_of, records_of, total_of

log = logging.getLogger(__name__)

MAX_PAGES = 500  # 15,000 records at 30 a page, a month of bioRxiv; a longer listing is cut, and said so
EMPTY_PAGE_ASKS = 3  # a page with no records before the listing's total is asked this often before it is given up
EMPTY_PAGE_WAIT_SECONDS = 2.0

# One page of the API as JSON, from its URL, retried within a budget of seconds.
GetPage = Callable[[str, float], Awaitable[dict[str, Any]]]


@dataclass
class Listing:
    """What a listing read, and, when it ended before its end, why: the next run reads it again."""

    records: list[Record]  # one per DOI and version
    unreadable: list[str]
    cursor: int  # the record the listing ended at
    total: int | None  # the records in the whole listing, as the API last said
    ended: str | None  # why the listing ended before its end, in words
    page_unread: bool  # a page after the first did not read

    @property
    def complete(self) -> bool:
        return self.ended is None and not self.page_unread


async def read_listing(
    base: str, get_page: GetPage, *, label: str, seconds: float, max_retry_seconds: float, sleep: Sleep
) -> Listing:
    """The interval's listing at `base`, page by page, each page starting where the records before it end, until the
    listing's total; with no total, while pages are full. It ends early, said in the summary and read again by
    the next run, when a page does not read, when it is longer than MAX_PAGES pages or takes longer than its
    share of the run (`seconds`), and when the API is not listing at all: a page that brings only records already
    read, an answer for another cursor than the one asked, a page with no records before the total (asked again
    first). A first page that does not read is a FetchError.
    """
    records: dict[tuple[str, str], Record] = {}  # by DOI and version
    unreadable: list[str] = []
    ended: str | None = None  # why the listing ended before its end, in words
    page_unread = False
    cursor = 0
    full = 0  # the most records a page has held: the API's page size, as far as it is seen
    total: int | None = None
    deadline = time.monotonic() + seconds
    for pages in itertools.count():
        if pages == MAX_PAGES:
            ended = f"it is longer than {MAX_PAGES} pages"
            break
        if time.monotonic() >= deadline:
            ended = f"reading it took longer than {seconds:.0f} s, a quarter of max_run_minutes"
            break
        try:
            budget = max(1.0, min(max_retry_seconds, deadline - time.monotonic()))
            page = await _listed_page(get_page, f"{base}/{cursor}/json", cursor, budget, label, sleep)
        except FetchError as error:
            if cursor == 0:
                raise
            # The pages before are kept; the listing is asked again from its start by the next run.
            unreadable.append(f"{label} page at record {cursor}: {error.message}")
            page_unread = True
            break
        listed = page.get("collection") or []
        total = total_of(page)
        answered = cursor_of(page)
        if answered is not None and answered != cursor:
            ended = f"the API answered the page at record {cursor} with the one at record {answered}"
            break
        if not listed:
            if total is not None and cursor < total:
                ended = f"the page at record {cursor} had no records, {EMPTY_PAGE_ASKS} times"
            break
        read = records_of(page, label, unreadable)
        if read and all((r.doi, r.version) in records for r in read):
            ended = f"the page at record {cursor} brought only records of the pages before it"
            break
        records.update({(r.doi, r.version): r for r in read})
        cursor += len(listed)
        full = max(full, len(listed))
        if (total is not None and cursor >= total) or (total is None and len(listed) < full):
            break
    return Listing(list(records.values()), unreadable, cursor, total, ended, page_unread)


async def _listed_page(
    get_page: GetPage, url: str, cursor: int, budget: float, label: str, sleep: Sleep
) -> dict[str, Any]:
    """A page of a listing; one with no records before the listing's total is asked again (EMPTY_PAGE_ASKS in
    all), as a page that read but said nothing."""
    asked = 0
    while True:
        page = await get_page(url, budget)
        asked += 1
        total = total_of(page)
        if page.get("collection") or total is None or cursor >= total or asked == EMPTY_PAGE_ASKS:
            return page
        log.warning("%s %s: no records before the listing's total (%d); asking again", label, url, total)
        await sleep(EMPTY_PAGE_WAIT_SECONDS)
