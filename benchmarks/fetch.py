"""Parse time and peak memory of the feed parser: the largest real fixture, and a synthetic 10,000-item feed
built by repeating its real items under new ids. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/fetch.py
"""

from __future__ import annotations

import re
import statistics
import time
import tracemalloc
from pathlib import Path

from digest.sources.arxiv_parse import parse_feed

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
LARGEST = FIXTURES / "cs.CV_2026-06-23_rss.xml"


def synthetic(items: int) -> bytes:
    text = LARGEST.read_text()
    first, last = text.index("<item>"), text.rindex("</item>") + len("</item>")
    real = re.findall(r"<item>.*?</item>", text[first:last], re.S)
    copies = []
    for n in range(items):
        item = real[n % len(real)]
        copies.append(re.sub(r"(\d{4}\.\d{5})v", lambda m, n=n: f"{9000 + n // 99999}.{n % 99999:05d}v", item))
    return (text[:first] + "\n".join(copies) + text[last:]).encode()


def measure(name: str, data: bytes, repeats: int) -> None:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        feed = parse_feed(data, url=name, categories=["cs.CV"], announce_types=["new", "cross"])
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    parse_feed(data, url=name, categories=["cs.CV"], announce_types=["new", "cross"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{name:<28} {len(data) / 1e6:6.2f} MB  {len(feed.papers):>6} papers  "
        f"parse median {statistics.median(times) * 1000:8.1f} ms ({repeats} runs)  "
        f"{len(feed.papers) / statistics.median(times):>8.0f} papers/s  peak memory {peak / 1e6:6.1f} MB"
    )


if __name__ == "__main__":
    measure(LARGEST.name, LARGEST.read_bytes(), repeats=5)
    measure("synthetic 10,000 items", synthetic(10_000), repeats=3)
