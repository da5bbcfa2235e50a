"""The one-screen texts printed at the end of `digest run`, `digest run --dry-run`, `digest status`, and of the
commands by which the reader teaches the digest: `ratings` and `import` (`eval`'s is in eval_report.py)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digest.cli.progress import describe_cost, describe_setbacks
from digest.models import RATING_WORDS, LibraryOutcome, Rating, RunSummary, SourceFetch
from digest.wording import counted, paper_count

if TYPE_CHECKING:  # the types only: `digest status` should not import the classifier to print a table
    from digest.config import Profile
    from digest.pipeline.dry_run import DryRunReport
    from digest.state.store import DeliveryState
    from digest.taste.library import ImportReport


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"


DESTINATIONS_SHOWN = 8
DESTINATION_WORDS = {
    "sent": "sent",
    "pending": "pending (retried next run)",
    "failed": "refused for good",
    "uncertain": "may have arrived (not sent again)",
}


def run_summary(summary: RunSummary) -> str:
    usage = summary.usage
    lines = [
        f"digest run - announcement of {summary.announced or 'unknown date'} - {summary.seconds:.1f} s",
        f"  fetched      {paper_count(sum(summary.fetched.values()))} ({_counts(summary.fetched)}), "
        f"{summary.new_papers} not seen before"
        if not summary.not_modified or summary.fetched
        else "  fetched      nothing: the feed is unchanged since the last run (HTTP 304)",
    ]
    lines += _per_source(summary.sources)
    lines += library_lines(summary.libraries, first="  library      ", then=" " * 17)
    if summary.backfilled:
        lines.append(f"  caught up    {paper_count(summary.backfilled)} from the export API (counted above if new)")
    if summary.taste_model:
        lines.append(
            f"  taste        {paper_count(summary.embedded)} embedded in {summary.embedding_seconds:.1f} s "
            f"({summary.taste_model}; the others were embedded before)"
        )
    for profile in summary.profiles:
        by_taste = f"{profile.by_taste} by taste (not asked), " if profile.by_taste else ""
        lines.append(
            f"  {profile.name:<12} {profile.classified} classified, {profile.cached} cached, "
            f"{profile.ruled} by your rules or ratings, {by_taste}{profile.failed} failed, {profile.relevant} "
            f"relevant - digest: {profile.digest}"
        )
    lines.append(
        "  llm          "
        + (
            f"{counted(usage.requests, 'request')}, {describe_setbacks(usage)}, {usage.prompt_tokens:,} prompt tokens "
            f"({usage.cached_tokens:,} cached), {usage.completion_tokens:,} completion tokens, "
            f"{describe_cost(summary.cost, free=summary.free)}"
            if not usage.batch_requests
            else f"{usage.batch_requests} answered in a batch, {counted(usage.requests, 'live request')}, "
            f"{describe_setbacks(usage)}, {usage.tokens:,} tokens, {_batch_cost(summary)}"
        )
    )
    if usage.timed_out:
        lines.append(
            f"  timed out    {counted(usage.timed_out, 'request')}, about {usage.timed_out_tokens:,} tokens of the "
            "server's work thrown away (each was asked again)"
        )
    if summary.concurrency:
        lines.append(f"  in flight    {summary.concurrency}")
    lines += [f"  batch        {note}" for note in summary.batches]
    delivered = f"  delivered    {summary.deliveries_sent}, still pending {summary.deliveries_pending}"
    delivered += f", failed for good {summary.deliveries_failed}" if summary.deliveries_failed else ""
    lines.append(delivered + (f", uncertain {summary.deliveries_uncertain}" if summary.deliveries_uncertain else ""))
    shown = list(summary.destinations.items())
    lines += [
        f"    {name}: " + ", ".join(f"{n} {DESTINATION_WORDS[status]}" for status, n in said.items())
        for name, said in shown[:DESTINATIONS_SHOWN]
    ]
    if len(shown) > DESTINATIONS_SHOWN:
        more = len(shown) - DESTINATIONS_SHOWN
        lines.append(f"    and {more} more destinations (digest status lists what is not done)")
    if summary.resumed:
        lines.append(f"  resumed      {summary.resumed}")
    lines += [f"  warning: {w}" for w in summary.warnings]
    failed = sum(p.failed for p in summary.profiles)
    if failed:
        lines.append(f"  warning: {paper_count(failed)} could not be classified; they are retried on the next run")
    lines += [f"  error: {e}" for e in summary.errors]
    return "\n".join(lines)


def _per_source(sources: dict[str, SourceFetch]) -> list[str]:
    """A line per source, when there are several, or one that is not arXiv."""
    if list(sources) in ([], ["arXiv"]):
        return []
    lines = []
    for name, fetched in sources.items():
        if fetched.failed:
            said = "could not be read (see the error below)"
        elif fetched.not_modified:
            said = f"unchanged since the last run (HTTP 304), {counted(fetched.requests, 'request')}"
        else:
            kinds = f" ({_counts(fetched.by_type)})" if fetched.by_type else ""
            said = f"{paper_count(fetched.papers)}{kinds}, {counted(fetched.requests, 'request')}"
        lines.append(f"    {name:<10} {said}")
    return lines


def _batch_cost(summary: RunSummary) -> str:
    if summary.cost is None or summary.live_cost is None:
        return describe_cost(summary.cost)
    return f"{describe_cost(summary.cost)} with batch prices (live would have cost ~${summary.live_cost:.4f})"


def dry_run_report(report: DryRunReport) -> str:
    lines = [
        f"dry run - announcement of {report.announced} - nothing is sent, no LLM is called",
        f"  fetched      {paper_count(sum(report.fetched.values()))} ({_counts(report.fetched)})",
    ]
    lines += _per_source(report.sources)
    if report.skipped:
        lines.append(f"  left out     {_counts(report.skipped)} (not in the sources' announce_types)")
    for profile in report.profiles:
        lines.append(
            f"  {profile.name:<12} {paper_count(profile.to_classify)} to classify, {profile.cached} already cached, "
            f"{profile.ruled} decided by your rules or ratings"
        )
    if report.answers_per_second:
        took = (
            f"about {_duration(report.requests / report.answers_per_second)} at the "
            f"{report.answers_per_second:.2g} answers a second this server gave in the last run"
        )
    elif report.free:
        took = "as long as the hardware takes: the first run measures this server, and the next dry run says"
    else:
        took = f"at least {report.minutes_at_rate_limit * 60:.0f} s at the configured rate limits"
    live = f"local, no charge; {took}" if report.free else f"live {describe_cost(report.cost)}, {took}"
    batch = f"as a batch {describe_cost(report.batch_cost)}, answered within 24 h"
    if report.batch:
        what = f"{batch} (llm.mode: batch); {live}"
    else:
        what = f"{live} (llm.mode: live)" + (f"; {batch}" if report.batch_offered else "")
    lines.append(f"  would cost   {counted(report.requests, 'request')}, about {report.tokens:,} tokens: {what}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_table(runs: list[tuple[dt.datetime, bool, RunSummary]]) -> str:
    if not runs:
        return "no runs yet: try `digest run`"
    header = (
        f"{'started':<16} {'announced':<10} {'papers':>6} {'relevant':<20} {'failed':>6} "
        f"{'tokens':>9} {'cost':>8}  {'sent':>4} {'pend':>4}  result"
    )
    lines = [header, "-" * len(header)]
    for started, ok, summary in runs:
        relevant = " ".join(f"{p.name}={p.relevant}" for p in summary.profiles) or "-"
        tokens = summary.usage.tokens
        cost = "?" if summary.cost is None else f"${summary.cost:.4f}"
        failed = "failed: " + textwrap.shorten("; ".join(summary.errors), width=70, placeholder=" ...")
        result = "ok" if ok else "stopped" if summary.stopped else failed
        if summary.command != "run":
            result = f"{summary.command}: {result}"
        if summary.live_cost is not None:
            result += f" (batch; live: ${summary.live_cost:.4f})"
        lines.append(
            f"{started.astimezone():%Y-%m-%d %H:%M} {summary.announced or '-'!s:<10} "
            f"{sum(summary.fetched.values()) + summary.backfilled:>6} {relevant:<20} "
            f"{sum(p.failed for p in summary.profiles):>6} {tokens:>9,} {cost:>8}  "
            f"{summary.deliveries_sent:>4} {summary.deliveries_pending:>4}  {result}"
        )
    return "\n".join(lines)


def undone_deliveries(deliveries: list[DeliveryState]) -> str:
    """For `digest status`: what has not reached its recipient, and why."""
    if not deliveries:
        return "deliveries: every digest has reached every recipient"
    lines = [
        "deliveries not done (pending: retried on the next run; failed: refused for good, never retried; uncertain: "
        "may have arrived, never sent again):"
    ]
    for d in deliveries:
        why = textwrap.shorten(d.last_error or "not tried yet", width=90, placeholder=" ...")
        lines.append(f"  {d.announced} {d.profile:<12} {d.recipient:<30} {d.status:<7} {d.attempts} tries  {why}")
    return "\n".join(lines)


def batches_in_flight(batches: list[tuple[str, str, dt.datetime]]) -> str:
    """For `digest status`: Batch API batches a run is waiting for, or that the next run resumes."""
    lines = ["batches not yet collected (the next run resumes them; never submitted twice):"]
    lines += [
        f"  {batch_id}  {status:<12} submitted {created.astimezone():%Y-%m-%d %H:%M}"
        for batch_id, status, created in batches
    ]
    return "\n".join(lines)


def ratings_table(profile: Profile, ratings: list[Rating]) -> str:
    if not ratings:
        return f"profile {profile.name} has no ratings yet: digest rate PAPER up|down, or digest import FILE"
    liked = sum(r.liked for r in ratings)
    lines = [
        f"profile {profile.name}: {counted(len(ratings), 'rating')} ({liked} up, {len(ratings) - liked} down), "
        "newest first"
    ]
    for rating in ratings:
        title = rating.paper.title if len(rating.paper.title) <= 70 else rating.paper.title[:69] + "..."
        lines.append(
            f"  {rating.rated_at.astimezone():%Y-%m-%d %H:%M}  {'up  ' if rating.liked else 'down'}  "
            f"{rating.paper.id:<17} {rating.source:<6}  {title}"
        )
    return "\n".join(lines)


def ratings_json(ratings: list[Rating]) -> list[dict[str, Any]]:
    return [
        {
            "paper": r.paper.id,
            "version": r.paper.version,
            "rating": r.rating,
            "title": r.paper.title,
            "authors": r.paper.authors,
            "source": r.source,
            "rated_at": r.rated_at.isoformat(),
        }
        for r in ratings
    ]


def import_report(path: Path, report: ImportReport) -> str:
    taken = report.added + report.changed + report.unchanged
    lines = [
        f"imported {path} for profile {report.profile} as '{RATING_WORDS[report.rating]}': "
        f"{counted(report.entries, 'entry', 'entries')}, {counted(taken, 'paper')} rated "
        f"({report.added} new, {report.changed} changed, {report.unchanged} unchanged)"
    ]
    if report.not_arxiv:
        shown = ", ".join(report.not_arxiv[:10]) + (" ..." if len(report.not_arxiv) > 10 else "")
        what = "names" if len(report.not_arxiv) == 1 else "name"
        lines.append(
            f"  {counted(len(report.not_arxiv), 'entry', 'entries')} {what} no arXiv, bioRxiv or medRxiv paper, "
            f"left out: {shown}"
        )
    if report.unknown:
        one = len(report.unknown) == 1
        lines.append(
            f"  {counted(len(report.unknown), 'id')} {'is' if one else 'are'} unknown to their sources, left out: "
            f"{', '.join(report.unknown)}"
        )
    return "\n".join(lines)


def library_lines(outcomes: list[LibraryOutcome], first: str = "", then: str = "  ") -> list[str]:
    """What reading each profile's library came to: a line each, and beneath it what the reader should know. A
    library that could not be read is said by the caller (a run's warning, an import's error)."""
    lines: list[str] = []
    for outcome in outcomes:
        if outcome.failed is not None:
            continue
        what = f"{first}{outcome.library} (profile {outcome.profile})"
        if outcome.kind == "file":
            lines.append(
                f"{what}: unchanged since the last read"
                if outcome.unchanged
                else f"{what}: {counted(outcome.items, 'entry', 'entries')}, {counted(outcome.up, 'paper')} more like "
                f"this ({outcome.added} new, {outcome.changed} changed)"
            )
        else:
            read = (
                f"unchanged since the last read ({counted(outcome.requests, 'request')})"
                if outcome.unchanged and not outcome.read
                else f"{counted(outcome.read, 'item')} read in {counted(outcome.requests, 'request')}"
            )
            lines.append(
                f"{what}: {read}; {counted(outcome.items, 'item')}, {outcome.with_paper:,} naming a paper "
                f"({outcome.items - outcome.with_paper:,} naming none: counted, never guessed); {outcome.up:,} more "
                f"like this, {outcome.down:,} not for me ({outcome.added:,} new, {outcome.changed:,} changed, "
                f"{outcome.removed:,} taken back)"
            )
        notes = []
        if outcome.stopped is not None:
            notes.append(
                f"stopped at {outcome.stopped} with {counted(outcome.unread, 'item')} still to read: the next read "
                "goes on from there"
            )
        if outcome.missing:
            names = ", ".join(repr(name) for name in outcome.missing)
            notes.append(
                f"no collection named {names} in the library: its ratings stay as they were until library.zotero "
                "names collections it has"
            )
        if outcome.by_hand:
            notes.append(f"{counted(outcome.by_hand, 'paper')} rated otherwise by hand: your word stands")
        if outcome.unreadable:
            notes.append(f"{counted(outcome.unreadable, 'item')} not Zotero's JSON, or too large: left out")
        if outcome.unknown:
            shown = ", ".join(outcome.unknown[:10]) + (" ..." if len(outcome.unknown) > 10 else "")
            notes.append(f"{counted(len(outcome.unknown), 'id')} unknown to their sources, left out: {shown}")
        lines += [f"{then}{note}" for note in notes]
    return lines
