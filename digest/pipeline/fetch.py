"""The fetch stage: each configured source's new papers, stored before anything else happens, with what the run's
summary says of them, per source. A source that cannot be read costs its own papers, never the others'."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter

from digest.config import Config
from digest.errors import FetchError
from digest.models import Feed, Paper, RunSummary, SourceFetch
from digest.sources import FeedState, configured_sources
from digest.state.store import Store

log = logging.getLogger(__name__)

UNREADABLE_SHOWN = 5  # unreadable items named in a warning; the rest are counted


async def fetch_new(config: Config, store: Store, summary: RunSummary, *, warn_stale: bool = True) -> dt.date | None:
    """Fetch and store every source's papers new since its last fetch. Returns the day the digest is of: arXiv's
    announcement (the first source's), or the last day another source was read to. Raises the first FetchError only
    when no source could be read."""
    announced: dt.date | None = None
    failed: list[FetchError] = []
    sources = configured_sources(config)
    for source in sources:
        state = FeedState(*store.feed_state(source.state_key()))
        clock = time.monotonic()
        try:
            feed = await source.fetch(state)
        except FetchError as error:
            failed.append(error)
            summary.sources[source.label] = SourceFetch(failed=True)
            continue
        # With one source, "the feed"; with several, which one.
        named = f"the {feed.source} feed" if len(sources) > 1 else "the feed"
        if repeated := _repeated_categories(store, feed, state.last_announced):
            # Kept without its validators, so that the next run reads it whole again; and not taken as the day
            # when nothing in it is new.
            summary.warnings.append(
                f"{named} is dated {feed.announced}, but its new papers in {', '.join(repeated)} were all seen "
                "before: an earlier announcement under a new date; it is read again on the next run"
            )
            fresh = {p.primary_category for p in feed.papers if p.announce_type == "new"} - set(repeated)
            update = {"etag": None, "last_modified": None} | ({} if fresh else {"announced": None})
            feed = feed.model_copy(update=update)
        day = feed.announced or state.last_announced
        announced = announced or day
        # A dated feed no newer than what was processed is stale, unless the run that processed it did not end
        # well (stopped, failed): then this run is finishing its work.
        if warn_stale and feed.stale:
            summary.warnings.append(
                f"{named} is stale: it is dated {feed.announced}, and {state.last_announced} was already processed"
            )
        new = _record(config, store, summary, feed, named)
        log.info(
            "fetch: %d papers from %s (%s), %d not seen before, dated %s, %d requests in %.2f s",
            len(feed.papers),
            feed.source,
            ", ".join(f"{n} {kind}" for kind, n in feed.count_by_type().items()) or "none",
            new,
            day,
            feed.requests,
            time.monotonic() - clock,
        )
    if failed and len(failed) == len(sources):
        raise failed[0]
    summary.errors += [str(error) for error in failed]
    summary.announced = announced
    return announced


async def fetch_missed(config: Config, store: Store, summary: RunSummary, since: dt.date) -> None:
    """Catch up: every source's papers announced since `since`, stored."""
    for source in configured_sources(config):
        clock = time.monotonic()
        feed = await source.since(since)
        summary.backfilled += len(feed.papers)
        added = store.record_feed(feed, [p.name for p in config.profiles])
        summary.new_papers += added
        log.info(
            "backfill: %d papers from %s since %s, %d not seen before, in %.2f s",
            len(feed.papers),
            feed.source,
            since,
            added,
            time.monotonic() - clock,
        )


async def fetch_without_state(config: Config, since: dt.date | None) -> tuple[list[Feed], list[Paper]]:
    """What a run would fetch, for the dry run: each source's latest papers (and since `since`), storing nothing."""
    feeds: list[Feed] = []
    papers: dict[str, Paper] = {}
    for source in configured_sources(config):
        feed = await source.fetch(None)
        feeds.append(feed)
        extra = (await source.since(since)).papers if since is not None else []
        papers.update({p.key: p for p in [*extra, *feed.papers]})
    return feeds, list(papers.values())


def _repeated_categories(store: Store, feed: Feed, last_announced: dt.date | None) -> list[str]:
    """The categories of a day's announcement, newer than the last one read, whose new papers were all seen before."""
    if not feed.one_day or feed.stale or last_announced is None:
        return []
    new: dict[str, list[str]] = {}
    for paper in feed.papers:
        if paper.announce_type == "new":
            new.setdefault(paper.primary_category, []).append(paper.key)
    seen = store.stored(key for keys in new.values() for key in keys)
    return [category for category, keys in new.items() if seen.issuperset(keys)]


def _record(config: Config, store: Store, summary: RunSummary, feed: Feed, named: str) -> int:
    counts = feed.count_by_type()
    summary.fetched = dict(Counter(summary.fetched) + Counter(counts))
    summary.not_modified = summary.not_modified or feed.not_modified
    if feed.unreadable:
        summary.unreadable += feed.unreadable
        shown = "; ".join(feed.unreadable[:UNREADABLE_SHOWN])
        more = len(feed.unreadable) - UNREADABLE_SHOWN
        summary.warnings.append(
            f"{len(feed.unreadable)} items of {named} could not be read: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    summary.warnings += feed.notes
    new = store.record_feed(feed, [p.name for p in config.profiles])
    summary.new_papers += new
    summary.sources[feed.source] = SourceFetch(
        papers=len(feed.papers), new=new, requests=feed.requests, by_type=counts, not_modified=feed.not_modified
    )
    return new
