""" "Save to Zotero" from the digest: a signed link beside the rating buttons in the email (HTML, text) and the web
archive; a GET shows a confirmation, a POST saves the paper to the reader's Zotero library as a preprint, in the
collection the profile names, once however often the link is followed. Through `digest run` (the email, received by
the loopback SMTP server) and `digest web`, against the loopback Zotero server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, base_config, first_items, run_cli, smtp_email
from tests.servers import FeedServer, free_port, html_titles, serve_asgi
from tests.test_web import digest_web
from tests.test_zotero import ZOTERO_ENV
from tests.zotero import API_KEY, FakeZotero, preprint_data

DAY = first_items(CL_FEED.read_bytes(), 6)
PAPERS = parse_feed(DAY, url="fixture", categories=["cs.CL"], announce_types=["new", "cross"]).papers


@dataclass
class SaveSite:
    url: str  # the web side's base_url
    message: EmailMessage
    zotero: FakeZotero
    digest: Any  # `digest ...` with this config

    def links(self, label: str) -> list[str]:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return re.findall(rf'<a [^>]*?href="([^"]+)"[^>]*>{label}</a>', part.get_content())

    def preprints(self) -> list[dict[str, Any]]:
        return [i["data"] for i in self.zotero.items.values() if i["data"].get("itemType") == "preprint"]

    def ratings(self) -> dict[str, tuple[int, str]]:
        done = self.digest("ratings", "--json", "--profile", "me")
        assert done.returncode == 0, done.stderr
        return {r["paper"]: (r["rating"], r["source"]) for r in json.loads(done.stdout)}


@pytest.fixture
def save_site(tmp_path, fake_llm, smtp, write_config, monkeypatch) -> Iterator[SaveSite]:
    """A day of 6 papers (3 for the readers) mailed to "me", who saves to Zotero, and to "them", who reads Zotero and
    saves nowhere; `digest web` serving the links. The library has the last paper shown already, in "Reading"."""
    (llm_url, _), (smtp_port, inbox) = fake_llm, smtp
    monkeypatch.setenv("ZOTERO_API_KEY", API_KEY)  # for `digest web`, which saves
    zotero = FakeZotero()
    reading = zotero.add_collection("Reading")
    with serve_asgi(zotero) as zotero_url, serve_asgi(FeedServer(feeds={"/rss/cs.CL": DAY})) as feed_url:
        zotero.base_url = zotero_url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = base_config(tmp_path, feed_url, llm_url, email=smtp_email(smtp_port))
        config["web"] = {"listen": f"127.0.0.1:{port}", "base_url": url}
        section = {"user_id": 475425, "api_key": "${ZOTERO_API_KEY}", "api_url": zotero_url, "collections": ["Reading"]}
        config["profiles"] = [
            config["profiles"][0] | {"library": {"zotero": section | {"save_to": "digest"}}},
            config["profiles"][0] | {"name": "them", "email": ["them@example.org"], "library": {"zotero": section}},
        ]
        path = write_config(config)

        def digest(*args: str) -> Any:
            return run_cli(*args, "--config", str(path), env=ZOTERO_ENV)

        run = digest("run")
        assert run.returncode == 0, run.stdout + run.stderr
        mine = next(m for _, to, m in inbox.messages if "me@example.org" in to)
        theirs = next(m for _, to, m in inbox.messages if "them@example.org" in to)
        assert "Save to Zotero" not in theirs.as_string()  # their profile saves nowhere
        own = next(p for p in PAPERS if p.title == html_titles(mine)[-1])  # the last paper shown: the reader has it
        zotero.add_item(preprint_data(own.id, own.title, collections=[reading]))
        zotero.requests.clear()
        with digest_web(path, url):
            yield SaveSite(url=url, message=mine, zotero=zotero, digest=digest)


def test_a_save_link_shows_a_confirmation_and_a_post_saves_the_paper_once(save_site) -> None:
    saves = save_site.links("Save to Zotero")
    titles = html_titles(save_site.message)
    assert len(saves) == len(save_site.links("More like this")) == len(titles) == 3
    text = save_site.message.get_body(preferencelist=("plain",))
    assert text is not None and f"Save to Zotero: {saves[0]}" in text.get_content()

    for _ in range(3):  # a mail scanner, a link preview, the reader: GETs change nothing, and ask Zotero nothing
        page = httpx.get(saves[0])
        assert page.status_code == 200 and 'method="post"' in page.text and 'Into the collection "digest"' in page.text
    assert save_site.zotero.requests == []

    saved = httpx.post(saves[0])
    assert saved.status_code == 200, saved.text
    assert 'Saved to your Zotero library, in "digest".' in saved.text
    posts = [r for r in save_site.zotero.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/users/475425/collections", "/users/475425/items"]  # made, as missing
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["headers"]["zotero-write-token"]) for r in posts)
    assert all(r["headers"]["zotero-api-key"] == API_KEY for r in save_site.zotero.requests)
    digest_collection = next(k for k, c in save_site.zotero.collections.items() if c["data"]["name"] == "digest")
    item = save_site.zotero.received_writes[-1][0]
    paper = next(p for p in PAPERS if p.title == titles[0])
    assert item == {
        "itemType": "preprint",
        "title": paper.title,
        "creators": [
            {"creatorType": "author", "firstName": " ".join(n.split()[:-1]), "lastName": n.split()[-1]}
            for n in paper.authors
        ],
        "abstractNote": paper.abstract,
        "date": "2026-06-30",
        "repository": "arXiv",
        "url": f"https://arxiv.org/abs/{paper.id}",
        "DOI": f"10.48550/arXiv.{paper.id}",
        "collections": [digest_collection],
        "tags": [],
        "relations": {},
        "archiveID": f"arXiv:{paper.id}",
        "extra": f"arXiv: {paper.id} [{paper.primary_category}]",
    }
    assert save_site.ratings()[paper.id] == (1, "web")  # counts as "more like this"

    for _ in range(2):  # followed again: looked up, found, nothing written
        again = httpx.post(saves[0])
        assert again.status_code == 200 and 'Already in your Zotero library; it is in "digest".' in again.text
    assert len(save_site.zotero.received_writes) == 2
    assert [p["archiveID"] for p in save_site.preprints()].count(f"arXiv:{paper.id}") == 1


def test_a_paper_already_in_the_library_is_put_in_the_collection_not_saved_again(save_site) -> None:
    done = httpx.post(save_site.links("Save to Zotero")[-1])
    assert done.status_code == 200 and "Already in your Zotero library" in done.text
    patched = [r for r in save_site.zotero.requests if r["method"] == "PATCH"]
    assert len(patched) == 1 and patched[0]["headers"]["if-unmodified-since-version"]
    assert len(save_site.preprints()) == 1


def test_a_create_whose_answer_was_lost_is_sent_again_with_its_token_and_applied_once(save_site) -> None:
    save_site.zotero.lose_write_answers = 2  # the collection's create and the item's: applied, answered 503
    saved = httpx.post(save_site.links("Save to Zotero")[1])
    assert saved.status_code == 200 and "Saved to your Zotero library" in saved.text, saved.text
    creates = [r for r in save_site.zotero.requests if r["method"] == "POST" and r["path"].endswith("/items")]
    assert (
        len(creates) == 2 and creates[0]["headers"]["zotero-write-token"] == creates[1]["headers"]["zotero-write-token"]
    )
    assert len(save_site.preprints()) == 2  # the library's own, and this one, once
    assert [c["data"]["name"] for c in save_site.zotero.collections.values()].count("digest") == 1


def test_two_clicks_at_once_save_once(save_site) -> None:
    link = save_site.links("Save to Zotero")[0]
    answers: list[httpx.Response] = []
    clicks = [threading.Thread(target=lambda: answers.append(httpx.post(link, timeout=60))) for _ in range(4)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join()
    assert sorted(a.status_code for a in answers) == [200] * 4
    assert sum("Saved to your Zotero library" in a.text for a in answers) == 1
    assert len(save_site.preprints()) == 2


def test_the_archive_saves_in_place_and_a_refused_write_saves_nothing(save_site) -> None:
    archive = save_site.links("Past digests, and a feed for your feed reader")[0]
    day = httpx.get(archive + "2026-06-30")
    saves = [a for a in re.findall(r'<form class="inline" method="post" action="([^"]+)">', day.text) if "/z/" in a]
    assert len(saves) == 3
    answer = httpx.post(save_site.url + saves[0], data={"back": "2026-06-30"})
    assert answer.status_code == 303 and answer.headers["location"].startswith(urlsplit(archive).path + "2026-06-30#p-")
    assert len(save_site.preprints()) == 2

    save_site.zotero.key_may_write = False
    refused = httpx.post(save_site.url + saves[1])
    assert refused.status_code == 502
    assert "Not saved" in refused.text and "the API key may not do this: saving the paper (HTTP 403)" in refused.text
    assert API_KEY not in refused.text
    assert len(save_site.preprints()) == 2 and len(save_site.ratings()) == 1


def test_save_and_rating_tokens_are_not_each_other(save_site) -> None:
    save, rate = save_site.links("Save to Zotero")[0], save_site.links("More like this")[0]
    assert httpx.get(save.replace("/z/", "/r/")).status_code == 404
    assert httpx.post(rate.replace("/r/", "/z/")).status_code == 404
    assert httpx.post(save, headers={"Origin": "https://evil.example"}).status_code == 403
    assert save_site.zotero.requests == []


@pytest.mark.parametrize("output", ["html", "markdown"])
def test_every_part_of_the_digest_carries_the_save_link_only_where_the_profile_saves(output: str) -> None:
    from digest.config import OutputConfig
    from digest.links import Links
    from digest.render import Renderer
    from tests.test_golden import fixed_digest

    digest = fixed_digest()
    saving = Links("https://digest.example.org", "a secret of some length", saving={digest.profile})
    rendered = Renderer(OutputConfig(format=output), saving).render(digest)  # type: ignore[arg-type]
    for part in (rendered.text, rendered.html if output == "html" else rendered.markdown):
        assert part is not None
        tokens = re.findall(r"https://digest\.example\.org/z/([A-Za-z0-9_.-]+)", part)
        assert len(tokens) == digest.relevant_count
        said = [saving.read_save(t) for t in tokens]
        assert all(s is not None and s.p == digest.profile for s in said)
        assert all(saving.read(t) is None for t in tokens)  # a save token rates nothing
    elsewhere = Links("https://digest.example.org", "a secret of some length", saving={"someone else"})
    plain = Renderer(OutputConfig(format=output), elsewhere).render(digest)  # type: ignore[arg-type]
    assert "/z/" not in plain.text + (plain.html or plain.markdown or "") and "Save to Zotero" not in plain.text
