"""A bioRxiv API that lies, beside a day of arXiv: `digest run` as a user runs it, against loopback servers. The
API answers every page with the same three real records and a total of "10000", whatever the cursor (issue 34).
Prints what the run cost: requests to the API, its time, and when the arXiv digest was written; asserts nothing.

    .venv/bin/python benchmarks/rxiv_lying.py                          # this checkout
    .venv/bin/python benchmarks/rxiv_lying.py --checkout /tmp/before   # another tree of digest's sources
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.helpers import CL_FEED, base_config, first_items
from tests.servers import FakeLLM, FeedServer, RxivAPI, serve_asgi

PAGE = Path(__file__).parent.parent / "tests/fixtures/rxiv/biorxiv_details_2020-01-01_2022-12-31_cursor0.json"
ARXIV_PAPERS = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).parent.parent, help="digest's sources to run")
    parser.add_argument("--max-run-minutes", type=float, default=5)
    args = parser.parse_args()
    records = json.loads(PAGE.read_text())["collection"][:3]
    api = RxivAPI(records={"biorxiv": records}, lie="repeats")
    llm = FakeLLM()
    feed = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), ARXIV_PAPERS)})
    with serve_asgi(feed) as feed_url, serve_asgi(llm) as llm_url, serve_asgi(api) as api_url:
        folder = Path(tempfile.mkdtemp(prefix="rxiv-lying-"))
        config = base_config(folder, feed_url, llm_url + "/v1", max_run_minutes=args.max_run_minutes)
        subjects = sorted({r["category"] for r in records})
        config["biorxiv"] = {"categories": subjects, "api_url": api_url, "announce_types": ["new", "replace"]}
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        outbox = folder / "outbox" / "me"
        written: list[float] = []
        started = time.monotonic()

        def watch() -> None:
            while not written and time.monotonic() - started < args.max_run_minutes * 60 + 120:
                if outbox.exists() and any(outbox.iterdir()):
                    written.append(time.monotonic() - started)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        environment = {k: v for k, v in os.environ.items() if k not in {"DIGEST_CONFIG", "PYTHONPATH"}}
        run = subprocess.run(
            [sys.executable, "-m", "digest", "run", "--config", str(path)],
            cwd=args.checkout,
            capture_output=True,
            text=True,
            env=environment | {"OPENAI_API_KEY": "test-key"},
        )
        seconds = time.monotonic() - started
        watcher.join(timeout=1)
    times = [when for when, _ in api.requests]
    print(f"checkout            {args.checkout.resolve()}")
    print(f"max_run_minutes     {args.max_run_minutes:g}")
    print(f"exit code           {run.returncode}")
    print(f"run                 {seconds:.1f} s")
    print(
        f"bioRxiv API         {len(api.requests)} requests"
        + (f" over {times[-1] - times[0]:.1f} s" if len(times) > 1 else "")
    )
    print(f"LLM requests        {llm.requests} (arXiv papers: {ARXIV_PAPERS})")
    print(f"arXiv digest        {f'written {written[0]:.1f} s after the start' if written else 'never written'}")
    print("summary:")
    print("\n".join(f"  {line}" for line in run.stdout.splitlines()))
    if run.returncode not in (0, 1):
        print(run.stderr[-2000:])


if __name__ == "__main__":
    main()
