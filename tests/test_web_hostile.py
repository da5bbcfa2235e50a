"""The web side under a hostile visitor: half-open connections, oversized bodies, a forged Host header and a
damaged state, against `digest web` and `digest serve` on loopback. The scheduler must not notice any of it."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from digest.config import load_config
from digest.links import Links, web_secret
from digest.logs import OncePerMinute
from digest.state.store import Store
from digest.web.server import HEADERS_SECONDS
from tests.helpers import base_config, run_cli, start_cli, stop_process, wait_until
from tests.servers import free_port

DESCRIPTORS = 128  # the digest process's file limit in these tests: its bound on connections is a quarter of it
LORIS = 300  # half-open connections, over twice the descriptors the process has
RATER = "me"


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/health", timeout=10).status_code
    except httpx.HTTPError:
        return None


@contextmanager
def _half_open(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections, each having sent the start of a request's headers and then nothing."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            client = socket.socket()
            client.settimeout(5)
            try:
                client.connect(("127.0.0.1", port))
                client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            except OSError:  # refused or reset at once: as good as closed
                client.close()
                continue
            opened.append(client)
        yield opened
    finally:
        for client in opened:
            client.close()


def _closed_by_the_server(client: socket.socket) -> bool:
    try:
        return client.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.mark.long
def test_a_slow_loris_neither_starves_the_scheduler_nor_keeps_its_sockets(
    tmp_path, feed_server, fake_llm, write_config
) -> None:
    """1,100 half-open connections against a file limit of 1024 froze the heartbeat, and none was ever closed."""
    (feed_url, _), (llm_url, _) = feed_server, fake_llm
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = base_config(tmp_path, feed_url, llm_url, schedule={"cron": "0 7 * * *", "timezone": "UTC"})
    config["web"] = {"listen": f"127.0.0.1:{port}", "base_url": url}
    process = start_cli("serve", "--config", str(write_config(config)), file_limit=DESCRIPTORS)
    try:
        wait_until(lambda: _health(url) == 200 or process.poll() is not None, timeout=60)
        assert process.poll() is None
        with _half_open(port, LORIS) as clients:
            # The longest-waiting half-open connection makes room: a real request is answered meanwhile.
            assert [_health(url) for _ in range(3)] == [200, 200, 200]
            started = time.monotonic()
            # Each was closed by the server once its headers were late (or, beyond the bound, to make room).
            assert all(_closed_by_the_server(client) for client in clients)
            assert time.monotonic() - started < HEADERS_SECONDS + 5
        assert run_cli("health", "--config", str(tmp_path / "config.yaml")).returncode == 0
        assert _health(url) == 200
    finally:
        output = stop_process(process)
    # No traceback per refused accept: a few lines, whatever the flood.
    assert "Traceback" not in output and len(output.splitlines()) < 40, output[-3000:]


@pytest.fixture
def web_without_base_url(tmp_path, feed_server, small_day, fake_llm, write_config) -> Iterator[tuple[str, Path]]:
    """`digest web` after one run (of a small day), with no base_url: its pages are reached by the path alone."""
    (feed_url, _), (llm_url, _) = feed_server, fake_llm
    port = free_port()
    config = base_config(tmp_path, feed_url, llm_url)
    config["web"] = {"listen": f"127.0.0.1:{port}"}
    path = write_config(config)
    assert run_cli("run", "--config", str(path)).returncode == 0
    process = start_cli("web", "--config", str(path), file_limit=DESCRIPTORS)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _health(url) == 404 or process.poll() is not None, timeout=30)
        assert process.poll() is None
        yield url, path
    finally:
        stop_process(process)


def _links(path: Path) -> Links:
    config = load_config(path, {"OPENAI_API_KEY": "test-key"})
    with Store(config.state) as store:
        return Links("", web_secret(config, store))


def test_the_feed_builds_no_link_and_no_id_from_the_host_header(web_without_base_url) -> None:
    url, path = web_without_base_url
    feed = _links(path).feed("me")
    honest = httpx.get(f"{url}{feed}")
    forged = httpx.get(f"{url}{feed}", headers={"Host": "evil.example:8080"})
    assert honest.status_code == forged.status_code == 200
    assert "evil.example" not in forged.text
    assert forged.text == honest.text  # the same ids and links, whoever says they are where
    assert re.search(r'<link rel="self" type="application/atom\+xml" href="/a/me/[0-9a-f]+/feed.atom"/>', forged.text)


def test_a_rating_post_with_a_large_or_multipart_body_is_refused_before_it_is_read(web_without_base_url) -> None:
    """999 file parts of 1 MB with a valid token took the process to 1,028 MB, and it stayed there."""
    url, path = web_without_base_url
    links = _links(path)
    done = run_cli("ratings", "--json", "--config", str(path))
    assert done.returncode == 0 and done.stdout.strip() == "[]"
    with Store(path.parent / "state.sqlite3") as store:
        paper = store.papers_of_digest("me", dt.date(2026, 6, 30))[0]
    rate_path = links.rate(RATER, paper, 1)
    target = f"{url}{rate_path}"
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as raw:
        # Headers that announce 999 MB of multipart, and not one byte of it sent: the answer comes at once.
        raw.sendall(
            f"POST {rate_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 999000000\r\n\r\n".encode()
        )
        assert raw.recv(200).startswith(b"HTTP/1.1 415 ")
    assert httpx.post(target, content=b"back=" + b"9" * 100_000, headers=_form()).status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it comes
        yield from (b"back=" + b"1" * 1000 for _ in range(10))

    assert httpx.post(target, content=chunked(), headers=_form()).status_code == 413
    assert httpx.post(target, content=b"a=1&b=2&c=3&d=4&e=5", headers=_form()).status_code == 400
    done = run_cli("ratings", "--json", "--config", str(path))
    assert done.stdout.strip() == "[]"  # none of them recorded anything
    assert httpx.post(target, content=b"", headers=_form()).status_code == 200  # the honest form still works
    assert '"rating": 1' in run_cli("ratings", "--json", "--config", str(path)).stdout


def _form() -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_500_carries_the_security_headers_too(web_without_base_url) -> None:
    url, path = web_without_base_url
    archive = _links(path).archive("me")
    state = path.parent / "state.sqlite3"
    for leftover in path.parent.glob("state.sqlite3-*"):
        leftover.unlink()
    state.write_bytes(b"this is not a database" * 100)  # damaged under the running web side
    answer = httpx.get(f"{url}{archive}")
    assert answer.status_code == 500
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"


def test_a_repeated_warning_is_logged_once_a_minute_with_a_count() -> None:
    clock = [0.0]
    repeats = OncePerMinute(clock=lambda: clock[0])

    def passes(message: str, level: int = logging.ERROR) -> str | None:
        record = logging.LogRecord("asyncio", level, __file__, 1, message, None, None)
        return record.getMessage() if repeats.filter(record) else None

    assert passes("socket.accept() out of system resource") == "socket.accept() out of system resource"
    for _ in range(500):
        clock[0] += 0.1
        assert passes("socket.accept() out of system resource") is None
    assert passes("another error") == "another error"  # a different message is not held back
    assert passes("a progress line", logging.INFO) == "a progress line"  # nor anything below a warning
    clock[0] = 61.0
    assert passes("socket.accept() out of system resource") == (
        "socket.accept() out of system resource (500 more like it in the last minute were not logged)"
    )
