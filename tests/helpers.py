"""What the tests share besides fixtures: the fixture files, configs for the loopback servers, `digest` run as a
user runs it, and small waits and clocks. Fixtures are in conftest.py."""

from __future__ import annotations

import datetime as dt
import functools
import multiprocessing
import multiprocessing.context
import os
import pty
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests import forked
from tests.servers import FakeLLM, FeedServer

FIXTURES = Path(__file__).parent / "fixtures"
CL_FEED = FIXTURES / "cs.CL_2026-06-30_rss.xml"
CL_AI_FEED = FIXTURES / "cs.CL+cs.AI_2026-07-01_rss.xml"
CV_FEED = FIXTURES / "cs.CV_2026-06-23_rss.xml"
EMPTY_FEED = FIXTURES / "cs.CL_2026-06-27_empty_rss.xml"
API_PAGE = FIXTURES / "cs.CL_2026-06-30_api.xml"
SMALL_DAY = 12  # papers: CL_FEED's first items (all new or cross), as the small_day fixture serves them


class FakeClock:
    """An injectable clock for pacing tests: `sleep` records each wait and, if `advance`, moves time on by it."""

    def __init__(self, start: float = 0.0, *, advance: bool = True) -> None:
        self.now = start
        self.slept: list[float] = []
        self._advance = advance

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self._advance:
            self.now += seconds


def smtp_email(port: int, sender: str = "digest@example.org") -> dict[str, Any]:
    """config.yaml's email section for the loopback SMTP server, without TLS."""
    return {"from": sender, "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}


def base_config(tmp_path: Path, feed_url: str, llm_url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "arxiv": {"categories": ["cs.CL"], "feed_url": f"{feed_url}/rss", "max_retry_seconds": 1},
        "llm": {
            "model": "gpt-4o-mini",
            "base_url": llm_url,
            "api_key": "${OPENAI_API_KEY}",
            "max_concurrency": 8,
            "requests_per_minute": 60000,
            "tokens_per_minute": 100_000_000,
            "timeout_seconds": 5,
        },
        # The taste model (embeddings) has tests of its own, test_taste.py; here the LLM reads every paper.
        "embeddings": "off",
        "profiles": [{"name": "me", "email": ["me@example.org"], "interests": "Language models and their evaluation."}],
        "email": {"from": "digest@example.org"},
        "output": {"outbox": "outbox"},
        "state": "state.sqlite3",
    }
    for key, value in overrides.items():
        config[key] = value
    return config


@dataclass
class LoopbackRun:
    """A run configured for the loopback servers (the `loopback_run` fixture): `config`, base_config mailing through
    the SMTP server, is written to `path`; the feed server, the LLM server and the SMTP inbox are at hand, to script
    them and to count what they saw. Change `config` and `write()` it again for the next run."""

    path: Path
    config: dict[str, Any]
    feed_url: str
    feed: FeedServer
    llm_url: str
    llm: FakeLLM
    smtp_port: int
    inbox: Any

    def write(self, config: dict[str, Any] | None = None, folder: Path | None = None) -> Path:
        """`config` (the run's own, as changed since, by default) as config.yaml in `folder` (the run's by default)."""
        path = (folder or self.path.parent) / "config.yaml"
        path.write_text(yaml.safe_dump(self.config if config is None else config, sort_keys=False))
        return path

    def digest(self, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
        """`digest ARGS --config PATH`, as a user runs it (see run_cli)."""
        return run_cli(*args, "--config", str(self.path), **options)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`digest ...` as a user runs it: a separate process, its output and exit code (forked from a process that
    has imported digest already: see tests/forked.py)."""
    environment = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "DIGEST_CONFIG"}}
    environment.update({"OPENAI_API_KEY": "test-key", **(env or {})})
    command = [sys.executable, "-m", "digest", *args]
    if any(name.startswith("PYTHON") for name in env or {}):  # read as Python starts: it has to start
        return subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=timeout, stdin=subprocess.DEVNULL
        )
    with tempfile.TemporaryDirectory(prefix="digest-cli-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        child = _forks().Process(
            target=forked.digest_main, args=(list(args), environment, os.getcwd(), str(out), str(err))
        )
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(
            command, child.exitcode, out.read_text("utf-8", "replace"), err.read_text("utf-8", "replace")
        )


@functools.cache
def _forks() -> multiprocessing.context.ForkServerContext:
    """One fork server per test process, started on first use with digest imported."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(forked.PRELOAD)
    return context


def start_cli(*args: str, file_limit: int | None = None) -> subprocess.Popen[str]:
    """`digest ...` started as a user starts it, output and errors together, to be stopped by the test;
    `file_limit`: its descriptor limit, soft and hard (so that it cannot raise it)."""

    def limit_files() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, file_limit))

    environment = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"} | {"OPENAI_API_KEY": "test-key"}
    return subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        preexec_fn=limit_files,
    )


def write_bibtex_library(path: Path, entries: int, *, huge_field: int = 0) -> None:
    """A generated BibTeX library: every entry an arXiv paper with accents, escapes and math, as exports have them;
    with `huge_field`, one entry carries a field of that many bytes on one line (a PDF pasted in)."""
    with path.open("w") as out:
        for number in range(entries):
            pasted = f"  file = {{{'x' * huge_field}}},\n" if huge_field and number == entries // 2 else ""
            out.write(
                f"@article{{key{number},\n  title = {{Caf\\'e {{M}}odels {number}}},\n"
                f"  author = {{M{{\\\"u}}ller, Hans and \\v{{S}}ediv\\'y, Jan}},\n"
                f"  abstract = {{A 20\\% gain as $\\alpha \\to \\infty$.}},\n{pasted}"
                f"  eprint = {{2401.{number:05d}}},\n  archiveprefix = {{arXiv}},\n}}\n\n"
            )


def first_items(feed: bytes, count: int) -> bytes:
    """The real feed with only its first `count` items, the channel as arXiv wrote it: a small day, for tests
    where the day's size does not matter (every paper of a day is a request to the LLM server)."""
    ET.register_namespace("arxiv", "http://arxiv.org/schemas/atom")
    ET.register_namespace("dc", "http://purl.org/dc/elements/1.1/")
    ET.register_namespace("atom", "http://www.w3.org/2005/Atom")
    root = ET.fromstring(feed)
    channel = root.find("channel")
    assert channel is not None
    for item in channel.findall("item")[count:]:
        channel.remove(item)
    return ET.tostring(root, xml_declaration=True, encoding="utf-8")


def day_feeds(days: list[dt.date], source: Path = CL_FEED) -> list[bytes]:
    """The fixture's items dealt out over `days`: one feed a day, each dated as arXiv dates that day's feed."""
    text = source.read_text()
    items = re.findall(r"    <item>.*?</item>\n", text, re.S)
    head, tail = text[: text.index("    <item>")], text[text.rindex("</item>\n") + len("</item>\n") :]
    return [
        (head + "".join(items[number :: len(days)]) + tail).replace("Tue, 30 Jun 2026", f"{day:%a, %d %b %Y}").encode()
        for number, day in enumerate(days)
    ]


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[str], expect: int = 0) -> str:
    """SIGTERM, as `docker stop` sends it; the process must exit by itself with `expect`. Returns its output."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    output = process.stdout.read() if process.stdout else ""
    assert code == expect, output
    return output


def run_on_terminal(args: list[str], env: dict[str, str], seconds: float) -> tuple[subprocess.Popen[str], str, bytes]:
    """`digest ARGS` with its stderr on a pseudo-terminal, as a person at a terminal sees it (a progress line is
    drawn only there): the ended process, its stdout, and every byte the terminal received."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    os.close(follower)
    terminal = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1.0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process has closed its end
                break
            if not chunk:
                break
            terminal += chunk
    os.close(leader)
    try:
        stdout = process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        process.kill()
    return process, stdout, terminal
