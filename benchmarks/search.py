"""Full-text search over a large state: `search_papers` as `digest mcp` and the web side's JSON answer it, with the
profile's verdict on each result, on 100,000 generated papers (the default): about a year of 400 papers a day,
stored through the run's own path (`record_feed`, the search index kept up by its triggers), each day's verdicts
cached and its digest recorded (the 6+ of the day shown), as a year of runs leaves them. The papers are written by
a word-pair chain learned from the fixtures' real cs.CL, cs.AI and cs.CV abstracts, titles and authors, so that
their words are about as common as in arXiv's own (many are more: the chain knows only some 600 abstracts). Prints
the median time of each query over --repeat tries, and the median of those; asserts nothing.

    .venv/bin/python benchmarks/search.py
    .venv/bin/python benchmarks/search.py --papers 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.agents.read import Reader
from digest.config import Config
from digest.llm.prompt import PROMPT_VERSION, system_prompt
from digest.models import Feed, Paper, Usage, Verdict
from digest.pipeline.select import build_digest
from digest.sources.arxiv_parse import parse_feed
from digest.state.store import Store, prompt_hash

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
FEEDS = {
    "cs.CL_2026-06-30_rss.xml": ["cs.CL"],
    "cs.CL+cs.AI_2026-07-01_rss.xml": ["cs.CL", "cs.AI"],
    "cs.CV_2026-06-23_rss.xml": ["cs.CV"],
}
# What a reader asks: topics, a phrase, an author, common words that match much of the state, a rare word; and some
# of them only where the profile scored 6 or more (each paper's verdict then decides what is listed).
QUERIES: list[tuple[str, int | None]] = [
    ("speculative decoding", None),
    ("language model evaluation", None),
    ('"large language models"', None),
    ("retrieval augmented generation", None),
    ("diffusion", None),
    ("Zhang", None),
    ("benchmark for reasoning", None),
    ("the", None),
    ("a model that", None),
    ("tokenizer", None),
    ("speculative decoding", 6),
    ("language model evaluation", 6),
    ("the", 8),
]
PAPERS_A_DAY = 400


class Chain:
    """Word pairs of real text: each word followed by a word that followed it there."""

    def __init__(self, texts: list[str]) -> None:
        self.after: dict[str, list[str]] = defaultdict(list)
        self.starts: list[str] = []
        for text in texts:
            words = text.split()
            if words:
                self.starts.append(words[0])
            for first, second in itertools.pairwise(words):
                self.after[first].append(second)

    def write(self, rng: random.Random, words: int) -> str:
        out = [rng.choice(self.starts)]
        while len(out) < words:
            following = self.after.get(out[-1])
            out.append(rng.choice(following) if following else rng.choice(self.starts))
        return " ".join(out)


def generated_papers(count: int, seed: int = 7) -> list[Paper]:
    real = [
        paper
        for name, categories in FEEDS.items()
        for paper in parse_feed(
            (FIXTURES / name).read_bytes(), url=name, categories=categories, announce_types=["new", "cross"]
        ).papers
    ]
    rng = random.Random(seed)
    abstracts, titles = Chain([p.abstract for p in real]), Chain([p.title for p in real])
    authors = [name for paper in real for name in paper.authors]
    first_day = dt.date(2026, 7, 1) - dt.timedelta(days=count // PAPERS_A_DAY)  # oldest first
    return [
        Paper(
            id=f"{26 + number // 10_000_000}{number // 100_000 % 100:02d}.{number % 100_000:05d}",
            version=1,
            title=titles.write(rng, rng.randint(6, 14)),
            authors=rng.sample(authors, rng.randint(1, 8)),
            abstract=abstracts.write(rng, rng.randint(120, 250)),
            categories=[rng.choice(["cs.CL", "cs.AI", "cs.CV", "cs.LG"])],
            announce_type="new",
            announced=first_day + dt.timedelta(days=number // PAPERS_A_DAY),
        )
        for number in range(count)
    ]


def a_year_of_runs(config: Config, papers: list[Paper]) -> None:
    """Each day's papers stored as its fetch stores them, its verdicts cached under the profile's instructions, and
    its digest recorded. The verdicts go straight into the cache's table, in one transaction: a run saves each as
    it comes, which is the same rows, far more slowly."""
    profile = config.profiles[0]
    rng = random.Random(11)
    instructions = prompt_hash(system_prompt(profile))
    with Store(config.state) as store:
        for start in range(0, len(papers), PAPERS_A_DAY):
            day = papers[start : start + PAPERS_A_DAY]
            store.record_feed(Feed(url=f"generated/{start}", announced=day[0].announced, papers=day), [profile.name])
            verdicts = {
                p.key: Verdict(paper_key=p.key, score=score, reason=f"Scored {score}.", matched_interests=["models"])
                for p in day
                if (score := rng.choice([1, 2, 2, 3, 3, 4, 5, 6, 7, 8]))
            }
            store._db.executemany(  # one transaction a day: see above
                """INSERT INTO verdicts (paper_key, interests_hash, model, prompt_version, data, created_at)
                   VALUES (?, ?, ?, ?, ?, '2026-07-01T06:00:00+00:00')""",
                [(k, instructions, config.llm.model, PROMPT_VERSION, v.model_dump_json()) for k, v in verdicts.items()],
            )
            digest = build_digest(profile, day[0].announced, ["cs.CL"], day, verdicts, 0, Usage(), None)
            store.record_digest(profile.name, digest.announced, "subject", b"", verdicts, {}, digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = Config.model_validate(
            {
                "arxiv": {"categories": ["cs.CL", "cs.AI", "cs.CV", "cs.LG"]},
                "llm": {"api_key": "unused"},
                "profiles": [{"name": "me", "interests": "Language models and their evaluation."}],
                "state": f"{folder}/state.sqlite3",
            }
        )
        started = time.monotonic()
        papers = generated_papers(args.papers)
        written = time.monotonic()
        a_year_of_runs(config, papers)
        stored = time.monotonic()
        size = config.state.stat().st_size / 2**20
        print(
            f"{len(papers):,} papers: written in {written - started:.0f} s; stored, indexed, judged and in digests "
            f"in {stored - written:.0f} s; state file {size:,.0f} MB"
        )
        reader = Reader(config)
        medians = []
        # The processor time beside the wall clock: on a machine shared with others, the wall clock also counts the
        # time the process waited for a core.
        print(f"{'query':<42} {'median ms':>9} {'worst ms':>9} {'cpu ms':>7} {'results':>8}  ranked")
        cpu_medians = []
        for query, min_score in QUERIES:
            times, cpu = [], []
            for _ in range(args.repeat):
                began, began_cpu = time.perf_counter(), time.process_time()
                found = reader.search(query, min_score=min_score, limit=10)
                times.append((time.perf_counter() - began) * 1000)
                cpu.append((time.process_time() - began_cpu) * 1000)
            medians.append(statistics.median(times))
            cpu_medians.append(statistics.median(cpu))
            ranked = "the newest matches" if found.older_matches_unranked else "every match"
            asked = query if min_score is None else f"{query} (min_score {min_score})"
            print(
                f"{asked:<42} {medians[-1]:>9.1f} {max(times):>9.1f} {cpu_medians[-1]:>7.1f} {len(found.papers):>8}  "
                f"{ranked}"
            )
        print(
            f"median of the queries' medians: {statistics.median(medians):.1f} ms ({statistics.median(cpu_medians):.1f}"
            f" ms of processor time); slowest {max(medians):.1f} ms"
        )


if __name__ == "__main__":
    main()
