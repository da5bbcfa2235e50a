"""Chat and push destinations through Apprise's own URLs (json://, ntfy://, mmost://) aimed at a loopback server that
answers as those services do: each digest reaches each destination once, a passing failure is retried, a refusal
for good is reported once, what arXiv and the LLM wrote stays inert, and a long digest is cut to the service's
limit with a link to the rest."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.config import Profile
from digest.links import Links
from digest.models import Usage, Verdict
from digest.pipeline.select import build_digest
from digest.sources.arxiv import parse_feed
from tests.helpers import CL_FEED, base_config, first_items, run_cli
from tests.servers import ChatServer, keyword_judge, serve_asgi

TOKEN = "xoxTOKENabcdefghijklmnopqrstu"  # Mattermost's incoming-webhook key: a secret, never to be shown
NTFY_PASSWORD = "ntfyPASSWORDsecret"


@pytest.fixture
def chat() -> Iterator[tuple[str, ChatServer]]:
    app = ChatServer()
    with serve_asgi(app) as url:
        yield url.removeprefix("http://"), app


def notify_config(
    tmp_path: Path, feed_server: Any, fake_llm: Any, host: str, *, papers: int = 12, **profile: Any
) -> dict[str, Any]:
    (feed_url, feed), (llm_url, _) = feed_server, fake_llm
    feed.feeds["/rss/cs.CL"] = first_items(feed.feeds["/rss/cs.CL"], papers)  # a small day: what matters is delivery
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(
        {
            "email": [],
            "notify": ["${JSON_HOOK}", "${NTFY_URL}", "${MATTERMOST_URL}"],
            **profile,
        }
    )
    return config


def urls(host: str) -> dict[str, str]:
    return {
        "JSON_HOOK": f"json://{host}/digest-hook",
        "NTFY_URL": f"ntfy://reader:{NTFY_PASSWORD}@{host}/papers",
        "MATTERMOST_URL": f"mmost://{host}/{TOKEN}",
    }


MATTERMOST = f"/hooks/{TOKEN}"


def test_each_destination_gets_each_digest_once_and_a_500_is_retried_next_run(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    server.script = {"/digest-hook": [500]}
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host))
    env = urls(host)

    first = run_cli("run", "--config", str(path), env=env)
    assert first.returncode == 1, first.stdout + first.stderr  # one destination is still pending
    assert "Traceback" not in first.stderr
    assert len(server.of("/")) == 1 and len(server.of(MATTERMOST)) == 1 and not server.of("/digest-hook")
    assert "pending (retried next run)" in first.stdout and "Internal server error., error=500" in first.stdout
    second = run_cli("run", "--config", str(path), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert [len(server.of(p)) for p in ("/digest-hook", "/", MATTERMOST)] == [1, 1, 1]  # the others not again

    ntfy = server.of("/")[0]
    assert ntfy["topic"] == "papers" and ntfy["title"].startswith("arXiv digest - 30 Jun 2026 - ")
    sent = next(r for r in server.received if r["path"] == "/")
    assert sent["headers"]["x-markdown"] == "yes"  # asked as Markdown, so that its escapes are read as such
    text = ntfy["message"]
    assert re.search(r"\*\*8/10\*\* .+\n.+\nhttps://arxiv\.org/abs/2606\.\d{5}", text)
    assert "language model" in text.lower()
    mattermost = server.of(MATTERMOST)[0]["text"]
    assert mattermost.startswith("# arXiv digest - 30 Jun 2026")
    for output in (first.stdout + first.stderr, second.stdout + second.stderr):
        assert TOKEN not in output and NTFY_PASSWORD not in output
    status = run_cli("status", "--config", str(path))  # no variable set: status needs no notify URL
    assert status.returncode == 0, status.stderr
    assert "every digest has reached every recipient" in status.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        rows = db.execute("SELECT recipient, status, attempts FROM deliveries ORDER BY recipient").fetchall()
        dump = "\n".join(db.iterdump())
    assert [(r[1], r[2]) for r in rows] == [("sent", 2), ("sent", 1), ("sent", 1)]
    assert {r[0].split(" ")[0] for r in rows} == {f"json://{host}", f"mmost://{host}", f"ntfy://{host}"}
    assert TOKEN not in dump and NTFY_PASSWORD not in dump


def test_a_destination_refusing_for_good_fails_once_and_never_blocks_the_others(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    server.script = {"/": [401], MATTERMOST: [400]}
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host))
    env = urls(host)

    first = run_cli("run", "--config", str(path), env=env)
    assert first.returncode == 1
    assert first.stdout.count("could not be delivered to") == 2, first.stdout
    assert "for good" in first.stdout and "check this notify URL" in first.stdout
    assert len(server.of("/digest-hook")) == 1
    second = run_cli("run", "--config", str(path), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(server.refused) == 2 and not server.of("/") and not server.of(MATTERMOST)  # never asked again
    status = run_cli("status", "--config", str(path))
    assert status.stdout.count(" failed  1 tries ") == 2 and "unauthorized, error=40101" in status.stdout
    assert TOKEN not in first.stdout + second.stdout + status.stdout
    assert NTFY_PASSWORD not in first.stdout + second.stdout + status.stdout


HOSTILE = (
    "@channel @here <!channel> [click me](https://evil.example/x) ![pixel](https://evil.example/p.png) "
    "<b>bold</b> **loud** https://evil.example/bare"
)


def test_what_arxiv_and_the_llm_wrote_stays_inert_in_chat(tmp_path, feed_server, fake_llm, chat, write_config):
    host, server = chat
    (_, feed), (_, llm) = feed_server, fake_llm
    original = CL_FEED.read_text()
    first_title = re.search(r"<title>(Generating in the Limit[^<]*)</title>", original)
    assert first_title is not None
    hostile = original.replace(first_title[1], HOSTILE.replace("&", "&amp;").replace("<", "&lt;"), 1)
    feed.feeds["/rss/cs.CL"] = hostile.encode()  # its first 12 items, by notify_config
    llm.judge = lambda title, abstract: (True, 9) if "evil" in title else (False, 1)
    llm.reason_suffix = " Ask @everyone: [here](https://evil.example/r)"
    path = write_config(notify_config(tmp_path, feed_server, fake_llm, host, notify=["${MATTERMOST_URL}"]))
    run = run_cli("run", "--config", str(path), env=urls(host))
    assert run.returncode == 0, run.stdout + run.stderr
    text = server.of(MATTERMOST)[0]["text"]
    assert "evil.example" in text
    # No mention, link, image or markup survives: every @ is followed by a word joiner, every bracket escaped.
    assert not re.search(r"@(?!\u2060)\w", text)
    assert not re.search(r"(?<!\\)\[(?!more like|not for me)", text) and "](https://evil" not in text
    assert not re.search(r"(?<!\\)<", text) and "https://evil" not in text  # bare links broken: https\://
    assert "\\*\\*loud\\*\\*" in text


def test_a_digest_longer_than_the_service_takes_is_cut_with_a_link_to_the_rest(
    tmp_path, feed_server, fake_llm, chat, write_config
):
    host, server = chat
    _, llm = fake_llm
    llm.judge = keyword_judge("the")  # every paper: 30 of them are far more than Mattermost's 4,000 characters
    config = notify_config(tmp_path, feed_server, fake_llm, host, papers=30, notify=["${MATTERMOST_URL}"])
    config["web"] = {"base_url": "https://digest.example.org", "secret": "s" * 32}
    run = run_cli("run", "--config", str(path := write_config(config)), env=urls(host))
    assert run.returncode == 0, run.stdout + run.stderr
    text = server.of(MATTERMOST)[0]["text"]
    assert len(text) <= 4000
    relevant = int(re.search(r"(\d+) papers for you of", text)[1])  # type: ignore[index]
    shown = len(re.findall(r"^https://arxiv\.org/abs/", text, re.M))
    more = re.search(r"and (\d+) more: (https://digest\.example\.org/a/me/[0-9a-f]{32}/)$", text)
    assert more is not None and shown + int(more[1]) == relevant and shown >= 5, text
    assert text.count("[more like this](https://digest.example.org/r/") == shown
    check = run_cli("check", "--config", str(path), env=urls(host))
    assert f"mmost://{host} (" in check.stdout and TOKEN not in check.stdout


def test_a_url_apprise_cannot_read_is_a_config_error_that_does_not_show_it(
    tmp_path, feed_server, fake_llm, write_config
):
    config = notify_config(tmp_path, feed_server, fake_llm, "127.0.0.1:9", notify=["${BAD}", "not a url"])
    path = write_config(config)
    run = run_cli("check", "--config", str(path), env={"BAD": f"slakk://{TOKEN}/x"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "profiles[0].notify[0]: Apprise cannot use this slakk:// URL" in run.stderr
    assert "profiles[0].notify[1]: is not an Apprise URL" in run.stderr
    assert TOKEN not in run.stderr
    unset = run_cli("run", "--config", str(path))
    assert "environment variable BAD is not set" in unset.stderr


@pytest.mark.parametrize(
    ("url", "limit"),
    [
        ("discord://123456789/abcdefghijklmnopqrstuvwxyz0123456789", 2000),
        ("tgram://123456789:ABCdefGHIjklMNOpqrSTUvwxYZ/12345", 4096),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", 35000),
    ],
)
def test_each_service_gets_at_most_what_it_takes_in_its_own_format(url, limit):
    from apprise.conversion import convert_between

    from digest.channels.notify import _formats, _plugin, message_for

    papers = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    verdicts = {
        p.key: Verdict(paper_key=p.key, score=8, reason="Why: " + p.abstract, matched_interests=[]) for p in papers
    }
    profile = Profile(name="me", interests="x")
    digest = build_digest(profile, dt.date(2026, 6, 30), ["cs.CL"], papers, verdicts, 0, Usage(), 0.0)
    plugin = _plugin(url)
    assert plugin is not None
    title = "arXiv digest - 30 Jun 2026 - 137 papers for you"
    body = message_for(plugin, title, digest, Links("https://digest.example.org", "s" * 32))
    native = _formats(plugin)[0]
    sent = body if native == "markdown" else convert_between("markdown", native, body)
    assert len(sent) + (len(title) + 2 if plugin.title_maxlen <= 0 else 0) <= limit
    more = re.search(r"and (\d+) more: https://digest\.example\.org/a/me/", body)
    shown = body.count("\nhttps://arxiv.org/abs/")
    assert more is not None and shown + int(more[1]) == 137 and shown >= 1
    assert len(sent) > limit * 0.5 or limit > 30000  # cut to the limit, not far below it
