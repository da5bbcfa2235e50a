"""The one-screen texts printed at the end of `digest run`, `digest run --dry-run` and `digest check`."""

from __future__ import annotations

import datetime as dt

from digest.models import RunSummary
from digest.pipeline import DryRunReport
from digest.progress import describe_cost


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"


def run_summary(summary: RunSummary) -> str:
    usage = summary.usage
    lines = [
        f"digest run - announcement of {summary.announced or 'unknown date'} - {summary.seconds:.1f} s",
        f"  fetched      {sum(summary.fetched.values())} papers ({_counts(summary.fetched)}), "
        f"{summary.new_papers} not seen before"
        if not summary.not_modified
        else "  fetched      nothing: the feed is unchanged since the last run (HTTP 304)",
    ]
    if summary.backfilled:
        lines.append(f"  caught up    {summary.backfilled} papers from the export API (counted above if new)")
    for profile in summary.profiles:
        lines.append(
            f"  {profile.name:<12} {profile.classified} classified, {profile.cached} cached, "
            f"{profile.ruled} by your rules, {profile.failed} failed, {profile.relevant} relevant - "
            f"digest: {profile.digest}"
        )
    lines.append(
        f"  llm          {usage.requests} requests, {usage.retries} retries, {usage.rate_limited} rate-limited, "
        f"{usage.timed_out} timed out, "
        f"{usage.prompt_tokens:,} prompt tokens ({usage.cached_tokens:,} cached), "
        f"{usage.completion_tokens:,} completion tokens, {describe_cost(summary.cost)}"
    )
    lines.append(f"  delivered    {summary.deliveries_sent}, still pending {summary.deliveries_pending}")
    if summary.resumed:
        lines.append(f"  resumed      {summary.resumed}")
    lines += [f"  warning: {w}" for w in summary.warnings]
    failed = sum(p.failed for p in summary.profiles)
    if failed:
        lines.append(f"  warning: {failed} papers could not be classified; they are retried on the next run")
    lines += [f"  error: {e}" for e in summary.errors]
    return "\n".join(lines)


def dry_run_report(report: DryRunReport) -> str:
    lines = [
        f"dry run - announcement of {report.announced} - nothing is sent, no LLM is called",
        f"  fetched      {sum(report.fetched.values())} papers ({_counts(report.fetched)})",
    ]
    if report.skipped:
        lines.append(f"  left out     {_counts(report.skipped)} (not in arxiv.announce_types)")
    for profile in report.profiles:
        lines.append(
            f"  {profile.name:<12} {profile.to_classify} papers to classify, {profile.cached} already cached, "
            f"{profile.ruled} decided by your rules"
        )
    lines.append(
        f"  would cost   {report.requests} requests, about {report.tokens:,} tokens, {describe_cost(report.cost)}, "
        f"at least {report.minutes_at_rate_limit * 60:.0f} s at the configured rate limits"
    )
    return "\n".join(lines)


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
        tokens = summary.usage.prompt_tokens + summary.usage.completion_tokens
        cost = "?" if summary.cost is None else f"${summary.cost:.4f}"
        result = "ok" if ok else "stopped" if summary.stopped else "failed: " + "; ".join(summary.errors)[:60]
        lines.append(
            f"{started.astimezone():%Y-%m-%d %H:%M} {summary.announced or '-'!s:<10} "
            f"{sum(summary.fetched.values()) + summary.backfilled:>6} {relevant:<20} "
            f"{sum(p.failed for p in summary.profiles):>6} {tokens:>9,} {cost:>8}  "
            f"{summary.deliveries_sent:>4} {summary.deliveries_pending:>4}  {result}"
        )
    return "\n".join(lines)
