"""A day judged on a model a self-hoster runs on a CPU: `digest run` against llama.cpp's llama-server with
SmolLM2-135M-Instruct (build it with `bash .ci/llama-server`), over the first 40 papers of the labelled 2026-06-30
day, for the labelled reader 'evaluation', with judge_share 1 (the LLM reads every paper, as before) and the
default 0.5 (taste first). Prints each run's time and LLM requests, and its picks against the reader's labels
(clearly wanted papers picked, and other papers picked). Asserts nothing.

    .venv/bin/python benchmarks/taste_local_model.py
    .venv/bin/python benchmarks/taste_local_model.py --papers 40 --shares 1,0.5 --reader inference
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, base_config, first_items, run_cli
from tests.llama import llama_missing, llama_server
from tests.servers import FeedServer, serve_asgi

LABELS = Path(__file__).parent.parent / "tests" / "fixtures" / "labels"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=40)
    parser.add_argument("--shares", default="1,0.5")
    parser.add_argument("--reader", default="evaluation")
    args = parser.parse_args()
    if (missing := llama_missing()) is not None:
        sys.exit(missing)
    readers = {r["name"]: r["interests"] for r in yaml.safe_load((LABELS / "readers.yaml").read_text())["readers"]}
    labels = {}
    for line in (LABELS / "labels.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["reader"] == args.reader and row["day"] == "2026-06-30":
            labels[row["id"]] = row["label"]
    day = first_items(CL_FEED.read_bytes(), args.papers)
    served = parse_feed(day, url="f", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    total_wanted = sum(labels.get(p.id) == 2 for p in served)
    feed = FeedServer(feeds={"/rss/cs.CL": day})
    print(f"{'judge_share':>11} {'seconds':>8} {'LLM requests':>13} {'picked':>7} {'wanted picked':>14} {'of':>3}")
    with llama_server(parallel=4, threads=2) as llm_url, serve_asgi(feed) as feed_url:
        for share in (float(s) for s in args.shares.split(",")):
            folder = Path(tempfile.mkdtemp())
            config = base_config(folder, feed_url, llm_url)
            config["llm"] = {"base_url": llm_url, "model": "smollm2", "api_key": "none", "timeout_seconds": 600}
            config["embeddings"] = {"model": "all-MiniLM-L6-v2"}
            config["profiles"][0] |= {"interests": readers[args.reader], "judge_share": share}
            path = folder / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            clock = time.monotonic()
            done = run_cli("run", "--config", str(path), timeout=3600)
            seconds = time.monotonic() - clock
            requests = re.search(r"llm\s+(\d+) request", done.stdout)
            with sqlite3.connect(folder / "state.sqlite3") as db:
                content = db.execute("SELECT content FROM digests").fetchone()
            picked = [e["paper"]["id"] for g in json.loads(content[0])["groups"] for e in g[1]] if content else []
            wanted = [i for i in picked if labels.get(i) == 2]
            print(
                f"{share:>11g} {seconds:>8.0f} {requests[1] if requests else '?':>13} {len(picked):>7} "
                f"{len(wanted):>14} {total_wanted:>3}"
            )


if __name__ == "__main__":
    main()
