"""Live requests against the Batch API for the same 1,000 papers: requests, tokens, estimated cost and time.

The loopback LLM server (in its own process) answers live requests after 500 ms under 6,000 requests a minute,
and serves the Batch API, finishing a batch a few seconds after it is first polled. It counts tokens from each
request's length, so the costs are those of these papers' real titles and abstracts at gpt-4o-mini's prices.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/batch.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from benchmarks.classify import CONCURRENCY, LATENCY, PROFILE, SERVER_RPM, Server, papers
from digest.config import Config
from digest.llm.answers import Outcome
from digest.llm.batch import BatchClassifier
from digest.llm.live import Classifier
from digest.llm.prices import estimate_cost, live_cost
from digest.llm.prompt import system_prompt
from digest.llm.requests import Job
from digest.models import Verdict
from digest.state.store import Store

PAPERS = 1000


def config(url: str, state: Path, mode: str) -> Config:
    return Config.model_validate(
        {
            "arxiv": {"categories": ["cs.CL"]},
            "llm": {
                "base_url": url,
                "api_key": "test-key",
                "mode": mode,
                "max_concurrency": CONCURRENCY,
                "requests_per_minute": SERVER_RPM,
                "tokens_per_minute": 1_000_000_000,
            },
            "profiles": [PROFILE.model_dump()],
            "state": str(state),
        }
    )


async def run(url: str, mode: str, folder: Path) -> dict[str, Any]:
    settings = config(url, folder / f"{mode}.sqlite3", mode)
    jobs = [Job(PROFILE, p, system_prompt(PROFILE)) for p in papers(PAPERS)]
    outcomes: dict[str, Outcome] = {}
    with Store(settings.state) as store:
        live = Classifier(settings.llm)
        classifier = (
            BatchClassifier(settings, store, live, started=dt.datetime.now(dt.UTC), report=lambda line: None)
            if mode == "batch"
            else live
        )
        start = time.monotonic()
        await classifier.classify(jobs, lambda job, outcome: outcomes.__setitem__(job.paper.key, outcome))
        elapsed = time.monotonic() - start
        await classifier.close()
    usage = classifier.usage
    return {
        "verdicts": sum(isinstance(o, Verdict) for o in outcomes.values()),
        "usage": usage,
        "cost": estimate_cost(usage, settings.llm),
        "live_cost": live_cost(usage, settings.llm),
        "seconds": elapsed,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("live", "batch"):
            with Server(latency=LATENCY, requests_per_minute=SERVER_RPM, usage_by_length=True, batch=True) as server:
                figures = asyncio.run(run(server.url, mode, Path(folder)))
                stats = server.stats()
            usage = figures["usage"]
            http = stats["requests"] + stats["batch_calls"]
            tokens = usage.tokens
            print(
                f"{mode:<6} {figures['verdicts']}/{PAPERS} verdicts  {stats['requests']:>5} chat completions  "
                f"{stats['batch_calls']:>3} Batch API calls ({http} HTTP requests in all)  {tokens:,} tokens  "
                f"cost ~${figures['cost']:.4f} (live price ~${figures['live_cost']:.4f})  "
                f"{figures['seconds']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
