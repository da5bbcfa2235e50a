"""The taste model against careful labels: two readers' interests, every paper of two real arXiv days labelled by
reading it (tests/fixtures/labels: 2 clearly wanted, 1 borderline, 0 not wanted). For each reader-day, each signal's
AUC and average precision for the clearly wanted papers, the recall a judge_share keeps (the papers the LLM is
asked about, best by taste first), and the share of the day needed for 95% and 100% of them. 'interests' is the cold
start; 'ratings' trains on the other day's labels as ratings (its 2s liked, its 0s disliked, 30 of them sampled),
as a reader who rated the day before. Also the embedded model's load time and papers a second. Asserts nothing.

    .venv/bin/python benchmarks/taste.py
    .venv/bin/python benchmarks/taste.py --shares 0.3,0.4,0.5 --disliked 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.sources.arxiv_parse import parse_feed
from digest.taste.embeddings import LocalEmbedder, paper_text
from digest.taste.measures import auc, average_precision, share_for_recall
from digest.taste.ranker import RatedVector, TasteModel, percentiles

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
DAYS = {
    "2026-06-30": ("cs.CL_2026-06-30_rss.xml", ["cs.CL"]),
    "2026-07-01": ("cs.CL+cs.AI_2026-07-01_rss.xml", ["cs.CL", "cs.AI"]),
}
TYPES = ["new", "cross", "replace", "replace-cross"]


def load_days() -> dict[str, list]:  # type: ignore[type-arg]
    days = {}
    for day, (name, categories) in DAYS.items():
        feed = parse_feed((FIXTURES / name).read_bytes(), url="f", categories=categories, announce_types=TYPES)
        days[day] = feed.papers
    return days


def recall_kept(scores: list[float], wanted: list[bool], share: float) -> float:
    read = int(np.ceil(share * len(scores)))
    kept = set(np.argsort(-np.array(scores), kind="stable")[:read])
    wanted_at = [i for i, w in enumerate(wanted) if w]
    return sum(i in kept for i in wanted_at) / len(wanted_at)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", default="0.3,0.4,0.5")
    parser.add_argument("--disliked", type=int, default=30)
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]

    started = time.monotonic()
    embedder = LocalEmbedder()
    loaded = time.monotonic() - started
    days = load_days()
    texts = [paper_text(p) for papers in days.values() for p in papers]
    runs = []
    for _ in range(3):
        clock = time.monotonic()
        vectors = asyncio.run(embedder.embed(texts))
        runs.append(time.monotonic() - clock)
    print(
        f"embedded model: loaded in {loaded:.2f} s; {len(texts)} papers in {statistics.median(runs):.1f} s "
        f"(median of 3), {len(texts) / statistics.median(runs):.1f} papers a second"
    )
    by_key, offset = {}, 0
    for papers in days.values():
        for paper in papers:
            by_key[paper.id] = vectors[offset]
            offset += 1

    readers = yaml.safe_load((FIXTURES / "labels" / "readers.yaml").read_text())["readers"]
    labels: dict[tuple[str, str, str], int] = {}
    for line in (FIXTURES / "labels" / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        labels[(row["reader"], row["day"], row["id"])] = row["label"]

    header = f"{'reader':<11}{'day':<12}{'signal':<10}{'wanted':>7}{'AUC':>7}{'AP':>7}"
    header += "".join(f"{'keep@' + str(s):>9}" for s in shares) + f"{'95%':>7}{'100%':>7}"
    print(header)
    needed: dict[str, list[float]] = {"interests": [], "ratings": []}
    for reader in readers:
        interests = asyncio.run(embedder.embed([reader["interests"]]))[0]
        for day, papers in days.items():
            other = next(d for d in days if d != day)
            wanted = [labels[(reader["name"], day, p.id)] == 2 for p in papers]
            matrix = np.stack([by_key[p.id] for p in papers])
            liked = [p for p in days[other] if labels[(reader["name"], other, p.id)] == 2]
            unwanted = [p for p in days[other] if labels[(reader["name"], other, p.id)] == 0]
            disliked = random.Random(0).sample(unwanted, min(args.disliked, len(unwanted)))
            rated = [RatedVector(by_key[p.id], True, p.title) for p in liked]
            rated += [RatedVector(by_key[p.id], False, p.title) for p in disliked]
            for signal, model in (("interests", TasteModel(interests, [])), ("ratings", TasteModel(interests, rated))):
                scores = list(percentiles(model.score(matrix)))
                row = f"{reader['name']:<11}{day:<12}{signal:<10}{sum(wanted):>7}"
                row += f"{auc(scores, wanted) or 0:>7.3f}{average_precision(scores, wanted) or 0:>7.3f}"
                row += "".join(f"{recall_kept(scores, wanted, s):>9.0%}" for s in shares)
                at95, at100 = share_for_recall(scores, wanted, 0.95), share_for_recall(scores, wanted, 1.0)
                needed[signal].append(at100 or 0)
                row += f"{at95 or 0:>7.0%}{at100 or 0:>7.0%}"
                print(row)
    for signal, values in needed.items():
        print(
            f"{signal}: the LLM must read at most {max(values):.0%} of a day (by taste) to see every clearly wanted "
            f"paper; at judge_share 0.5 it is saved {1 - 0.5:.0%} of its requests"
        )


if __name__ == "__main__":
    main()
