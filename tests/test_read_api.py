"""The read side as JSON under `digest web`, on loopback, over a state filled by a real `digest run` for two
profiles: behind each profile's archive key exactly as the archive pages are, bounded, paged, with the security
headers, and unshaken by hostile queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from digest.links import Links
from tests.helpers import CL_FEED, base_config, run_cli
from tests.servers import FakeLLM, FeedServer, free_port, serve_asgi
from tests.test_web import digest_web

pytestmark = pytest.mark.xdist_group("read-api")  # one worker, one `digest run` and `digest web` for the module's tests

SECRET = "the-secret-that-derives-the-archive-keys"
SOME_PAPER = "2606.29228"


@dataclass
class Api:
    url: str
    links: Links
    config: str

    def base(self, profile: str = "me", key_of: str | None = None) -> str:
        return f"{self.url}/a/{profile}/{self.links.key(key_of or profile)}/api"

    def get(self, path: str, profile: str = "me", **params: Any) -> httpx.Response:
        return httpx.get(f"{self.base(profile)}/{path}", params=params or None, timeout=10)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("api")
    port = free_port()
    with serve_asgi(FeedServer(feeds={"/rss/cs.CL": CL_FEED.read_bytes()})) as feed_url, serve_asgi(FakeLLM()) as llm:
        config = base_config(folder, feed_url, f"{llm}/v1")
        config["profiles"].append({"name": "them", "email": ["them@example.org"], "interests": "Speech."})
        config["web"] = {"listen": f"127.0.0.1:{port}", "base_url": f"http://127.0.0.1:{port}", "secret": SECRET}
        path = folder / "config.yaml"
        path.write_text(json.dumps(config))
        done = run_cli("run", "--config", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
    rated = run_cli("rate", SOME_PAPER, "down", "--profile", "them", "--config", str(path))
    assert rated.returncode == 0, rated.stderr
    url = f"http://127.0.0.1:{port}"
    with digest_web(path, url):
        yield Api(url=url, links=Links("", SECRET), config=str(path))


def test_no_key_or_another_profiles_key_is_a_404_like_any_other(api: Api) -> None:
    nowhere = httpx.get(f"{api.url}/no/such/page")
    paths = ["digests", "digests/2026-06-30", f"paper?id={SOME_PAPER}", "search?q=language"]
    for path in paths:
        assert api.get(path).status_code == 200, path
        for base in (
            f"{api.url}/a/me/api",  # no key
            f"{api.url}/a/me/{'0' * 32}/api",  # a wrong one
            api.base("me", key_of="them"),  # the other profile's
            api.base("them", key_of="me"),
            f"{api.url}/a/nobody/{api.links.key('nobody')}/api",  # a key for a profile that does not exist
        ):
            refused = httpx.get(f"{base}/{path}")
            assert refused.status_code == 404, (base, path)
            assert refused.text == nowhere.text and "application/json" not in refused.headers["content-type"]


def test_answers_are_json_with_the_pages_security_headers(api: Api) -> None:
    answer = api.get("digests/2026-06-30", limit=3)
    assert answer.headers["content-type"] == "application/json"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store" and answer.headers["referrer-policy"] == "same-origin"
    digest = answer.json()
    assert digest["profile"] == "me" and digest["date"] == "2026-06-30" and len(digest["papers"]) == 3
    assert SECRET not in answer.text and api.links.key("me") not in answer.text and "/r/" not in answer.text


def test_every_list_is_bounded_and_paged(api: Api) -> None:
    archive = api.get("digests", limit=1).json()
    assert [d["date"] for d in archive["digests"]] == ["2026-06-30"] and archive["next_offset"] is None

    whole = api.get("digests/2026-06-30", limit=100).json()
    pages, offset = [], 0
    while offset is not None:
        page = api.get("digests/2026-06-30", limit=7, offset=offset).json()
        pages += page["papers"]
        offset = page["next_offset"]
    assert pages == whole["papers"] and len(pages) == whole["papers_shown"] > 7

    found, offset = [], 0
    while offset is not None:
        page = api.get("search", q="language", limit=10, offset=offset).json()
        assert len(page["papers"]) <= 10
        found += [p["id"] for p in page["papers"]]
        offset = page["next_offset"]
    assert len(found) == len(set(found)) > 10

    for params, said in [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"page": 2}, "page"),
    ]:
        refused = api.get("digests", **params)
        assert refused.status_code == 400 and said in refused.json()["error"], (params, refused.text)
    assert api.get("digests/2026-07-01").status_code == 404
    assert api.get("digests/not-a-day").status_code == 404
    assert api.get("search", q="language", offset=495, limit=10).status_code == 400


def test_hostile_queries_are_answered_in_words(api: Api) -> None:
    for query in ["AND OR (", "NEAR(a b)", "title:lang*", "^model -x +y", "'; DROP TABLE papers; --", "\u202emodel"]:
        answer = api.get("search", q=query)
        assert answer.status_code == 200, (query, answer.text)
    for query, said in [('"', "no words"), ("()", "no words"), ("", "at least 1 character")]:
        refused = api.get("search", q=query)
        assert refused.status_code == 400 and said in refused.json()["error"], (query, refused.text)
    long = "language " * 1200  # 10 kB
    refused = api.get("search", q=long)
    assert refused.status_code == 400 and "at most 500 characters" in refused.json()["error"]
    assert "language language" not in refused.text  # not echoed back
    many = " ".join(f"w{n}" for n in range(40))
    assert "at most 16" in api.get("search", q=many).json()["error"]
    assert api.get("search").status_code == 400  # no q at all
    assert api.get("search", q="language").status_code == 200  # and it still answers


def test_a_profile_sees_its_own_verdicts_and_ratings_only(api: Api) -> None:
    mine = api.get("paper", id=f"https://arxiv.org/abs/{SOME_PAPER}").json()
    theirs = api.get("paper", profile="them", id=SOME_PAPER).json()
    assert [v["profile"] for v in mine["verdicts"]] == ["me"] and mine["ratings"] == []
    assert [v["profile"] for v in theirs["verdicts"]] == ["them"]
    assert [(r["profile"], r["rating"]) for r in theirs["ratings"]] == [("them", "less")]
    assert theirs["verdicts"][0]["verdict_from"] == "digest"  # rated after its digest showed it: as it showed it
    found = api.get("search", q="language", limit=5).json()
    assert {v["profile"] for p in found["papers"] for v in p["verdicts"]} == {"me"}
    unknown = api.get("paper", id="2601.00001")
    assert unknown.status_code == 404 and "has not seen the paper" in unknown.json()["error"]
    assert api.get("paper", id="not a paper").status_code == 400
