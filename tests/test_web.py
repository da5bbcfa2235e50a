"""The web side as readers meet it: `digest web` (and `digest serve`) under uvicorn on loopback, reached through the
links of a digest that the loopback SMTP server received, with httpx and with a real browser."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import string
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx
import pytest
from itsdangerous import URLSafeSerializer

from digest.config import OutputConfig
from digest.links import RATE_SALT, Links, RateToken
from digest.render import Renderer
from tests.helpers import (
    CL_FEED,
    SMALL_DAY,
    base_config,
    first_items,
    run_cli,
    smtp_email,
    start_cli,
    stop_process,
    wait_until,
)
from tests.servers import FeedServer, free_port, html_titles, serve_asgi
from tests.test_golden import fixed_digest

ATOM = "{http://www.w3.org/2005/Atom}"
HOSTILE_TITLE = "Generating <script>alert(1)</script> in the <b>Limit</b>"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium")


@dataclass
class Site:
    url: str  # the web side's base_url
    config: Path
    message: EmailMessage  # the digest as the mail server received it
    digest: Callable[..., subprocess.CompletedProcess[str]]  # `digest ...` with this config

    def links(self, label: str) -> list[str]:
        """The links of the HTML part with this text, in order."""
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return re.findall(rf'<a [^>]*?href="([^"]+)"[^>]*>{label}</a>', part.get_content())

    def ratings(self) -> list[dict[str, Any]]:
        done = self.digest("ratings", "--json")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


@contextmanager
def digest_web(config: Path, url: str) -> Iterator[subprocess.Popen[str]]:
    process = start_cli("web", "--config", str(config))
    try:
        wait_until(lambda: _responds(f"{url}/health") or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        # No scheduler runs in `digest web`: its /health would vouch for nothing, so there is none.
        assert httpx.get(f"{url}/health").status_code == 404
        yield process
    finally:
        if process.poll() is None:
            stop_process(process)


def _responds(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def site(tmp_path, fake_llm, smtp, write_config) -> Iterator[Site]:
    """A digest recorded and mailed with rating links, and `digest web` serving them; one paper's title is markup."""
    feed = CL_FEED.read_bytes().replace(
        b"<title>Generating in the Limit with Infinitely Many Hallucinations</title>",
        b"<title>Generating &lt;script&gt;alert(1)&lt;/script&gt; in the &lt;b&gt;Limit&lt;/b&gt;</title>",
    )
    feed = first_items(feed, SMALL_DAY)  # a small day (the markup's paper first): what matters is the web side
    (llm_url, _), (smtp_port, inbox) = fake_llm, smtp
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve_asgi(FeedServer(feeds={"/rss/cs.CL": feed})) as feed_url:
        config = base_config(tmp_path, feed_url, llm_url, email=smtp_email(smtp_port))
        config["web"] = {"listen": f"127.0.0.1:{port}", "base_url": url}
        path = write_config(config)

        def digest(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli(*args, "--config", str(path))

        run = digest("run")
        assert run.returncode == 0, run.stdout + run.stderr
    assert len(inbox.messages) == 1
    with digest_web(path, url):
        yield Site(url=url, config=path, message=inbox.messages[0][2], digest=digest)


def test_a_get_changes_nothing_a_post_records_and_undo_takes_it_back(site) -> None:
    more, fewer = site.links("More like this"), site.links("Not for me")
    titles = html_titles(site.message)
    assert len(more) == len(fewer) == len(titles) > 0
    text = site.message.get_body(preferencelist=("plain",))
    assert text is not None and more[0] in text.get_content()  # the text part carries the same links

    for _ in range(3):  # a mail scanner, a link preview, the reader: GETs change nothing
        page = httpx.get(more[0])
        assert page.status_code == 200 and 'method="post"' in page.text
    assert site.ratings() == []

    done = httpx.post(more[0])
    assert done.status_code == 200 and "Noted: more like this." in done.text
    assert [(r["rating"], r["source"]) for r in site.ratings()] == [(1, "web")]
    undo = re.search(
        r'<form method="post" action="([^"]+)">\s*<button type="submit" class="quiet" id="undo">', done.text
    )
    assert undo is not None
    taken_back = httpx.post(site.url + undo[1])
    assert taken_back.status_code == 200 and "Your rating is taken back." in taken_back.text
    assert site.ratings() == []

    assert httpx.post(fewer[1]).status_code == 200
    assert [r["rating"] for r in site.ratings()] == [-1]
    flipped = httpx.post(more[1])  # the other link of the same paper flips the rating
    assert flipped.status_code == 200
    assert [r["rating"] for r in site.ratings()] == [1]
    undo_flip = re.search(r'action="([^"]+)">\s*<button type="submit" class="quiet" id="undo">', flipped.text)
    assert undo_flip is not None
    httpx.post(site.url + undo_flip[1])
    assert [r["rating"] for r in site.ratings()] == [-1]  # undo restores what was there before


def test_forged_truncated_and_cross_site_requests_are_refused_and_record_nothing(site) -> None:
    link = site.links("More like this")[0]
    token = link.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    other_profile = json.dumps({"p": "them", "a": "2606.28354", "v": 1, "r": 1}, separators=(",", ":")).encode()
    forged_payload = base64.urlsafe_b64encode(other_profile).decode().rstrip("=")
    forged = [
        f"{payload}.{signature[:-2]}{'AA' if not signature.endswith('AA') else 'BB'}",  # altered signature
        token[: len(token) // 2],  # truncated
        f"{forged_payload}.{signature}",  # another profile's rating, under this signature
        payload,  # no signature at all
    ]
    # A 32-byte HMAC-SHA256 is 43 base64 characters: the last one carries 4 bits and 2 spare ones, so 3 other
    # characters decode to the same signature. Each is refused: exactly one spelling per token.
    alphabet = string.ascii_letters + string.digits + "-_"
    assert len(signature) == 43, "HMAC-SHA256, not itsdangerous' default SHA-1 (27 characters)"
    forged += [f"{payload}.{signature[:-1]}{last}" for last in alphabet if last != signature[-1]]
    forged += [f"{payload}=.{signature}", f"{payload}.{signature}="]  # padding: decodes alike, spelled otherwise
    for bad in forged:
        assert httpx.get(f"{site.url}/r/{bad}").status_code == 404, bad
        refused = httpx.post(f"{site.url}/r/{bad}")
        assert refused.status_code == 404 and token not in refused.text
    assert httpx.post(link, headers={"Origin": "https://evil.example"}).status_code == 403
    assert httpx.post(link, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert httpx.post(link, headers={"Origin": "null"}).status_code == 403
    assert site.ratings() == []

    archive = site.links("Past digests, and a feed for your feed reader")[0]
    assert httpx.get(archive).status_code == 200
    wrong_key = re.sub(r"/a/me/[0-9a-f]+/", "/a/me/" + "0" * 32 + "/", archive)
    other = re.sub(r"/a/me/", "/a/them/", archive)
    nowhere = httpx.get(f"{site.url}/no/such/page")
    for url in (wrong_key, other, wrong_key + "feed.atom", archive + "2026-06-31"):
        refused = httpx.get(url)
        assert refused.status_code == 404
        assert refused.text == nowhere.text  # a 404 that reveals nothing


def test_pages_are_escaped_and_carry_the_security_headers(site) -> None:
    titles = html_titles(site.message, listed=True)  # in full or by title, each with its rating links
    assert HOSTILE_TITLE in titles  # in the digest, as text
    hostile = site.links("[Mm]ore like this")[titles.index(HOSTILE_TITLE)]
    page = httpx.get(hostile)
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert "test-key" not in page.text and "api_key" not in page.text

    archive = site.links("Past digests, and a feed for your feed reader")[0]
    day = httpx.get(archive + "2026-06-30")
    assert "<script>" not in day.text and "&lt;script&gt;" in day.text
    assert re.search(r'<link rel="alternate" type="application/atom\+xml" [^>]*href="[^"]+feed.atom"', day.text)


def test_the_archive_shows_the_emails_content_and_rates_in_place(site) -> None:
    archive = site.links("Past digests, and a feed for your feed reader")[0]
    listing = httpx.get(archive)
    assert "2026-06-30" in listing.text and 'type="application/atom+xml"' in listing.text
    day = httpx.get(archive + "2026-06-30")
    assert day.status_code == 200
    shown = re.findall(r'<p class="title"><a href="https://arxiv.org/abs/[^"]+">(.*?)</a>', day.text)
    assert len(shown) == len(html_titles(site.message, listed=True))
    forms = re.findall(r'<form class="inline" method="post" action="([^"]+)">', day.text)
    assert len(forms) == 2 * len(shown)
    answer = httpx.post(site.url + forms[1], data={"back": "2026-06-30"})
    assert answer.status_code == 303 and answer.headers["location"].startswith(urlsplit(archive).path + "2026-06-30#p-")
    assert [r["rating"] for r in site.ratings()] == [-1]
    again = httpx.get(archive + "2026-06-30")
    assert "You said: not for me." in again.text
    assert httpx.post(site.url + forms[1], data={"back": "not-a-date"}).status_code == 400


def test_the_atom_feed_is_valid_and_reads_like_arxiv(site) -> None:
    archive = site.links("Past digests, and a feed for your feed reader")[0]
    answer = httpx.get(archive + "feed.atom")
    assert answer.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(answer.content)
    assert parsed.version == "atom10" and not parsed.bozo
    titles = html_titles(site.message, listed=True)
    assert [e.title for e in parsed.entries] == titles  # markup in a title stays text
    first = parsed.entries[0]
    assert first.link.startswith("https://arxiv.org/abs/") and first.authors and "/10]" in first.summary

    # RFC 4287's requirements, element by element.
    root = ET.fromstring(answer.content)
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated", "author"):
        assert root.find(f"{ATOM}{name}") is not None, name
    assert root.find(f"{ATOM}link[@rel='self']") is not None
    ids = []
    for entry in root.findall(f"{ATOM}entry"):
        for name in ("id", "title", "updated"):
            assert entry.find(f"{ATOM}{name}") is not None, name
        assert entry.find(f"{ATOM}link[@rel='alternate']") is not None
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", entry.findtext(f"{ATOM}updated", "")
        )
        ids.append(entry.findtext(f"{ATOM}id"))
    assert len(set(ids)) == len(ids) == len(titles)


@pytest.mark.parametrize("output", ["html", "markdown"])
def test_every_part_of_the_digest_carries_signed_rating_links(output: str) -> None:
    links = Links("https://digest.example.org", "a secret of some length")
    digest = fixed_digest()
    rendered = Renderer(OutputConfig(format=output), links).render(digest)  # type: ignore[arg-type]
    for part in (rendered.text, rendered.html if output == "html" else rendered.markdown):
        assert part is not None
        tokens = re.findall(r"https://digest\.example\.org/r/([A-Za-z0-9_.-]+)", part)
        assert len(tokens) == 2 * digest.relevant_count
        said = [links.read(t) for t in tokens]
        assert all(s is not None and s.p == digest.profile for s in said)
        assert [s.r for s in said if s is not None][:2] == [1, -1]
        assert links.archive(digest.profile) in part
    assert Links("https://digest.example.org", "another secret, as long").read(tokens[0]) is None


def test_a_taken_port_is_one_clear_error(tmp_path, write_config) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = base_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/v1")
        config["web"] = {"listen": f"127.0.0.1:{port}"}
        done = run_cli("web", "--config", str(write_config(config)), timeout=30)
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_runs_the_scheduler_and_the_web_side_in_one_process_and_both_stop_on_sigterm(
    tmp_path, feed_server, small_day, fake_llm, write_config
) -> None:
    (feed_url, _), (llm_url, _) = feed_server, fake_llm
    port = free_port()
    config = base_config(tmp_path, feed_url, llm_url, schedule={"cron": "0 7 * * *", "timezone": "UTC"})
    config["web"] = {"listen": f"127.0.0.1:{port}", "base_url": f"http://127.0.0.1:{port}"}
    process = start_cli("serve", "--config", str(write_config(config)))
    try:
        wait_until(lambda: (tmp_path / "outbox" / "me").exists(), timeout=60)  # the scheduler's missed run
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/health"), timeout=30)
        eml = next((tmp_path / "outbox" / "me").glob("*.eml")).read_text()
        assert f"http://127.0.0.1:{port}/r/" in eml.replace("=\n", "")
    finally:
        output = stop_process(process)
    assert not _answers(f"http://127.0.0.1:{port}/health"), output
    assert "Traceback" not in output


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (.ci/run installs it)"
)
@pytest.mark.long
def test_in_a_real_browser_rate_from_the_email_undo_and_rate_from_the_archive(site) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "CI must have chromium: .ci/run installs Debian's package"
    ARTIFACTS.mkdir(exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*flags, "--disable-component-update"])
        try:
            for width, height in ((375, 740), (1200, 900)):
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(site.links("More like this")[0])
                page.screenshot(path=ARTIFACTS / f"rate-{width}.png", full_page=True)
                page.click("#rate")
                page.wait_for_selector("#done")
                assert page.text_content("#done") == "Noted: more like this."
                page.screenshot(path=ARTIFACTS / f"rated-{width}.png", full_page=True)
                assert [r["rating"] for r in site.ratings()] == [1]
                page.click("#undo")
                page.wait_for_selector("text=Your rating is taken back.")
                assert site.ratings() == []

                page.goto(site.links("Past digests, and a feed for your feed reader")[0])
                page.click("text=Tue 30 Jun 2026")
                page.wait_for_selector(".rate")
                page.locator("button", has_text="Not for me").nth(2).click()
                page.wait_for_selector("text=You said: not for me.")
                assert [(r["rating"], r["source"]) for r in site.ratings()] == [(-1, "web")]
                assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
                box = page.locator(".rate button").first.bounding_box()
                assert box is not None and box["height"] >= 44, box  # a thumb's target
                page.screenshot(path=ARTIFACTS / f"archive-{width}.png")
                page.locator("button", has_text="Not for me (undo)").click()
                page.wait_for_selector("text=You said", state="detached")
                assert site.ratings() == []
                page.close()
        finally:
            browser.close()


def test_a_link_from_a_digest_signed_by_an_earlier_version_still_rates() -> None:
    """Digests already in readers' mailboxes carry HMAC-SHA1 tokens (itsdangerous' default before): still read."""
    links = Links("https://digest.example.org", "s" * 32)
    said = RateToken(p="me", a="2606.28354", v=1, r=1)
    earlier = URLSafeSerializer("s" * 32, salt=RATE_SALT).dumps(said.model_dump())
    assert links.read(earlier) == said and links.read(links.sign(said)) == said
    assert links.sign(said) != earlier and len(links.sign(said).rsplit(".", 1)[1]) == 43


def test_the_atom_feed_is_well_formed_xml_whatever_the_llm_wrote(
    tmp_path, feed_server, small_day, fake_llm, write_config
):
    """A reason with U+FFFF or U+FFFE made the whole feed unreadable, for every reader of it."""
    (feed_url, _), (llm_url, llm) = feed_server, fake_llm
    llm.reason_suffix = " \uffff\ufffe\x01\x1b[2J end"
    port = free_port()
    config = base_config(tmp_path, feed_url, llm_url)
    config["web"] = {"listen": f"127.0.0.1:{port}", "base_url": f"http://127.0.0.1:{port}"}
    path = write_config(config)
    assert run_cli("run", "--config", str(path)).returncode == 0
    page = next((tmp_path / "outbox" / "me").glob("*.html")).read_text()
    archive = re.search(r'href="(http://127.0.0.1:[0-9]+/a/me/[0-9a-f]+/)"', page)
    assert archive is not None
    with digest_web(path, f"http://127.0.0.1:{port}"):
        answer = httpx.get(archive[1] + "feed.atom")
    assert answer.status_code == 200
    root = ET.fromstring(answer.content)  # raises on any character XML forbids
    summaries = [e.findtext(f"{ATOM}summary") or "" for e in root.findall(f"{ATOM}entry")]
    assert summaries and all("[2J end" in text for text in summaries if "language models" in text)
