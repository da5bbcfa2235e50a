"""A weekly profile over eight days of feeds and on: every day's papers fetched and judged that day, one digest a
week of the week's best, delivered once to each destination, a missed week made up, and a switch of cadence that
loses nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import sqlite3
from email import message_from_bytes, policy
from email.message import EmailMessage

from digest.config import load_config
from digest.models import Paper, RunSummary
from digest.pipeline.run import Pipeline
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import base_config, day_feeds, run_cli
from tests.servers import ChatServer, serve_asgi

MONDAY = dt.date(2026, 11, 23)
ANNOUNCED = [MONDAY + dt.timedelta(days=n) for n in (0, 1, 2, 3, 4, 7, 8, 15)]  # weekdays; the last after a gap


def score(title: str) -> int:
    return hashlib.sha256(title.encode()).digest()[0] % 11


def test_a_weekly_profile_gets_one_digest_a_week_of_the_weeks_best(tmp_path, feed_server, fake_llm, write_config):
    (feed_url, feed), (llm_url, llm) = feed_server, fake_llm
    llm.judge = lambda title, abstract: (score(title) >= 6, score(title))
    feeds = dict(zip(ANNOUNCED, day_feeds(ANNOUNCED), strict=True))
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(cadence="weekly", max_papers=5, notify=[])
    with serve_asgi(chat := ChatServer()) as chat_url:
        config["profiles"][0]["notify"] = [f"json://{chat_url.removeprefix('http://')}/weekly"]
        path = write_config(config)

        def run_pipeline() -> RunSummary:
            return asyncio.run(Pipeline(load_config(path, {"OPENAI_API_KEY": "test-key"})).run())

        def run_on(day: dt.date) -> str:
            # The feed as arXiv serves it that day: a weekend, or a day of no run, keeps the last weekday's.
            feed.feeds["/rss/cs.CL"] = feeds[max(d for d in ANNOUNCED if d <= day)]
            asked = llm.requests
            summary = asyncio.run(Pipeline(load_config(path, {"OPENAI_API_KEY": "test-key"})).run())
            assert not summary.errors, summary.errors
            judged = llm.requests - asked
            assert judged == (len(parse(feeds[day])) if day in ANNOUNCED else 0)  # each day's papers, that day
            return summary.profiles[0].digest if summary.profiles else "feed unchanged"

        said = {day: run_on(day) for day in (MONDAY + dt.timedelta(days=n) for n in range(9))}
        assert list(said.values())[:5] == ["nothing new: no digest"] * 5  # nothing announced before the first Monday
        assert chat.of("/weekly") and len(chat.of("/weekly")) == 1
        first_week = [p for day in ANNOUNCED[:5] for p in parse(feeds[day])]
        best = sorted(first_week, key=lambda p: (-score(p.title), p.title.lower()))[:5]
        assert said[dt.date(2026, 11, 30)].startswith(f"5 of {len(first_week)} papers for the week to 2026-11-29"), said
        assert said[dt.date(2026, 12, 1)].startswith("weekly, on Mondays: ")
        assert "wait for the digest of 2026-12-07" in said[dt.date(2026, 12, 1)]
        weekly = chat.of("/weekly")[0]
        assert weekly["title"] == "arXiv weekly digest - 23 Nov to 29 Nov 2026 - 5 papers for you"
        assert [line for line in weekly["message"].splitlines() if line.startswith("https://arxiv.org/abs/")] == [
            p.abs_url for p in best
        ]
        email = message_from_bytes((tmp_path / "outbox" / "me" / "2026-11-30.eml").read_bytes(), policy=policy.default)
        assert isinstance(email, EmailMessage) and email["Subject"] == weekly["title"]
        text = email.get_body(preferencelist=("plain",))
        assert text is not None and "arXiv weekly digest" in text.get_content()

        # No run on Monday 7 December: Tuesday's run makes up that week's digest, with what it held.
        run_on(dt.date(2026, 12, 8))
        assert len(chat.of("/weekly")) == 2
        assert chat.of("/weekly")[1]["title"].startswith("arXiv weekly digest - 30 Nov to 06 Dec 2026 - ")
        again = run_pipeline()
        assert "wait for the digest of 2026-12-14" in again.profiles[0].digest and len(chat.of("/weekly")) == 2

        # Daily from now on: the papers waiting for the next weekly digest come in the next daily one.
        config["profiles"][0]["cadence"] = "daily"
        write_config(config)
        daily = run_cli("run", "--config", str(path))
        assert daily.returncode == 0, daily.stdout + daily.stderr
        assert len(chat.of("/weekly")) == 3 and chat.of("/weekly")[2]["title"].startswith("arXiv digest - 08 Dec 2026")

    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        in_digests = [r[0] for r in db.execute("SELECT paper_key FROM digest_papers WHERE profile = 'me'")]
        fetched = {r[0] for r in db.execute("SELECT key FROM papers")}
        sent = db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()[0]
    assert sorted(in_digests) == sorted(fetched)  # every paper in exactly one digest
    assert sent == 6  # three digests, each to the outbox and to the chat


def parse(body: bytes) -> list[Paper]:
    return parse_feed(body, url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers
