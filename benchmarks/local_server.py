"""The classifier against a real local model: llama.cpp's llama-server with SmolLM2-135M-Instruct on this
machine's CPU (build it with `bash .ci/llama-server`), over the real feed fixture's day (137 papers: new and
cross of cs.CL on 2026-06-30). The default settings (max_concurrency 16, requests in flight found by measuring the
server) beside fixed concurrency 1, 2, 4 and 8. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/local_server.py                    # every setting once
    .venv/bin/python benchmarks/local_server.py --repeat 3         # medians of three runs
    .venv/bin/python benchmarks/local_server.py --papers 40 --only default
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.config import LLMConfig, Profile
from digest.llm.answers import Outcome
from digest.llm.live import Classifier
from digest.llm.prompt import system_prompt
from digest.llm.requests import Job
from digest.models import Paper, Verdict
from digest.sources.arxiv_parse import parse_feed
from tests.llama import llama_missing, llama_server

FEED = Path(__file__).parent.parent / "tests" / "fixtures" / "cs.CL_2026-06-30_rss.xml"
PROFILE = Profile(name="bench", interests="Language models: training, inference, evaluation.")


class Run(NamedTuple):
    seconds: float
    verdicts: int
    timed_out: int
    settled: str


def day(count: int) -> list[Paper]:
    papers = parse_feed(FEED.read_bytes(), url="cs.CL", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    return papers[:count]


async def classify(url: str, papers: list[Paper], fixed: int | None) -> Run:
    settings = {"base_url": url, "api_key": "none", "model": "smollm2"}
    if fixed is not None:
        settings["max_concurrency"] = fixed
    llm = LLMConfig.model_validate(settings)
    classifier = Classifier(llm)
    if fixed is not None:
        classifier.capacity.fixed("fixed for this benchmark")  # exactly `fixed` in flight, as without measuring
    outcomes: dict[str, Outcome] = {}
    instructions = system_prompt(PROFILE)
    start = time.monotonic()
    await classifier.classify(
        [Job(PROFILE, p, instructions) for p in papers], lambda job, o: outcomes.__setitem__(job.paper.key, o)
    )
    seconds = time.monotonic() - start
    await classifier.close()
    verdicts = sum(isinstance(o, Verdict) for o in outcomes.values())
    return Run(seconds, verdicts, classifier.usage.timed_out, classifier.capacity.describe() or "-")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--papers", type=int, default=137)
    parser.add_argument("--parallel", type=int, default=4, help="llama-server --parallel (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="llama-server -t (default: every core)")
    parser.add_argument("--only", choices=["default", "1", "2", "4", "8"], action="append")
    args = parser.parse_args()
    missing = llama_missing()
    if missing:
        sys.exit(missing)
    papers = day(args.papers)
    settings: list[tuple[str, int | None]] = [("default", None), ("1", 1), ("2", 2), ("4", 4), ("8", 8)]
    if args.only:
        settings = [s for s in settings if s[0] in args.only]
    print(
        f"{len(papers)} papers, llama-server --parallel {args.parallel} -t {args.threads or 'all'}, "
        f"SmolLM2-135M-Instruct Q4_1; a fresh server for each run"
    )
    medians: dict[str, float] = {}
    for name, fixed in settings:
        times = []
        for _ in range(args.repeat):
            with llama_server(parallel=args.parallel, threads=args.threads) as url:
                run = asyncio.run(classify(url, papers, fixed))
            times.append(run.seconds)
            label = "default (adaptive, max 16)" if fixed is None else f"fixed max_concurrency {fixed}"
            print(
                f"{label:<28} {run.seconds:7.1f} s  {run.verdicts}/{len(papers)} verdicts  "
                f"{run.timed_out} timed out  {len(papers) / run.seconds:.2f} papers/s  in flight: {run.settled}",
                flush=True,
            )
        medians[name] = statistics.median(times)
        if args.repeat > 1:
            print(f"{'':<28} median {medians[name]:.1f} s (min {min(times):.1f}, max {max(times):.1f})")
    fixed_best = min((t, n) for n, t in medians.items() if n != "default") if len(medians) > 1 else None
    if fixed_best and "default" in medians:
        print(
            f"default {medians['default']:.1f} s against the best fixed setting ({fixed_best[1]}, "
            f"{fixed_best[0]:.1f} s): {medians['default'] / fixed_best[0]:.2f}x"
        )


if __name__ == "__main__":
    main()
