"""The Zotero library, read as `digest import` reads it (with no file), against the tests' loopback Zotero server
(tests/zotero.py, in a process of its own): the requests a first read and a second, unchanged read of a library make,
and the wall time and peak memory of a first read, for a few sizes; then one paper saved to Zotero, and the JSON the
server received. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/zotero.py                        # 2,000 and 20,000 items
    .venv/bin/python benchmarks/zotero.py --sizes 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.helpers import CL_FEED
from tests.servers import serve_asgi
from tests.zotero import API_KEY, FakeZotero

CONFIG = """\
arxiv: {{categories: [cs.CL]}}
llm: {{model: gpt-4o-mini, api_key: not-used}}
profiles:
  - name: me
    interests: Language models.
    library:
      zotero: {{user_id: 475425, api_key: "${{ZOTERO_API_KEY}}", api_url: "{url}", collections: [Reading],
               save_to: digest}}
state: digest.sqlite3
"""


def _serve(size: int, url_out: Any, requests_out: Any, stop: Any) -> None:
    """The loopback Zotero server with `size` preprints in "Reading"; the requests it received, on `stop`."""
    app = FakeZotero()
    app.add_bulk(size, collection=app.add_collection("Reading"))
    with serve_asgi(app) as url:
        app.base_url = url
        url_out.send(url)
        stop.wait()
        requests_out.send([(r["method"], r["path"], r["query"]) for r in app.requests])


def _import(folder: Path) -> tuple[float, float, str]:
    """Seconds, peak resident megabytes and what `digest import` printed."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "digest", "import", "--config", str(folder / "config.yaml")],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"} | {"ZOTERO_API_KEY": API_KEY},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, done.stdout


def _shown(requests: list[tuple[str, str, dict[str, str]]]) -> list[str]:
    """The requests, alike ones counted: GET /users/475425/items (itemKey: 50 keys) x 40."""
    said = []
    for method, path, query in requests:
        kept = {k: v for k, v in query.items() if k in ("since", "format", "includeTrashed", "limit", "q", "qmode")}
        if "itemKey" in query:
            kept["itemKey"] = f"{len(query['itemKey'].split(','))} keys"
        said.append(f"{method} {path}?{'&'.join(f'{k}={v}' for k, v in kept.items())}")
    return [f"{line} x {n}" if n > 1 else line for line, n in Counter(said).items()]


def read(size: int, folder: Path) -> None:
    urls, url_in = multiprocessing.Pipe()
    requests_in, requests_out = multiprocessing.Pipe()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(size, url_in, requests_out, stop))
    server.start()
    url = urls.recv()
    for old in folder.glob("digest.sqlite3*"):
        old.unlink()
    (folder / "config.yaml").write_text(CONFIG.format(url=url))
    first = _import(folder)
    second = _import(folder)
    stop.set()
    requests = requests_in.recv()
    server.join()
    made = len(requests) - 1  # the second read's one request is the last
    print(f"{size:,} items: first read {first[0]:.1f} s, peak {first[1]:.0f} MB; {first[2].strip()}")
    print(f"  first read, {made} requests:")
    print("\n".join(f"    {line}" for line in _shown(requests[:made])))
    print(f"  second read, unchanged ({second[0]:.1f} s): {second[2].strip()}")
    print("\n".join(f"    {line}" for line in _shown(requests[made:])))


async def _save() -> tuple[dict[str, Any], list[str]]:
    """One paper of the real feed saved to an empty library, in-process: the item and the requests it took."""
    from digest.config import Profile
    from digest.sources.arxiv_parse import parse_feed
    from digest.state.store import Store
    from digest.taste.zotero_save import save_to_zotero

    paper = parse_feed(CL_FEED.read_bytes(), url="fixture", categories=["cs.CL"], announce_types=["new"]).papers[0]
    app = FakeZotero()
    with serve_asgi(app) as url, tempfile.TemporaryDirectory() as work:
        zotero = {"user_id": 475425, "api_key": API_KEY, "api_url": url, "save_to": "digest"}
        profile = Profile.model_validate({"name": "me", "interests": "x", "library": {"zotero": zotero}})
        with Store(Path(work) / "state.sqlite3") as store:
            await save_to_zotero(store, profile, paper)
            await save_to_zotero(store, profile, paper)  # again: found, nothing written
    return app.received_writes[-1][0], _shown([(r["method"], r["path"], r["query"]) for r in app.requests])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:  # smallest first: RUSAGE_CHILDREN's peak is the largest child's so far
            read(size, Path(work))
    item, requests = asyncio.run(_save())
    print("a paper saved twice, the requests:")
    print("\n".join(f"    {line}" for line in requests))
    print("the item as the server received it:")
    print(json.dumps(item, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
