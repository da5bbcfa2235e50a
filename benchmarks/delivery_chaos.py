"""Delivery under SIGKILL: `digest run` killed at random moments of its delivery, against an SMTP server that takes
0.3 s to answer each accepted message, then run again to finish. Counts every copy per recipient and day, and
places each duplicate against the protocol's own window: the server had queued the message, and the state had not
recorded it as sent when the process died (its 250 unread, or read and not yet committed). A duplicate of a
delivery the state had recorded would be a bug. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/delivery_chaos.py              # 32 runs (about three minutes)
    .venv/bin/python benchmarks/delivery_chaos.py --runs 60
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.servers import FakeLLM, FeedServer, serve_asgi, smtp_server

FEED = Path(__file__).parent.parent / "tests" / "fixtures" / "cs.CL_2026-06-30_rss.xml"
ACCEPT_DELAY = 0.3
RECIPIENTS = ["a@example.org", "b@example.org", "c@example.org"]


def run_digest(config: Path) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"} | {"OPENAI_API_KEY": "test-key"}
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "run", "-q", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chance = random.Random(args.seed)
    copies: Counter[tuple[int, str]] = Counter()
    in_window = outside_window = lost = killed_in_delivery = 0
    with (
        serve_asgi(FeedServer(feeds={"/rss/cs.CL": FEED.read_bytes()}, validators=False)) as feed_url,
        serve_asgi(FakeLLM()) as llm_url,
        smtp_server(accept_delay=ACCEPT_DELAY) as (port, inbox),
    ):
        for trial in range(args.runs):
            folder = Path(tempfile.mkdtemp(prefix=f"chaos-{trial}-"))
            config = folder / "config.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "arxiv": {"categories": ["cs.CL"], "feed_url": f"{feed_url}/rss"},
                        "llm": {
                            "base_url": f"{llm_url}/v1",
                            "api_key": "${OPENAI_API_KEY}",
                            "max_concurrency": 32,
                            "requests_per_minute": 60000,
                            "tokens_per_minute": 100_000_000,
                        },
                        "profiles": [{"name": "me", "email": RECIPIENTS, "interests": "Language models."}],
                        "email": {
                            "from": "digest@example.org",
                            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
                        },
                        "state": "state.sqlite3",
                    }
                )
            )
            before = len(inbox.messages)
            process = run_digest(config)
            # Kill after 0, 1 or 2 messages were queued, at a random moment of the next one's 0.3 s.
            after = chance.randrange(len(RECIPIENTS))
            deadline = time.monotonic() + 60
            while len(inbox.messages) - before <= after and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(chance.uniform(0, ACCEPT_DELAY + 0.1))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed_in_delivery += 1
            process.wait()
            with sqlite3.connect(folder / "state.sqlite3") as db:  # what the state held when the process died
                recorded = dict(db.execute("SELECT recipient, status FROM deliveries").fetchall())
            finish = run_digest(config)
            finish.wait(timeout=120)
            for _, recipients, _message in inbox.messages[before:]:
                copies[(trial, recipients[0])] += 1
            for recipient in RECIPIENTS:
                count = copies[(trial, recipient)]
                if count == 0:
                    lost += 1
                elif count > 1 and recorded.get(recipient) == "sent":
                    outside_window += count - 1
                elif count > 1:
                    in_window += count - 1
    total = args.runs * len(RECIPIENTS)
    print(f"runs {args.runs}, killed during delivery {killed_in_delivery}, deliveries {total}")
    print(
        f"lost {lost}; duplicates {in_window + outside_window}: {in_window} in the protocol's window, "
        f"{outside_window} outside it; every other delivery arrived exactly once"
    )


if __name__ == "__main__":
    main()
