"""One run's taste stage and planning for many profiles over a large day: 200 profiles (interests made from real
paper titles) over 500 real papers from the fixtures' days. Embeds each paper once, places every profile's day by
taste, and plans what the LLM would be asked at the default judge_share, without asking it. Prints the time of
each step, the peak memory of the process, the state file's size, and the LLM requests planned against asking
about every paper. Asserts nothing.

    .venv/bin/python benchmarks/taste_scale.py
    .venv/bin/python benchmarks/taste_scale.py --profiles 50 --papers 200
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.config import Config
from digest.pipeline.judge import Judge
from digest.pipeline.taste import place_by_taste
from digest.sources.arxiv_parse import parse_feed
from digest.state.store import Store

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
FEEDS = [
    ("cs.CV_2026-06-23_rss.xml", ["cs.CV"]),
    ("cs.CL_2026-06-30_rss.xml", ["cs.CL"]),
    ("cs.CL+cs.AI_2026-07-01_rss.xml", ["cs.CL", "cs.AI"]),
]


def day_of(count: int) -> list:  # type: ignore[type-arg]
    papers = []
    for name, categories in FEEDS:
        feed = parse_feed(
            (FIXTURES / name).read_bytes(), url="f", categories=categories, announce_types=["new", "cross"]
        )
        papers += feed.papers
    day = dt.date(2026, 7, 1)
    return [p.model_copy(update={"announced": day, "categories": ["cs.CL"]}) for p in papers[:count]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=200)
    parser.add_argument("--papers", type=int, default=500)
    args = parser.parse_args()
    papers = day_of(args.papers)
    folder = Path(tempfile.mkdtemp())
    profiles = [
        {
            "name": f"reader{i}",
            "interests": f"I read papers like: {papers[(7 * i) % len(papers)].title}. "
            f"And also: {papers[(11 * i + 3) % len(papers)].title}.",
        }
        for i in range(args.profiles)
    ]
    config = Config.model_validate(
        {
            "arxiv": {"categories": ["cs.CL"]},
            "llm": {"api_key": "none"},
            "profiles": profiles,
            "state": str(folder / "state.sqlite3"),
        },
        context={"base_dir": folder},
    )
    store = Store(config.state)
    from digest.models import Feed

    store.record_feed(
        Feed(source="arXiv", url="f", announced=papers[0].announced, papers=papers), [p.name for p in config.profiles]
    )
    papers_of = {p.name: papers for p in config.profiles}
    judge = Judge(config)
    for label in ("first run (embeds)", "second run (vectors kept)"):
        clock = time.monotonic()
        tasted = asyncio.run(place_by_taste(config, store, papers_of, judge.in_scope))
        placed = time.monotonic() - clock
        clock = time.monotonic()
        _, jobs, summaries = judge.plan(store, papers_of, tasted.by_profile)
        planned = time.monotonic() - clock
        by_taste = sum(s.by_taste for s in summaries)
        print(
            f"{label}: {tasted.embedded} papers embedded, taste placed in {placed:.1f} s "
            f"(embedding {tasted.seconds:.1f} s of it), plan {planned:.1f} s; LLM requests {len(jobs):,} of "
            f"{len(jobs) + by_taste:,} ({by_taste:,} judged by taste)"
        )
    store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(f"{args.profiles} profiles x {len(papers)} papers: peak memory {peak:.0f} MB, state {size:.1f} MB")


if __name__ == "__main__":
    main()
