"""The fetch stage: each configured source's new papers, stored before anything else happens, and what came of it,
per source. A source that cannot be read costs its own papers, never the others'."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from digest.config import Config
from digest.errors import FetchError
from digest.models import Feed, Paper, SourceFetch
from digest.sources import FeedState, configured_sources
from digest.state.store import Store

log = logging.getLogger(__name__)

UNREADABLE_SHOWN = 5  # unreadable items named in a warning; the rest are counted


@dataclass
class Fetched:
    """What the stage brought in, for the run's summary."""

    announced: dt.date | None = None  # the day the digest is of
    sources: dict[str, SourceFetch] = field(default_factory=dict)  # by source label, in the config's order
    by_type: dict[str, int] = field(default_factory=dict)  # papers by announce type, every source's together
    not_modified: bool = False  # a source answered 304
    unreadable: list[str] = field(default_factory=list)  # items that could not be read, and were left out
    new_papers: int = 0  # not seen before
    backfilled: int = 0  # brought by a catch-up from the export API
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a source that could not be read, while others could
    nothing_read: FetchError | None = None  # no source could be read: the first one's error


async def fetch_new(config: Config, store: Store, *, warn_stale: bool = True) -> Fetched:
    """Fetch and store every source's papers new since its last fetch. The day the digest is of is arXiv's
    announcement (the first source's), or the last day another source was read to."""
    fetched = Fetched()
    failed: list[FetchError] = []
    sources = configured_sources(config)
    for source in sources:
        state = FeedState(*store.feed_state(source.state_key()))
        clock = time.monotonic()
        try:
            feed = await source.fetch(state)
        except FetchError as error:
            failed.append(error)
            fetched.sources[source.label] = SourceFetch(failed=True)
            continue
        # With one source, "the feed"; with several, which one.
        named = f"the {feed.source} feed" if len(sources) > 1 else "the feed"
        if repeated := _repeated_categories(store, feed, state.last_announced):
            # Kept without its validators, so that the next run reads it whole again; and not taken as the day
            # when nothing in it is new.
            fetched.warnings.append(
                f"{named} is dated {feed.announced}, but its new papers in {', '.join(repeated)} were all seen "
                "before: an earlier announcement under a new date; it is read again on the next run"
            )
            fresh = {p.primary_category for p in feed.papers if p.announce_type == "new"} - set(repeated)
            update = {"etag": None, "last_modified": None} | ({} if fresh else {"announced": None})
            feed = feed.model_copy(update=update)
        day = feed.announced or state.last_announced
        fetched.announced = fetched.announced or day
        # A dated feed no newer than what was processed is stale, unless the run that processed it did not end
        # well (stopped, failed): then this run is finishing its work.
        if warn_stale and feed.stale:
            fetched.warnings.append(
                f"{named} is stale: it is dated {feed.announced}, and {state.last_announced} was already processed"
            )
        new = _record(config, store, fetched, feed, named)
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
        fetched.nothing_read = failed[0]
    else:
        fetched.errors += [str(error) for error in failed]
    return fetched


async def fetch_missed(config: Config, store: Store, since: dt.date) -> Fetched:
    """Catch up: every source's papers announced since `since`, stored."""
    fetched = Fetched()
    for source in configured_sources(config):
        clock = time.monotonic()
        feed = await source.since(since)
        fetched.backfilled += len(feed.papers)
        added = store.record_feed(feed, [p.name for p in config.profiles])
        fetched.new_papers += added
        log.info(
            "backfill: %d papers from %s since %s, %d not seen before, in %.2f s",
            len(feed.papers),
            feed.source,
            since,
            added,
            time.monotonic() - clock,
        )
    return fetched


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


def _record(config: Config, store: Store, fetched: Fetched, feed: Feed, named: str) -> int:
    counts = feed.count_by_type()
    fetched.by_type = dict(Counter(fetched.by_type) + Counter(counts))
    fetched.not_modified = fetched.not_modified or feed.not_modified
    if feed.unreadable:
        fetched.unreadable += feed.unreadable
        shown = "; ".join(feed.unreadable[:UNREADABLE_SHOWN])
        more = len(feed.unreadable) - UNREADABLE_SHOWN
        fetched.warnings.append(
            f"{len(feed.unreadable)} items of {named} could not be read: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    fetched.warnings += feed.notes
    new = store.record_feed(feed, [p.name for p in config.profiles])
    fetched.new_papers += new
    fetched.sources[feed.source] = SourceFetch(
        papers=len(feed.papers), new=new, requests=feed.requests, by_type=counts, not_modified=feed.not_modified
    )
    return new
