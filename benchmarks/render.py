"""Recording a digest for many pending papers: what a `--since` catch-up on busy categories brings. Times the
planning and rendering a run does after classification (scope, rules, digest, Jinja, the record), for 1,000 to
50,000 papers, with every verdict known. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/render.py
    .venv/bin/python benchmarks/render.py --sizes 50000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.config import Config
from digest.models import Feed, Usage, Verdict
from digest.pipeline.judge import Judge
from digest.pipeline.record import Composer
from digest.render import Renderer
from digest.sources.arxiv_parse import parse_feed
from digest.state.store import Store

FEED = Path(__file__).parent.parent / "tests" / "fixtures" / "cs.CL_2026-06-30_rss.xml"


def papers(count: int) -> list:  # type: ignore[type-arg]
    """`count` distinct papers made from the fixture's real ones."""
    real = parse_feed(FEED.read_bytes(), url="f", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    return [
        real[i % len(real)].model_copy(update={"id": f"2607.{i:05d}", "title": f"{real[i % len(real)].title} {i}"})
        for i in range(count)
    ]


def once(count: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        config = Config.model_validate(
            {
                "arxiv": {"categories": ["cs.CL"]},
                "llm": {"api_key": "unused"},
                "profiles": [{"name": "me", "interests": "Language models.", "max_papers": 50}],
                "state": f"{folder}/state.sqlite3",
                "output": {"outbox": f"{folder}/outbox"},
            }
        )
        pending = papers(count)
        verdicts = {
            "me": {
                p.key: Verdict(paper_key=p.key, score=8 if i % 3 == 0 else 2, reason="r", matched_interests=[])
                for i, p in enumerate(pending)
            }
        }
        judge = Judge(config)
        with Store(config.state) as store:
            store.record_feed(Feed(url="f", announced=dt.date(2026, 6, 30), papers=pending), ["me"])
            started = time.perf_counter()
            renderer = Renderer(config.output)
            composer = Composer(config, judge, store, renderer, usage=Usage(), cost=0.0, unreadable=0)
            composer.record(config.profiles[0], dt.date(2026, 6, 30), pending, verdicts)
            return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes:
        times = [once(size) for _ in range(args.repeat)]
        print(
            f"{size:>6} pending papers: record the digest in {statistics.median(times):.2f} s "
            f"(median of {args.repeat}; min {min(times):.2f}, max {max(times):.2f})"
        )


if __name__ == "__main__":
    main()
