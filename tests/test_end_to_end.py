"""`digest run` as a user runs it, against a real feed server, LLM server and SMTP server on loopback."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from digest.sources.arxiv_parse import parse_api_page, parse_feed
from tests.helpers import API_PAGE, CL_FEED, EMPTY_FEED, base_config, run_cli
from tests.servers import html_titles


def _expected_relevant(llm_judged: dict[str, tuple[bool, int]], min_score: int = 6) -> set[str]:
    return {title for title, (relevant, score) in llm_judged.items() if relevant and score >= min_score}


def test_run_emails_exactly_the_papers_the_llm_judged_relevant(loopback_run):
    llm, inbox = loopback_run.llm, loopback_run.inbox
    result = loopback_run.digest("run")
    assert result.returncode == 0, result.stderr + result.stdout

    papers = parse_feed(CL_FEED.read_bytes(), url="", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    assert llm.requests == len(papers) == 137  # 117 new + 20 cross; replacements left out
    assert set(llm.judged) == {p.title for p in papers}
    assert len(inbox.messages) == 1
    sender, recipients, message = inbox.messages[0]
    assert (sender, recipients) == ("digest@example.org", ["me@example.org"])
    relevant = _expected_relevant(llm.judged)
    assert 0 < len(relevant) < len(papers)
    assert sorted(html_titles(message, listed=True)) == sorted(relevant)
    assert message["Subject"] == f"arXiv digest - 30 Jun 2026 - {len(relevant)} papers for you"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert all(title in " ".join(text.split()) for title in relevant)
    # The one-screen summary.
    assert "137 papers (117 new, 20 cross)" in result.stdout
    assert f"{len(relevant)} relevant" in result.stdout
    assert "delivered    1" in result.stdout


def test_second_run_on_the_same_day_sends_nothing_and_asks_nothing(loopback_run, small_day):
    feed, llm, inbox, path = loopback_run.feed, loopback_run.llm, loopback_run.inbox, loopback_run.path
    assert run_cli("run", "--config", str(path)).returncode == 0
    requests_after_first = llm.requests

    second = run_cli("run", "--config", str(path))
    assert second.returncode == 0, second.stderr
    assert llm.requests == requests_after_first
    assert len(inbox.messages) == 1
    assert feed.requests[-1].get("if-none-match")  # a conditional request: arXiv answers 304
    assert "unchanged since the last run (HTTP 304)" in second.stdout


def test_without_smtp_the_digest_goes_to_the_outbox(tmp_path, feed_server, small_day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    path = write_config(base_config(tmp_path, feed_url, llm_url))
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 0, result.stderr
    html = tmp_path / "outbox" / "me" / "2026-06-30.html"
    eml = tmp_path / "outbox" / "me" / "2026-06-30.eml"
    assert html.exists() and eml.exists()
    assert "<table" in html.read_text()


def test_unreachable_smtp_keeps_the_digest_pending_until_the_next_run(loopback_run, small_day):
    llm, inbox = loopback_run.llm, loopback_run.inbox
    smtp_config = loopback_run.config["email"]["smtp"]
    loopback_run.config["email"]["smtp"] = {**smtp_config, "port": 1}  # down
    first = run_cli("run", "--config", str(loopback_run.write()))
    assert first.returncode == 1
    assert "cannot connect to SMTP server 127.0.0.1:1" in first.stdout
    assert "Traceback" not in first.stderr + first.stdout
    assert inbox.messages == []

    loopback_run.config["email"]["smtp"] = smtp_config  # up
    requests = llm.requests
    second = run_cli("run", "--config", str(loopback_run.write()))
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(inbox.messages) == 1
    assert llm.requests == requests

    third = run_cli("run", "--config", str(loopback_run.write()))
    assert third.returncode == 0
    assert len(inbox.messages) == 1


def test_dry_run_counts_and_prices_without_calling_the_llm(tmp_path, feed_server, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    result = run_cli("run", "--dry-run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url))))
    assert result.returncode == 0, result.stderr
    assert llm.requests == 0
    assert "137 papers (117 new, 20 cross)" in result.stdout
    assert "12 replace" in result.stdout or "10 replace" in result.stdout
    assert "137 requests" in result.stdout
    assert "$" in result.stdout
    assert not (tmp_path / "state.sqlite3").exists()


def test_check_reports_each_server(tmp_path, loopback_run, write_config):
    llm, inbox = loopback_run.llm, loopback_run.inbox
    result = loopback_run.digest("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok  ") == 3
    assert llm.requests == 0 and inbox.messages == []

    bad = base_config(tmp_path, loopback_run.feed_url, "http://127.0.0.1:1/v1")
    result = run_cli("check", "--config", str(write_config(bad)))
    assert result.returncode == 1
    assert "FAIL LLM server: cannot reach http://127.0.0.1:1/v1" in result.stdout
    assert "Traceback" not in result.stderr


def test_preview_writes_a_file_and_sends_nothing(loopback_run, small_day):
    llm, inbox, path = loopback_run.llm, loopback_run.inbox, loopback_run.path
    result = run_cli("preview", "--config", str(path))
    assert result.returncode == 0, result.stderr
    preview = Path(result.stdout.splitlines()[0])
    assert preview.exists() and "<table" in preview.read_text()
    assert inbox.messages == []
    # What the preview spent is on record, as a preview: not hidden, and not taken for a run.
    status = run_cli("status", "--config", str(path))
    (row,) = [line for line in status.stdout.splitlines() if line.endswith("preview: ok")]
    assert llm.requests > 0 and re.search(r" [1-9][0-9,]* +\$0\.0[0-9]{3} ", row), status.stdout
    # The run after a preview pays for nothing twice.
    requests = llm.requests
    assert run_cli("run", "--config", str(path)).returncode == 0
    assert llm.requests == requests
    assert len(inbox.messages) == 1
    rows = run_cli("status", "--config", str(path)).stdout.splitlines()
    assert rows[2].endswith("  ok") and rows[3].endswith("preview: ok"), rows


def test_state_is_versioned(tmp_path, feed_server, small_day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    assert run_cli("run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url)))).returncode == 0
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_papers_that_cannot_be_classified_are_reported_and_retried_next_run(
    tmp_path, feed_server, small_day, fake_llm, write_config
):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    papers = parse_feed(CL_FEED.read_bytes(), url="", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    llm.invalid_for = {papers[0].title, papers[1].title, papers[2].title}
    config = base_config(tmp_path, feed_url, llm_url)
    config["llm"]["max_attempts"] = 2
    path = write_config(config)
    first = run_cli("run", "--config", str(path))
    assert first.returncode == 0, first.stderr
    assert "3 failed" in first.stdout
    assert "3 papers could not be classified; they are retried on the next run" in first.stdout
    digest = (tmp_path / "outbox" / "me" / "2026-06-30.html").read_text()
    assert "3 could not be classified yet and will be retried" in digest

    llm.invalid_for = set()
    requests = llm.requests
    second = run_cli("run", "--config", str(path))
    assert second.returncode == 0, second.stderr
    assert llm.requests == requests + 3  # only the three that failed
    assert "3 classified, 0 cached, 0 by your rules or ratings, 0 failed" in second.stdout


def test_a_refused_api_key_stops_the_run_clearly_and_loses_nothing(
    tmp_path, feed_server, small_day, fake_llm, write_config
):
    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    path = write_config(base_config(tmp_path, feed_url, llm_url))
    first = run_cli("run", "--config", str(path), env={"OPENAI_API_KEY": "wrong-key"})
    assert first.returncode == 1
    assert "refused the API key (HTTP 401)" in first.stdout
    assert "Traceback" not in first.stdout + first.stderr
    assert "wrong-key" not in first.stdout + first.stderr
    assert not (tmp_path / "outbox").exists()

    second = run_cli("run", "--config", str(path))  # the right key; arXiv answers 304, the papers are still here
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{small_day} classified" in second.stdout
    assert (tmp_path / "outbox" / "me" / "2026-06-30.html").exists()


def test_an_empty_weekend_feed_sends_nothing(tmp_path, feed_server, fake_llm, write_config):
    feed_url, feed = feed_server
    llm_url, llm = fake_llm
    feed.feeds["/rss/cs.CL"] = EMPTY_FEED.read_bytes()
    result = run_cli("run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url))))
    assert result.returncode == 0, result.stderr
    assert "fetched      0 papers" in result.stdout
    assert "nothing new: no digest" in result.stdout
    assert llm.requests == 0
    assert not (tmp_path / "outbox").exists()


def test_quiet_prints_nothing_on_success_and_verbose_logs_each_stage(
    tmp_path, feed_server, small_day, fake_llm, write_config
):
    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    path = write_config(base_config(tmp_path, feed_url, llm_url))
    quiet = run_cli("run", "-q", "--config", str(path))
    assert quiet.returncode == 0
    assert quiet.stdout == "" and quiet.stderr == ""
    verbose = run_cli("run", "--verbose", "--config", str(path))
    assert verbose.returncode == 0
    assert "fetch: 0 papers" in verbose.stderr and "DEBUG" in verbose.stderr
    assert "test-key" not in verbose.stderr + verbose.stdout  # the API key is never logged


def test_catch_up_with_since_reads_every_missed_paper_once(tmp_path, feed_server, fake_llm, export_api, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    api_url, _ = export_api
    config = base_config(tmp_path, feed_url, llm_url)
    config["arxiv"]["api_url"] = api_url
    path = write_config(config)
    first = run_cli("run", "--since", "2026-06-25", "--config", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    rss = parse_feed(CL_FEED.read_bytes(), url="", categories=["cs.CL"], announce_types=["new", "cross"]).papers
    backfill = parse_api_page(API_PAGE.read_bytes(), url="", categories=["cs.CL"])[0]
    union = {p.key for p in rss} | {p.key for p in backfill}
    assert llm.requests == len(union)
    assert "caught up    50 papers" in first.stdout

    again = run_cli("run", "--since", "2026-06-25", "--config", str(path))
    assert again.returncode == 0
    assert llm.requests == len(union)
    assert len(list((tmp_path / "outbox" / "me").glob("*.eml"))) == 1


def test_since_must_be_a_past_date():
    result = run_cli("run", "--since", "yesterday")
    assert result.returncode == 2
    assert "'yesterday' is not a date like 2026-06-30" in result.stderr


def test_a_stale_feed_is_reported_as_stale_and_sends_nothing_twice(
    tmp_path, feed_server, small_day, fake_llm, write_config
):
    feed_url, feed = feed_server
    llm_url, llm = fake_llm
    path = write_config(base_config(tmp_path, feed_url, llm_url))
    assert run_cli("run", "--config", str(path)).returncode == 0
    requests = llm.requests
    # The next day arXiv still serves yesterday's items, rebuilt (so the ETag differs).
    feed.feeds["/rss/cs.CL"] = feed.feeds["/rss/cs.CL"].replace(b"04:00:00 +0000", b"05:00:00 +0000")
    stale = run_cli("run", "--config", str(path))
    assert stale.returncode == 0
    assert "warning: the feed is stale: it is dated 2026-06-30, and 2026-06-30 was already processed" in stale.stdout
    assert llm.requests == requests
    assert len(list((tmp_path / "outbox" / "me").glob("*.eml"))) == 1


def test_send_empty_sends_a_digest_on_a_quiet_day(tmp_path, feed_server, fake_llm, write_config):
    feed_url, feed = feed_server
    llm_url, _ = fake_llm
    feed.feeds["/rss/cs.CL"] = EMPTY_FEED.read_bytes()
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0]["send_empty"] = True
    result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "outbox" / "me" / "2026-06-27.html").read_text()
    assert "Nothing matched your interests today." in html


def test_arxiv_down_is_a_clear_error_and_records_no_papers(tmp_path, feed_server, fake_llm, write_config):
    feed_url, feed = feed_server
    llm_url, llm = fake_llm
    feed.failures = [(503, b"<html>Service Unavailable</html>")] * 100
    result = run_cli("run", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url))))
    assert result.returncode == 1
    assert "arXiv feed" in result.stdout and "HTTP 503" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert llm.requests == 0
    assert "~$0.0000" in result.stdout and "cost unknown" not in result.stdout  # nothing asked, nothing spent
    assert "No paper was fetched; the next run tries again" in result.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM papers").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM feeds").fetchone()[0] == 0


def test_editing_one_profiles_interests_invalidates_only_its_cache(
    tmp_path, feed_server, small_day, fake_llm, write_config
):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"].append({"name": "you", "interests": "Speech recognition."})
    path = write_config(config)
    assert run_cli("run", "--config", str(path)).returncode == 0
    assert llm.requests == 2 * small_day  # one request per paper per profile; all the day's papers are new or cross

    assert run_cli("run", "--config", str(path)).returncode == 0
    assert llm.requests == 2 * small_day  # a re-run makes no request

    config["profiles"][0]["interests"] = "Machine translation."
    path = write_config(config)
    preview = run_cli("preview", "--config", str(path))
    assert preview.returncode == 0, preview.stderr
    assert llm.requests == 3 * small_day  # "me" is read again against its new interests; "you" comes from the cache
    assert run_cli("preview", "--config", str(path)).returncode == 0
    assert llm.requests == 3 * small_day
