"""What a run would do, without doing it: `digest run --dry-run` fetches and counts what would be classified and what
it would cost; it calls no LLM and writes no state."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from pydantic import BaseModel

from digest.config import Config
from digest.llm.facts import load_facts
from digest.llm.prices import charges_nothing, estimate_cost
from digest.llm.prompt import COMPLETION_TOKENS_ESTIMATE, estimate_tokens, paper_message
from digest.models import Feed, ProfileSummary, SourceFetch, Usage
from digest.pipeline.fetch import fetch_without_state
from digest.pipeline.judge import Judge
from digest.state.store import Store


class DryRunReport(BaseModel):
    announced: dt.date | None
    fetched: dict[str, int]
    sources: dict[str, SourceFetch]
    skipped: dict[str, int]
    profiles: list[ProfileSummary]
    requests: int
    tokens: int
    cost: float | None
    batch_cost: float | None  # the same requests through the Batch API
    batch: bool  # llm.mode is batch
    batch_offered: bool  # a batch is worth mentioning: the server may have the Batch API, and charges
    free: bool  # a local server, or a price of 0
    answers_per_second: float | None  # measured on this server in an earlier run
    minutes_at_rate_limit: float


async def dry_run(config: Config, since: dt.date | None = None) -> DryRunReport:
    """Fetch and count what a run would classify and what it would cost; call no LLM, write no state."""
    feeds, papers = await fetch_without_state(config, since)
    store = Store(config.state) if config.state.exists() else None
    try:
        _, jobs, profiles = Judge(config).plan(store, {p.name: papers for p in config.profiles})
        facts = load_facts(store, config.llm)
    finally:
        if store is not None:
            store.close()
    prompt = sum(estimate_tokens(job.instructions, paper_message(job.paper)) for job in jobs)
    usage = Usage(requests=len(jobs), prompt_tokens=prompt, completion_tokens=COMPLETION_TOKENS_ESTIMATE * len(jobs))
    llm = config.llm
    return DryRunReport(
        announced=feeds[0].announced,
        fetched=Feed(url="", announced=None, papers=papers).count_by_type(),
        sources={f.source: SourceFetch(papers=len(f.papers), requests=f.requests) for f in feeds},
        skipped=dict(sum((Counter(f.skipped) for f in feeds), Counter())),
        profiles=profiles,
        requests=len(jobs),
        tokens=usage.prompt_tokens + usage.completion_tokens,
        cost=estimate_cost(usage, llm),
        batch_cost=estimate_cost(
            Usage(batch_prompt_tokens=usage.prompt_tokens, batch_completion_tokens=usage.completion_tokens), llm
        ),
        batch=llm.mode == "batch",
        # A server on the reader's hardware, or one whose Batch API answered 404, is offered no batch.
        batch_offered=facts.batch_api is not False and not charges_nothing(llm),
        free=charges_nothing(llm),
        answers_per_second=facts.answers_per_second,
        minutes_at_rate_limit=max(
            len(jobs) / llm.requests_per_minute,
            (usage.prompt_tokens + usage.completion_tokens) / llm.tokens_per_minute,
        ),
    )
