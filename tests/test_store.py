"""The state file: what is kept, and what is forgotten after retention_days."""

from __future__ import annotations

import datetime as dt
import sqlite3

from digest.models import Feed, Verdict
from digest.sources.arxiv_parse import parse_feed
from digest.state.store import Store
from tests.helpers import CL_FEED

PAPERS = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers[:3]


def test_prune_forgets_only_what_is_done(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    done, waiting, undelivered = PAPERS
    store.record_feed(Feed(url="u", announced=done.announced, papers=PAPERS), ["me"])
    for paper in PAPERS:
        verdict = Verdict(paper_key=paper.key, score=8, reason="r", matched_interests=[])
        store.save_verdict(verdict, "me", "prompt", "model", 1)
    sent = store.record_digest(
        "me", dt.date(2026, 6, 29), "s", b"message", [done.key], {"me@example.org": "<1@example.org>"}
    )
    store.mark_delivered(sent, "me@example.org")
    store.record_digest(
        "me", dt.date(2026, 6, 30), "s", b"message", [undelivered.key], {"me@example.org": "<1@example.org>"}
    )

    store.rate("me", done, 1, "cli")
    store.rate("me", waiting, -1, "import")

    forgotten = store.prune(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))  # everything counts as old

    assert forgotten == 2  # the two papers that are in a digest; the undigested one stays
    assert [p.key for p in store.undigested_papers("me")] == [waiting.key]
    assert set(store.cached_verdicts([p.key for p in PAPERS], "prompt", "model", 1)) == {waiting.key}
    assert [d.announced for d in store.pending_deliveries()] == [dt.date(2026, 6, 30)]  # still to be sent, kept
    assert store.latest_digest_date("me") == dt.date(2026, 6, 30)
    assert not store.has_digest("me", dt.date(2026, 6, 29))  # delivered and old: forgotten
    # The reader's ratings are never forgotten, not even of a paper that was.
    assert [(r.paper.key, r.rating, r.source) for r in store.ratings("me")] == [
        (waiting.key, -1, "import"),
        (done.key, 1, "cli"),
    ]

    assert store.prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=1)) == 0  # nothing is that old
    store.close()


def test_state_migrates_from_the_first_schema(tmp_path):
    path = tmp_path / "old.sqlite3"
    from digest.state.migrations import MIGRATIONS

    with sqlite3.connect(path) as db:
        db.executescript(f"{MIGRATIONS[0]()}; PRAGMA user_version = 1;")
        db.execute("INSERT INTO runs (started_at, summary) VALUES ('2026-06-30T06:30:00+00:00', '{}')")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.last_good_run() is None  # runs from before the migration count as not known to be good
    store.close()


def test_a_new_state_is_not_read_through_the_log_a_deleted_one_left(tmp_path) -> None:
    import sqlite3 as sql

    state = tmp_path / "state.sqlite3"
    with Store(state) as store:
        store.put_setting("kept", "1")
        # An open reader keeps the write-ahead log and its index on disk, as a crash or a running process does.
        reader = sql.connect(state)
        reader.execute("SELECT 1").fetchall()
        state.unlink()  # the reader starts over by deleting the state, and only the state
    reader.close()
    with Store(state) as store:
        assert store.get_setting("kept") is None
        assert store.schema_version > 0


def test_a_disk_io_error_with_almost_no_space_left_is_named_a_full_disk(tmp_path, monkeypatch) -> None:
    """20 kB of free disk said "disk I/O error": SQLite's word when the journal cannot grow."""
    import shutil

    from digest.state.store import describe_state_error

    state, error = tmp_path / "state.sqlite3", sqlite3.OperationalError("disk I/O error")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage._replace(free=20_000))
    said = describe_state_error(error, state)
    assert str(said).startswith(f"the disk holding the state file {state} is full") and "free some space" in said.hint
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage._replace(free=10 * 2**30))
    assert "could not be used: disk I/O error" in str(describe_state_error(error, state))  # not the disk, then
