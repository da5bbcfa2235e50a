from __future__ import annotations

import compileall
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    API_PAGE,
    CL_AI_FEED,
    CL_FEED,
    SMALL_DAY,
    LoopbackRun,
    base_config,
    first_items,
    smtp_email,
)
from tests.servers import ApiServer, FakeLLM, FeedServer, serve_asgi, smtp_server


@pytest.fixture
def feed_server() -> Iterator[tuple[str, FeedServer]]:
    app = FeedServer(feeds={"/rss/cs.CL": CL_FEED.read_bytes(), "/rss/cs.CL+cs.AI": CL_AI_FEED.read_bytes()})
    with serve_asgi(app) as url:
        yield url, app


@pytest.fixture
def small_day(feed_server: tuple[str, FeedServer]) -> int:
    """The feed server's cs.CL day cut to its first SMALL_DAY papers, for the tests where the day's size does not
    matter: each paper is a request to the LLM server. Returns the number of papers."""
    _, feed = feed_server
    feed.feeds["/rss/cs.CL"] = first_items(feed.feeds["/rss/cs.CL"], SMALL_DAY)
    return SMALL_DAY


@pytest.fixture
def export_api() -> Iterator[tuple[str, ApiServer]]:
    """The arXiv export API on loopback, serving pages of a real API result; yields its query URL."""
    app = ApiServer(page=API_PAGE.read_bytes())
    with serve_asgi(app) as url:
        yield f"{url}/api/query", app


@pytest.fixture
def fake_llm() -> Iterator[tuple[str, FakeLLM]]:
    app = FakeLLM()
    with serve_asgi(app) as url:
        yield url + "/v1", app


@pytest.fixture
def smtp() -> Iterator[tuple[int, Any]]:
    with smtp_server() as (port, inbox):
        yield port, inbox


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(config: dict[str, Any]) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture
def loopback_run(
    tmp_path: Path, feed_server: tuple[str, FeedServer], fake_llm: tuple[str, FakeLLM], smtp: tuple[int, Any]
) -> LoopbackRun:
    """A run configured for the loopback feed, LLM and SMTP servers, its config.yaml written in tmp_path."""
    (feed_url, feed), (llm_url, llm), (port, inbox) = feed_server, fake_llm, smtp
    config = base_config(tmp_path, feed_url, llm_url, email=smtp_email(port))
    run = LoopbackRun(tmp_path / "config.yaml", config, feed_url, feed, llm_url, llm, port, inbox)
    run.write()
    return run


def pytest_sessionstart(session: pytest.Session) -> None:
    """digest's modules compiled once, before the tests start hundreds of `digest` processes: each then reads them
    compiled rather than compiling them all again, as it does where PYTHONDONTWRITEBYTECODE is set (a tenth of a
    second each). The controller compiles; xdist's workers find them done."""
    if not hasattr(session.config, "workerinput"):
        compileall.compile_dir(Path(__file__).parent.parent / "digest", quiet=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: with parallel workers the suite then ends when its many short tests do."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
