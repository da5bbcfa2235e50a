"""Hostile servers and hostile input cost one paper, never the day: each attack as `digest` meets it, against the
loopback feed, LLM and SMTP servers."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from digest.config import OutputConfig, Profile
from digest.links import Links
from digest.models import Usage, Verdict
from digest.pipeline.select import build_digest
from digest.render import Renderer
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, SMALL_DAY, base_config, first_items, run_cli, smtp_email
from tests.servers import FeedServer, serve_asgi

PAPERS = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers
TITLES = [p.title for p in PAPERS]


@pytest.fixture
def configure(tmp_path, feed_server, small_day, fake_llm, write_config) -> Callable[..., Path]:
    (feed_url, _), (llm_url, _) = feed_server, fake_llm

    def make(**overrides: Any) -> Path:
        config = base_config(tmp_path, feed_url, llm_url)
        config["llm"].update(overrides.pop("llm", {}))
        config.update(overrides)
        return write_config(config)

    return make


def test_hostile_answers_from_the_llm_cost_their_paper_never_the_run(configure, fake_llm, tmp_path) -> None:
    _, llm = fake_llm
    hostile = {"html": 0, "list": 1, "huge": 2, "types": 3, "negative": 4, "bloated": 5, "endless": 6}
    llm.hostile_for = {TITLES[i]: behaviour for behaviour, i in hostile.items()}
    config = configure(llm={"max_attempts": 2})
    run = run_cli("run", "--config", str(config))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    assert f"{SMALL_DAY - 4} classified" in run.stdout and "4 failed" in run.stdout  # html, list, huge, endless
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        failed = dict(db.execute("SELECT paper_key, reason FROM failures").fetchall())
        verdicts = [json.loads(r[0]) for r in db.execute("SELECT data FROM verdicts").fetchall()]
        summary = json.loads(db.execute("SELECT summary FROM runs").fetchone()[0])
    reasons = " | ".join(failed.values())
    assert "not JSON" in reasons and "JSON list" in reasons and "larger than 1,000,000 bytes" in reasons
    assert summary["cost"] >= 0 and summary["usage"]["prompt_tokens"] >= 0  # negative counts were not counted
    bloated = next(v for v in verdicts if v["paper_key"] == PAPERS[5].key)
    assert len(bloated["reason"]) <= 400 and len(bloated["matched_interests"]) <= 8
    assert all(len(i) <= 120 for i in bloated["matched_interests"])
    assert (tmp_path / "state.sqlite3").stat().st_size < 5_000_000


def test_an_earlier_pending_digest_goes_out_whatever_happens_to_today(configure, fake_llm, smtp) -> None:
    _, llm = fake_llm
    port, inbox = smtp
    down = {"from": "d@example.org", "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"}}
    first = run_cli("run", "--config", str(configure(email=down)))
    assert first.returncode == 1 and "still pending 1" in first.stdout
    llm.hostile_for = {t: "html" for t in TITLES}
    second = run_cli("run", "--config", str(configure(email=smtp_email(port))))
    assert "delivered    1" in second.stdout, second.stdout + second.stderr
    assert len(inbox.messages) == 1


def test_a_trickling_llm_is_bounded_by_the_timeout(configure, fake_llm, tmp_path) -> None:
    _, llm = fake_llm
    llm.hostile_for = {TITLES[0]: "trickle"}
    started = time.monotonic()
    run = run_cli("run", "--config", str(configure(llm={"timeout_seconds": 2, "max_attempts": 2})))
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 failed" in run.stdout and "timed out" in run.stdout
    assert took < 60, f"{took:.0f} s"


@pytest.mark.parametrize("hostile", ["endless", "trickle"])
def test_an_endless_or_trickling_feed_is_a_clear_error_in_bounded_time(
    tmp_path, fake_llm, write_config, hostile
) -> None:
    (llm_url, _) = fake_llm
    with serve_asgi(FeedServer(feeds={}, hostile=hostile)) as feed_url:
        config = base_config(tmp_path, feed_url, llm_url)
        config["arxiv"].update(max_feed_mb=1, timeout_seconds=2, max_retry_seconds=3)
        started = time.monotonic()
        run = run_cli("run", "--config", str(write_config(config)))
        took = time.monotonic() - started
    assert run.returncode == 1
    expected = "larger than 1,000,000 bytes" if hostile == "endless" else "timed out"
    assert expected in run.stdout, run.stdout
    assert took < 45, f"{took:.0f} s"


@pytest.mark.long
def test_a_black_holed_name_server_is_named_not_just_a_timeout(tmp_path, feed_server, fake_llm, write_config) -> None:
    """A resolver that never answers made the fetch say "timed out", and the SMTP server "did not finish
    greeting": nothing said DNS. The name server here is black-holed for .blackhole.test (tests/blackhole)."""
    (feed_url, _), (llm_url, _) = feed_server, fake_llm
    black_holed = {"PYTHONPATH": str(Path(__file__).parent / "blackhole")}
    config = base_config(tmp_path, "http://feeds.blackhole.test", llm_url)
    config["arxiv"].update(timeout_seconds=2, max_retry_seconds=1)
    config["email"] = {"from": "digest@example.org", "smtp": {"host": "mail.blackhole.test", "port": 2525}}
    config["email"]["smtp"].update(security="none", timeout_seconds=2)
    path = write_config(config)
    run = run_cli("run", "--config", str(path), env=black_holed)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    assert "timed out, because the name server did not answer for feeds.blackhole.test (DNS)" in run.stdout
    assert "check this machine's (or container's) DNS settings" in run.stdout
    config["arxiv"]["feed_url"] = f"{feed_url}/rss"  # the feed reached: `check` times only the mail server
    check = run_cli("check", "--config", str(write_config(config)), env=black_holed)
    assert "the name server did not answer for mail.blackhole.test (DNS)" in check.stdout + check.stderr


def _hostile_digest() -> Any:
    evil = (
        "<script>alert(1)</script> ![t](https://evil.example/t.png) [x](javascript:alert(1)) "
        "\\[y](https://evil.example) see https://evil.example and www.evil.example\n# heading\n- item"
    )
    paper = PAPERS[0].model_copy(update={"title": evil, "authors": [evil], "id": PAPERS[0].id})
    verdict = Verdict(paper_key=paper.key, score=9, reason=evil, matched_interests=[evil], tldr=evil)
    profile = Profile(name="me", interests="x", tldr=True)
    return build_digest(profile, dt.date(2026, 6, 30), ["cs.CL"], [paper], {paper.key: verdict}, 0, Usage(), None)


def test_the_markdown_digest_is_as_inert_as_the_html_one() -> None:
    links = Links("https://digest.example.org", "a secret of some length")
    rendered = Renderer(OutputConfig(format="markdown"), links).render(_hostile_digest())
    assert rendered.markdown is not None
    viewer = MarkdownIt("commonmark", {"linkify": True}).enable(["linkify", "table", "strikethrough"])
    viewer.linkify.set({"fuzzy_link": False})  # as GitHub's: bare URLs and www. links, not every dotted word
    html = viewer.render(rendered.markdown)
    assert "<script" not in html and "<img" not in html and html.count("<h1") == 1  # the digest's own heading
    for href in re.findall(r'href="([^"]+)"', html):
        assert href.startswith(("https://arxiv.org/", "https://digest.example.org/")), href


def test_one_malformed_item_costs_that_item_never_the_day(tmp_path, fake_llm, write_config) -> None:
    (llm_url, _) = fake_llm
    head, *items = CL_FEED.read_bytes().split(b"<item>")
    guid = re.compile(rb'<guid isPermaLink="false">[^<]*</guid>')
    broken = [
        guid.sub(b"", items[0]),  # no guid
        items[1].replace(b"v1</guid>", b"</guid>"),  # no version
        items[2].replace(b">new</arxiv:announce_type>", b">weird</arxiv:announce_type>"),
        items[3].replace(b"v1</guid>", b")v1</guid>"),  # an id that would close a Markdown link
        re.sub(rb"<category>[^<]*</category>", b"", items[4]),  # no category: kept under the feed's
    ]
    feed = b"<item>".join([head, *broken, *items[5:]])
    with serve_asgi(FeedServer(feeds={"/rss/cs.CL": feed})) as feed_url:
        run = run_cli("run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url))))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 items of the feed could not be read" in run.stdout
    assert "(no guid)" in run.stdout and "(no version)" in run.stdout and "(no arXiv id)" in run.stdout
    assert "unknown announce type 'weird'" in run.stdout
    assert "133 classified" in run.stdout
    html = next((tmp_path / "outbox" / "me").glob("*.html")).read_text()
    assert "4 items of the day" in html
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        kept = {json.loads(r[0])["id"]: json.loads(r[0]) for r in db.execute("SELECT data FROM papers")}
    assert kept[PAPERS[4].id]["categories"] == ["cs.CL"]
    assert PAPERS[3].id not in kept


def test_a_paper_the_llm_always_refuses_is_shown_unjudged_after_three_runs_and_retired(
    tmp_path, fake_llm, write_config
) -> None:
    (llm_url, llm) = fake_llm
    llm.hostile_for = {TITLES[0]: "refuse"}
    day = first_items(CL_FEED.read_bytes(), SMALL_DAY)
    feeds = FeedServer(feeds={"/rss/cs.CL": day})
    with serve_asgi(feeds) as feed_url:
        config = write_config(base_config(tmp_path, feed_url, llm_url))
        for n, date in enumerate(["Tue, 30 Jun 2026", "Wed, 01 Jul 2026", "Thu, 02 Jul 2026", "Fri, 03 Jul 2026"]):
            # Each day new papers (other ids, the refused one's title another): a day's feed of papers all seen
            # before is an earlier day's, and not taken as a new day.
            later = day.replace(b"2606.", f"260{6 + n}.".encode()).replace(TITLES[0].encode(), b"Another paper")
            feeds.feeds["/rss/cs.CL"] = (later if n else day).replace(b"Tue, 30 Jun 2026", date.encode())
            run = run_cli("run", "--config", str(config))
            assert run.returncode == 0, run.stdout + run.stderr
            if n < 2:
                assert "1 failed" in run.stdout
    asked = sum(1 for m in llm.prompts if json.loads(m[-1]["content"])["title"] == TITLES[0])
    assert asked == 3  # once a run, three runs, then retired
    retired = (tmp_path / "outbox" / "me" / "2026-07-02.html").read_text()
    assert "Could not be classified" in retired and PAPERS[0].abs_url in retired


def test_secrets_echoed_by_a_server_are_redacted_everywhere(configure, fake_llm, tmp_path) -> None:
    _, llm = fake_llm
    key = "sk-test-0123456789abcdef"
    llm.api_key = key
    llm.hostile_for = {TITLES[0]: "echo"}
    config = configure(llm={"max_attempts": 1})
    run = run_cli("-v", "run", "--config", str(config), env={"OPENAI_API_KEY": key})
    output = run.stdout + run.stderr
    assert "upstream said" in output and "Bearer [redacted]" in output
    assert key not in output and key not in run_cli("status", "--config", str(config)).stdout
    assert key.encode() not in (tmp_path / "state.sqlite3").read_bytes()

    in_url = configure(llm={"base_url": "http://digest:url-secret-42@127.0.0.1:9/v1"})
    check = run_cli("check", "--config", str(in_url))
    assert "127.0.0.1:9" in check.stdout and "url-secret-42" not in check.stdout + check.stderr


def test_a_damaged_a_too_new_or_an_unwritable_state_is_named_with_its_fix(configure, tmp_path) -> None:
    state = tmp_path / "state.sqlite3"
    state.write_bytes(b"this is not a database, just bytes " * 100)
    damaged = run_cli("status", "--config", str(configure()))
    assert damaged.returncode == 1 and "is damaged" in damaged.stderr and "mv " in damaged.stderr
    assert "internal error" not in damaged.stderr
    state.unlink()
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA user_version = 99")
    newer = run_cli("status", "--config", str(configure()))
    assert newer.returncode == 1 and "written by a newer release of digest (schema 99" in newer.stderr
    unwritable = run_cli("status", "--config", str(configure(state="/proc/digest/state.sqlite3")))
    assert unwritable.returncode == 1 and "/proc/digest" in unwritable.stderr
    assert "internal error" not in unwritable.stderr


@pytest.mark.long
def test_two_processes_on_a_new_state_migrate_it_once(configure, tmp_path) -> None:
    config = configure()
    for _ in range(10):
        (tmp_path / "state.sqlite3").unlink(missing_ok=True)
        both = [
            subprocess.Popen(
                [sys.executable, "-m", "digest", "status", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OPENAI_API_KEY": "k"},
            )
            for _ in range(2)
        ]
        for process in both:
            _, errors = process.communicate(timeout=60)
            assert process.returncode == 0, errors


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]")
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = run_cli("check", "--config", str(path), timeout=60)
    assert done.returncode == 2 and "expands to more than 20,000 values" in done.stderr
    assert time.monotonic() - started < 30


def test_preview_after_a_304_is_named_for_the_feeds_date(configure, tmp_path) -> None:
    config = configure()
    assert run_cli("run", "--config", str(config)).returncode == 0
    preview = run_cli("preview", "--config", str(config))
    assert preview.returncode == 0, preview.stderr
    assert "2026-06-30" in preview.stdout


def test_an_answer_is_cut_to_its_bounds_and_loses_its_control_characters() -> None:
    from digest.models import JudgementWithTLDR

    answer = {
        "score": 7,
        "reason": "\x1b[31mred\x1b[0m " + "r" * 1000,
        "matched_interests": [f"\x07interest {i} " + "i" * 500 for i in range(30)],
        "tldr": "t" * 1000,
    }
    judgement = JudgementWithTLDR.model_validate_json(json.dumps(answer))
    assert judgement.reason.startswith("[31mred[0m ") and len(judgement.reason) == 400
    assert len(judgement.matched_interests) == 8 and all(len(i) == 120 for i in judgement.matched_interests)
    assert "\x07" not in "".join(judgement.matched_interests) and len(judgement.tldr) == 300
    schema = JudgementWithTLDR.model_json_schema()
    assert schema["properties"]["matched_interests"]["maxItems"] == 8


def test_a_bug_in_todays_work_does_not_keep_an_earlier_digest_from_going_out(
    tmp_path, fake_llm, smtp, write_config
) -> None:
    (llm_url, _), (port, inbox) = fake_llm, smtp
    day = first_items(CL_FEED.read_bytes(), SMALL_DAY)
    feeds = FeedServer(feeds={"/rss/cs.CL": day})
    with serve_asgi(feeds) as feed_url:
        down = {"from": "d@example.org", "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"}}
        first = run_cli("run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url, email=down))))
        assert first.returncode == 1 and "still pending 1" in first.stdout
        # The next day brings new papers, and a template of the reader's own that breaks when rendered.
        feeds.feeds["/rss/cs.CL"] = day.replace(b"Tue, 30 Jun 2026", b"Wed, 01 Jul 2026").replace(b"2606.", b"2607.")
        templates = tmp_path / "templates"
        templates.mkdir()
        (templates / "digest.txt.j2").write_text("{{ digest.no_such_thing.at_all }}")
        config = base_config(tmp_path, feed_url, llm_url, email=smtp_email(port), output={"templates": "templates"})
        second = run_cli("run", "--config", str(write_config(config)))
    assert second.returncode == 1 and "internal error" in second.stderr
    assert [m[2]["Subject"] for m in inbox.messages] == ["arXiv digest - 30 Jun 2026 - 7 papers for you"]
