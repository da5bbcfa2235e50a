"""digest against a truly real local model: llama.cpp's llama-server, built from the sources vendored in the
llama-cpp-python sdist, with SmolLM2-135M-Instruct from PyPI, on this machine's CPU. Skipped, with the reason,
where `bash .ci/llama-server` has not built it; CI builds it first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CL_FEED, base_config, first_items, run_cli
from tests.llama import llama_missing, llama_server
from tests.servers import FeedServer, serve_asgi

pytestmark = [
    pytest.mark.skipif(llama_missing() is not None, reason=llama_missing() or ""),
    pytest.mark.long,
    pytest.mark.xdist_group("llama-server"),  # one worker, one server for both tests
]
DAY = 10  # papers: a small day, so that the suite beside it still takes minutes on two cores (10: enough to measure)


@pytest.fixture(scope="module")
def llama() -> Iterator[str]:
    # One thread: beside the rest of the suite on two cores, two threads waited for each other, spinning, and took
    # 145 CPU-seconds for this day (55 alone), the other tests' share.
    with llama_server(parallel=4, threads=1) as url:
        yield url


@pytest.fixture
def small_day() -> Iterator[str]:
    app = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), DAY)})
    with serve_asgi(app) as url:
        yield url


def _config(tmp_path: Path, feed_url: str, llm_url: str) -> dict[str, object]:
    config = base_config(tmp_path, feed_url, llm_url)
    # Every llm setting at its default but the server and the model: what a new user with a local model writes.
    config["llm"] = {"base_url": llm_url, "model": "smollm2"}
    config["arxiv"]["announce_types"] = ["new", "cross", "replace", "replace-cross"]
    return config


def test_a_day_on_a_local_model_at_default_settings_judges_every_paper(tmp_path, llama, small_day, write_config):
    """Every paper judged, none failed, whatever the machine is doing. How many timed out is a figure of the
    machine's speed: benchmarks/local_server.py measures it (0 on two quiet cores); on a machine three times
    busier a few do, and each is asked again."""
    path = write_config(_config(tmp_path, small_day, llama))
    run = run_cli("run", "-v", "--config", str(path), timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"me           {DAY} classified, 0 cached, 0 by your rules or ratings, 0 failed" in run.stdout, run.stdout
    assert re.search(r"\d+ timed out", run.stdout) and "local, no charge" in run.stdout
    settled = next(line for line in run.stdout.splitlines() if line.startswith("  in flight"))
    assert "found by measuring the server" in settled
    print(run.stdout)  # the summary, for the log: how many at once the server settled on, and how long it took
    assert (tmp_path / "outbox" / "me").is_dir()


def test_check_says_ok_for_llama_servers_model_under_any_name(tmp_path, llama, small_day, write_config):
    config = _config(tmp_path, small_day, llama)
    config["llm"]["model"] = "my-local-model"  # type: ignore[index]
    check = run_cli("check", "--config", str(write_config(config)))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "answers any model name" in check.stdout
