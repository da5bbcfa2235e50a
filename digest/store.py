"""SQLite state: papers seen, cached verdicts, digests and their deliveries.

The schema is versioned with numbered migrations (PRAGMA user_version), applied in order on open, so a state file
written by any earlier release keeps working.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from digest.errors import DigestError, StateError
from digest.models import Delivery, Digest, Failure, Feed, Paper, Rating, RatingSource, RunSummary, Verdict

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE papers (
        key TEXT PRIMARY KEY,          -- arXiv id with version: 2606.28354v1
        announced TEXT NOT NULL,
        data TEXT NOT NULL,            -- the Paper as JSON
        fetched_at TEXT NOT NULL
    );
    CREATE INDEX papers_fetched_at ON papers (fetched_at);
    CREATE TABLE profiles (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL       -- papers fetched before a profile existed are not classified for it
    );
    CREATE TABLE verdicts (
        paper_key TEXT NOT NULL,
        interests_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_version INTEGER NOT NULL,
        data TEXT NOT NULL,            -- the Verdict as JSON
        created_at TEXT NOT NULL,
        PRIMARY KEY (paper_key, interests_hash, model, prompt_version)
    );
    CREATE TABLE failures (
        paper_key TEXT NOT NULL,
        profile TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (paper_key, profile)
    );
    CREATE TABLE digests (
        id INTEGER PRIMARY KEY,
        profile TEXT NOT NULL,
        announced TEXT NOT NULL,
        subject TEXT NOT NULL,
        message BLOB NOT NULL,         -- the exact RFC 5322 message, so a retry sends the same bytes
        created_at TEXT NOT NULL,
        UNIQUE (profile, announced)
    );
    CREATE TABLE digest_papers (
        profile TEXT NOT NULL,
        paper_key TEXT NOT NULL,
        digest_id INTEGER NOT NULL REFERENCES digests (id),
        PRIMARY KEY (profile, paper_key)  -- each paper is in at most one digest per profile
    );
    CREATE TABLE deliveries (
        digest_id INTEGER NOT NULL REFERENCES digests (id),
        recipient TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_at TEXT,
        PRIMARY KEY (digest_id, recipient)
    );
    CREATE TABLE feeds (
        url TEXT PRIMARY KEY,
        etag TEXT,
        last_modified TEXT,
        last_announced TEXT,
        fetched_at TEXT NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        summary TEXT NOT NULL
    );
    """,
    # 2: whether a run ended well, so `serve` can tell a missed schedule from a run that already happened.
    """
    ALTER TABLE runs ADD COLUMN finished_at TEXT;
    ALTER TABLE runs ADD COLUMN ok INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: the reader's ratings (never pruned: they are the reader's own work), and `digest eval`'s verdicts, cached
    # apart from the digest's so that evaluating never changes what a digest shows.
    """
    CREATE TABLE ratings (
        profile TEXT NOT NULL,
        arxiv_id TEXT NOT NULL,        -- without version: a rating is about the paper, not one version of it
        rating INTEGER NOT NULL CHECK (rating IN (1, -1)),
        paper TEXT NOT NULL,           -- the Paper as rated, as JSON: examples and eval read it
        source TEXT NOT NULL CHECK (source IN ('cli', 'import', 'web')),
        rated_at TEXT NOT NULL,
        PRIMARY KEY (profile, arxiv_id)
    );
    CREATE INDEX ratings_rated_at ON ratings (profile, rated_at);
    CREATE TABLE eval_verdicts (
        paper_key TEXT NOT NULL,
        interests_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_version INTEGER NOT NULL,
        data TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (paper_key, interests_hash, model, prompt_version)
    );
    """,
    # 4: the web side: each digest's content (the Digest as JSON) for the archive and the feed, and settings such
    # as the secret that signs links, generated once so that links survive restarts.
    """
    ALTER TABLE digests ADD COLUMN content TEXT;
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 5: one message per recipient, with a Message-ID of its own kept across retries; deliveries refused for good
    # ('failed', never retried) and those to an address no longer configured ('dropped').
    """
    CREATE TABLE deliveries_5 (
        digest_id INTEGER NOT NULL REFERENCES digests (id),
        recipient TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'dropped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_at TEXT,
        message_id TEXT,               -- NULL for deliveries recorded before: the digest message's own is used
        PRIMARY KEY (digest_id, recipient)
    );
    INSERT INTO deliveries_5 (digest_id, recipient, status, attempts, last_error, sent_at)
        SELECT digest_id, recipient, status, attempts, last_error, sent_at FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_5 RENAME TO deliveries;
    """,
    # 6: Batch API submissions. A submission is recorded with its requests before the batch is created (its key goes
    # with it as metadata, so a batch created just before a crash is found again), and is open until its results
    # are recorded: a run resumes an open batch and never pays for the same requests twice.
    """
    CREATE TABLE batches (
        submission TEXT PRIMARY KEY,   -- ours, also in the batch's metadata
        batch_id TEXT UNIQUE,          -- the provider's; NULL until the batch is created
        input_file_id TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,          -- 'submitting', then the provider's last word (validating ... completed)
        created_at TEXT NOT NULL,
        closed_at TEXT                 -- its results are recorded, or it was given up: never polled again
    );
    CREATE TABLE batch_requests (
        submission TEXT NOT NULL REFERENCES batches (submission),
        custom_id TEXT NOT NULL,
        profile TEXT NOT NULL,
        paper_key TEXT NOT NULL,
        interests_hash TEXT NOT NULL,  -- the prompt it was asked with, as the verdict cache keys it
        PRIMARY KEY (submission, custom_id)
    );
    """,
    # 7: what `digest preview` spent is recorded beside the runs, for `digest status`; it is not a run: the
    # scheduler's "last good run" is a run's.
    """
    ALTER TABLE runs ADD COLUMN command TEXT NOT NULL DEFAULT 'run';
    """,
]
# Where verdicts are cached: the digest's own, or `digest eval`'s.
VerdictCache = Literal["verdicts", "eval_verdicts"]


def describe_state_error(error: sqlite3.Error, path: Path) -> StateError:
    """What went wrong with the state file, in words, and what to do: the disk, the file, or its permissions."""
    text = str(error).lower()
    if "readonly" in text or "unable to open" in text or "permission" in text:
        return StateError(
            f"cannot write the state file {path}: {error}",
            hint="make the file and its folder writable by this user, or point state: in config.yaml elsewhere",
        )
    if "full" in text:
        return StateError(
            f"the disk holding the state file {path} is full: {error}",
            hint="free some space; nothing recorded so far is lost, and the next run goes on from there",
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StateError(
            f"the state file {path} is damaged: {error}",
            hint=f"restore it from a backup, or move it away to start over (mv {path} {path}.damaged): the next run "
            "then treats today's papers as new, and ratings kept in it are lost unless you restore it",
        )
    return StateError(f"the state file {path} could not be used: {error}", hint="check the file and its folder")


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.strip().encode()).hexdigest()[:16]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _now_precise() -> str:
    """To the microsecond: ratings given in one second keep their order, newest first."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class BatchRecord:
    """A Batch API submission not yet closed, and what it asks: custom_id -> (profile, paper key, prompt hash)."""

    submission: str
    batch_id: str | None
    input_file_id: str
    status: str
    created_at: dt.datetime
    requests: dict[str, tuple[str, str, str]]


@dataclass(frozen=True)
class DeliveryState:
    """A delivery that is not done, for `digest status`."""

    announced: dt.date
    profile: str
    recipient: str
    status: str
    attempts: int
    last_error: str | None


class Store:
    """All reads and writes of the state file. Each method is one transaction."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock: IO[str] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Opened under one lock across processes: two that create a new state at once would race to switch it
            # to WAL ("database is locked"), and one migrates while the other then finds nothing left to do.
            with open(f"{path}.migrate.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    # A deleted state's write-ahead log and its index would be read as the new file's: disk I/O error.
                    for leftover in (f"{path}-wal", f"{path}-shm"):
                        Path(leftover).unlink(missing_ok=True)
                self._db = sqlite3.connect(path, isolation_level=None)
                self._db.execute("PRAGMA busy_timeout = 10000")  # first: the pragmas below may wait for a writer
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA foreign_keys = ON")
                self._migrate()
        except sqlite3.Error as error:
            raise describe_state_error(error, path) from None
        except OSError as error:
            raise StateError(
                f"cannot create the folder of the state file {path}: {error.strerror or error}",
                hint="make the folder writable, or point state: in config.yaml somewhere that is",
            ) from None

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def setting(self, name: str, default: Callable[[], str]) -> str:
        """A setting kept in the state; the first read stores `default()`, and every later read returns that."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", (name, default()))
            return str(db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0])

    def get_setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def put_setting(self, name: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value))

    def lock_for_run(self) -> None:
        """One run at a time per state file, across processes (cron and `serve` side by side, say)."""
        self._lock = open(f"{self._path}.lock", "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DigestError(
                f"another digest run is using {self._path}",
                hint="wait for it to finish; runs of one state file never overlap",
            ) from None

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        known = len(MIGRATIONS)
        if self.schema_version > known:
            raise StateError(
                f"the state file {self._path} was written by a newer release of digest (schema "
                f"{self.schema_version}; this release knows {known})",
                hint="upgrade digest, or point state: in config.yaml at another file",
            )
        for version, script in enumerate(MIGRATIONS[self.schema_version :], start=self.schema_version + 1):
            # One script per migration, schema change and version bump committed together.
            self._db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {version}; COMMIT;")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Feeds and papers

    def feed_state(self, url: str) -> tuple[str | None, str | None, dt.date | None]:
        row = self._db.execute("SELECT etag, last_modified, last_announced FROM feeds WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None, None, None
        return row[0], row[1], dt.date.fromisoformat(row[2]) if row[2] else None

    def record_feed(self, feed: Feed, profiles: Iterable[str]) -> int:
        """Store the feed's papers and its validators together, so a crash cannot skip papers. Returns new papers."""
        now = _now()
        with self._transaction() as db:
            for name in profiles:
                db.execute("INSERT OR IGNORE INTO profiles (name, created_at) VALUES (?, ?)", (name, now))
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO papers (key, announced, data, fetched_at) VALUES (?, ?, ?, ?)",
                [(p.key, p.announced.isoformat(), p.model_dump_json(), now) for p in feed.papers],
            )
            added = db.total_changes - before
            db.execute(
                """INSERT INTO feeds (url, etag, last_modified, last_announced, fetched_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified,
                   last_announced = coalesce(excluded.last_announced, last_announced),
                   fetched_at = excluded.fetched_at""",
                (
                    feed.url,
                    feed.etag,
                    feed.last_modified,
                    feed.announced.isoformat() if feed.announced else None,
                    now,
                ),
            )
        return added

    def undigested_papers(self, profile: str) -> list[Paper]:
        """Papers fetched since the profile was added that are in none of its digests yet."""
        rows = self._db.execute(
            """SELECT p.data FROM papers p JOIN profiles pr ON pr.name = ?
               WHERE p.fetched_at >= pr.created_at
                 AND NOT EXISTS (SELECT 1 FROM digest_papers d WHERE d.profile = ? AND d.paper_key = p.key)
               ORDER BY p.announced, p.key""",
            (profile, profile),
        ).fetchall()
        return [Paper.model_validate_json(row[0]) for row in rows]

    def papers_of_digest(self, profile: str, announced: dt.date) -> list[Paper]:
        rows = self._db.execute(
            """SELECT p.data FROM papers p JOIN digest_papers dp ON dp.paper_key = p.key
               JOIN digests d ON d.id = dp.digest_id WHERE d.profile = ? AND d.announced = ?
               ORDER BY p.key""",
            (profile, announced.isoformat()),
        ).fetchall()
        return [Paper.model_validate_json(row[0]) for row in rows]

    def latest_digest_date(self, profile: str) -> dt.date | None:
        row = self._db.execute("SELECT max(announced) FROM digests WHERE profile = ?", (profile,)).fetchone()
        return dt.date.fromisoformat(row[0]) if row and row[0] else None

    # Verdicts

    def cached_verdicts(
        self,
        paper_keys: Iterable[str],
        prompt: str,
        model: str,
        prompt_version: int,
        cache: VerdictCache = "verdicts",
    ) -> dict[str, Verdict]:
        """Verdicts given under exactly this profile prompt (interests, examples, language, TL;DR), model and
        version."""
        keys = list(paper_keys)
        found: dict[str, Verdict] = {}
        digest = prompt_hash(prompt)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"""SELECT paper_key, data FROM {cache} WHERE interests_hash = ? AND model = ?
                    AND prompt_version = ? AND paper_key IN ({",".join("?" * len(chunk))})""",
                (digest, model, prompt_version, *chunk),
            ).fetchall()
            found.update({key: Verdict.model_validate_json(data) for key, data in rows})
        return found

    def save_verdict(
        self,
        verdict: Verdict,
        profile: str,
        prompt: str,
        model: str,
        prompt_version: int,
        cache: VerdictCache = "verdicts",
    ) -> None:
        with self._transaction() as db:
            db.execute(
                f"""INSERT OR REPLACE INTO {cache} (paper_key, interests_hash, model, prompt_version, data, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (
                    verdict.paper_key,
                    prompt_hash(prompt),
                    model,
                    prompt_version,
                    verdict.model_dump_json(),
                    _now(),
                ),
            )
            db.execute("DELETE FROM failures WHERE paper_key = ? AND profile = ?", (verdict.paper_key, profile))

    def save_failure(self, failure: Failure, profile: str) -> None:
        with self._transaction() as db:
            db.execute(
                """INSERT INTO failures (paper_key, profile, reason, attempts, updated_at) VALUES (?, ?, ?, 1, ?)
                   ON CONFLICT (paper_key, profile) DO UPDATE SET reason = excluded.reason,
                   attempts = attempts + 1, updated_at = excluded.updated_at""",
                (failure.paper_key, profile, failure.reason, _now()),
            )

    def latest_papers(self, arxiv_ids: Iterable[str]) -> dict[str, Paper]:
        """The newest version the state holds of each of these papers, by versionless id: fetched, or rated."""
        found: dict[str, Paper] = {}
        for arxiv_id in dict.fromkeys(arxiv_ids):
            rows = self._db.execute(
                """SELECT data FROM papers WHERE key >= ? AND key < ?
                   UNION ALL SELECT paper FROM ratings WHERE arxiv_id = ?""",
                (f"{arxiv_id}v", f"{arxiv_id}w", arxiv_id),
            ).fetchall()
            papers = [Paper.model_validate_json(row[0]) for row in rows]
            if exact := [p for p in papers if p.arxiv_id == arxiv_id]:
                found[arxiv_id] = max(exact, key=lambda p: p.version)
        return found

    # Ratings

    def rate(self, profile: str, paper: Paper, rating: int, source: RatingSource) -> str:
        """Record the reader's rating; returns what happened: "added", "changed" or "unchanged".

        An import never overrides a rating the reader gave by hand, and giving the same rating again keeps its date,
        so re-importing a file changes nothing."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT rating, source FROM ratings WHERE profile = ? AND arxiv_id = ?", (profile, paper.arxiv_id)
            ).fetchone()
            if row is not None and (row[0] == rating or (source == "import" and row[1] != "import")):
                return "unchanged"
            db.execute(
                """INSERT INTO ratings (profile, arxiv_id, rating, paper, source, rated_at) VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (profile, arxiv_id) DO UPDATE SET rating = excluded.rating, paper = excluded.paper,
                   source = excluded.source, rated_at = excluded.rated_at""",
                (profile, paper.arxiv_id, rating, paper.model_dump_json(), source, _now_precise()),
            )
        return "added" if row is None else "changed"

    def rating_of(self, profile: str, arxiv_id: str) -> int:
        """1, -1, or 0 for no rating."""
        row = self._db.execute(
            "SELECT rating FROM ratings WHERE profile = ? AND arxiv_id = ?", (profile, arxiv_id)
        ).fetchone()
        return int(row[0]) if row else 0

    def clear_rating(self, profile: str, arxiv_id: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM ratings WHERE profile = ? AND arxiv_id = ?", (profile, arxiv_id))
        return cursor.rowcount > 0

    def ratings(self, profile: str) -> list[Rating]:
        """The profile's ratings, newest first."""
        rows = self._db.execute(
            """SELECT paper, rating, source, rated_at FROM ratings WHERE profile = ?
               ORDER BY rated_at DESC, arxiv_id DESC""",
            (profile,),
        ).fetchall()
        return [
            Rating(
                profile=profile,
                paper=Paper.model_validate_json(r[0]),
                rating=r[1],
                source=r[2],
                rated_at=dt.datetime.fromisoformat(r[3]),
            )
            for r in rows
        ]

    def failure_attempts(self, profile: str, paper_keys: Iterable[str]) -> dict[str, int]:
        """In how many runs the LLM failed on each of these papers, for this profile."""
        keys = list(paper_keys)
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"""SELECT paper_key, attempts FROM failures WHERE profile = ?
                    AND paper_key IN ({",".join("?" * len(chunk))})""",
                (profile, *chunk),
            ).fetchall()
            found.update({key: int(attempts) for key, attempts in rows})
        return found

    # Digests and deliveries

    def has_digest(self, profile: str, announced: dt.date) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM digests WHERE profile = ? AND announced = ?", (profile, announced.isoformat())
        ).fetchone()
        return row is not None

    def record_digest(
        self,
        profile: str,
        announced: dt.date,
        subject: str,
        message: bytes,
        paper_keys: Iterable[str],
        recipients: Mapping[str, str],
        content: Digest | None = None,
    ) -> int:
        """The digest, the papers it accounts for, and one pending delivery per recipient (with its Message-ID):
        all or nothing."""
        with self._transaction() as db:
            cursor = db.execute(
                """INSERT INTO digests (profile, announced, subject, message, created_at, content)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (
                    profile,
                    announced.isoformat(),
                    subject,
                    message,
                    _now(),
                    None if content is None else content.model_dump_json(),
                ),
            )
            digest_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO digest_papers (profile, paper_key, digest_id) VALUES (?, ?, ?)",
                [(profile, key, digest_id) for key in paper_keys],
            )
            db.executemany(
                "INSERT INTO deliveries (digest_id, recipient, status, message_id) VALUES (?, ?, 'pending', ?)",
                [(digest_id, recipient, message_id) for recipient, message_id in recipients.items()],
            )
        return digest_id

    def digest_dates(self, profile: str) -> list[dt.date]:
        """The dates of the profile's digests that have content to show, newest first."""
        rows = self._db.execute(
            "SELECT announced FROM digests WHERE profile = ? AND content IS NOT NULL ORDER BY announced DESC",
            (profile,),
        ).fetchall()
        return [dt.date.fromisoformat(r[0]) for r in rows]

    def digest_content(self, profile: str, announced: dt.date) -> tuple[Digest, dt.datetime] | None:
        """A recorded digest as it was rendered, and when it was recorded."""
        row = self._db.execute(
            "SELECT content, created_at FROM digests WHERE profile = ? AND announced = ? AND content IS NOT NULL",
            (profile, announced.isoformat()),
        ).fetchone()
        return None if row is None else (Digest.model_validate_json(row[0]), dt.datetime.fromisoformat(row[1]))

    def pending_deliveries(self) -> list[Delivery]:
        """Oldest digest first."""
        rows = self._db.execute(
            """SELECT d.id, d.profile, d.announced, v.recipient, v.message_id, d.message
               FROM digests d JOIN deliveries v ON v.digest_id = d.id
               WHERE v.status = 'pending' ORDER BY d.announced, d.id, v.recipient"""
        ).fetchall()
        return [
            Delivery(
                digest_id=r[0],
                profile=r[1],
                announced=dt.date.fromisoformat(r[2]),
                recipient=r[3],
                message_id=r[4],
                message=bytes(r[5]),
            )
            for r in rows
        ]

    def mark_delivered(self, digest_id: int, recipient: str) -> None:
        with self._transaction() as db:
            db.execute(
                """UPDATE deliveries SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL
                   WHERE digest_id = ? AND recipient = ?""",
                (_now(), digest_id, recipient),
            )

    def mark_attempt(self, digest_id: int, recipient: str, error: str, *, permanent: bool) -> None:
        """An attempt that did not deliver: for good (`permanent`, never retried), or to be retried."""
        with self._transaction() as db:
            db.execute(
                """UPDATE deliveries SET attempts = attempts + 1, last_error = ?,
                   status = CASE WHEN ? THEN 'failed' ELSE status END
                   WHERE digest_id = ? AND recipient = ?""",
                (error, permanent, digest_id, recipient),
            )

    def reconcile_recipients(
        self, profile: str, recipients: list[str], message_id: Callable[[], str]
    ) -> tuple[list[tuple[dt.date, str]], list[tuple[dt.date, str]]]:
        """The profile's digests that still wait for, or failed for, an address no longer configured: their pending
        deliveries to it are dropped, and the configured recipients they lack are added (a corrected address gets
        the digest its typo did not). Returns (dropped, added) as (date, recipient)."""
        dropped: list[tuple[dt.date, str]] = []
        added: list[tuple[dt.date, str]] = []
        with self._transaction() as db:
            rows = db.execute(
                """SELECT d.id, d.announced, v.recipient, v.status FROM digests d
                   JOIN deliveries v ON v.digest_id = d.id WHERE d.profile = ?""",
                (profile,),
            ).fetchall()
            by_digest: dict[tuple[int, str], dict[str, str]] = {}
            for digest_id, announced, recipient, status in rows:
                by_digest.setdefault((digest_id, announced), {})[recipient] = status
            for (digest_id, announced), statuses in by_digest.items():
                gone = [r for r, status in statuses.items() if r not in recipients and status in ("pending", "failed")]
                if not gone:
                    continue
                day = dt.date.fromisoformat(announced)
                for recipient in gone:
                    if statuses[recipient] == "pending":
                        db.execute(
                            "UPDATE deliveries SET status = 'dropped' WHERE digest_id = ? AND recipient = ?",
                            (digest_id, recipient),
                        )
                        dropped.append((day, recipient))
                for recipient in (r for r in recipients if r not in statuses):
                    db.execute(
                        """INSERT INTO deliveries (digest_id, recipient, status, message_id)
                           VALUES (?, ?, 'pending', ?)""",
                        (digest_id, recipient, message_id()),
                    )
                    added.append((day, recipient))
        return dropped, added

    def profiles_with_pending_deliveries(self) -> set[str]:
        rows = self._db.execute(
            """SELECT DISTINCT d.profile FROM digests d JOIN deliveries v ON v.digest_id = d.id
               WHERE v.status = 'pending'"""
        ).fetchall()
        return {r[0] for r in rows}

    def undone_deliveries(self, limit: int = 20) -> list[DeliveryState]:
        """Pending and failed deliveries, newest digest first."""
        rows = self._db.execute(
            """SELECT d.announced, d.profile, v.recipient, v.status, v.attempts, v.last_error
               FROM digests d JOIN deliveries v ON v.digest_id = d.id
               WHERE v.status IN ('pending', 'failed') ORDER BY d.announced DESC, d.id DESC, v.recipient LIMIT ?""",
            (limit,),
        ).fetchall()
        return [DeliveryState(dt.date.fromisoformat(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def prune(self, older_than: dt.datetime) -> int:
        """Forget what is done and old: papers fetched before `older_than` that are in a digest for every profile
        (with their verdicts), and digests from before then whose every delivery was sent. Returns papers
        forgotten. Nothing pending is ever pruned: no paper without a digest, no delivery still to be sent."""
        cutoff = older_than.isoformat(timespec="seconds")
        with self._transaction() as db:
            db.execute(
                """CREATE TEMP TABLE old_papers AS SELECT key FROM papers p WHERE p.fetched_at < ?
                   AND NOT EXISTS (SELECT 1 FROM profiles pr WHERE NOT EXISTS (
                       SELECT 1 FROM digest_papers d WHERE d.profile = pr.name AND d.paper_key = p.key))""",
                (cutoff,),
            )
            db.execute("DELETE FROM verdicts WHERE paper_key IN (SELECT key FROM old_papers)")
            db.execute("DELETE FROM failures WHERE paper_key IN (SELECT key FROM old_papers)")
            db.execute("DELETE FROM digest_papers WHERE paper_key IN (SELECT key FROM old_papers)")
            forgotten = db.execute("DELETE FROM papers WHERE key IN (SELECT key FROM old_papers)").rowcount
            db.execute("DROP TABLE old_papers")
            db.execute(
                """DELETE FROM deliveries WHERE digest_id IN (SELECT d.id FROM digests d WHERE d.created_at < ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries v WHERE v.digest_id = d.id AND v.status = 'pending'))""",
                (cutoff,),
            )
            db.execute(
                """DELETE FROM digests WHERE created_at < ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries v WHERE v.digest_id = digests.id)
                   AND NOT EXISTS (SELECT 1 FROM digest_papers p WHERE p.digest_id = digests.id)""",
                (cutoff,),
            )
        return int(forgotten)

    # Batch API submissions

    def open_batches(self, model: str) -> list[BatchRecord]:
        rows = self._db.execute(
            """SELECT submission, batch_id, input_file_id, status, created_at FROM batches
               WHERE closed_at IS NULL AND model = ? ORDER BY created_at""",
            (model,),
        ).fetchall()
        batches = []
        for submission, batch_id, file_id, status, created_at in rows:
            requests = self._db.execute(
                "SELECT custom_id, profile, paper_key, interests_hash FROM batch_requests WHERE submission = ?",
                (submission,),
            ).fetchall()
            batches.append(
                BatchRecord(
                    submission,
                    batch_id,
                    file_id,
                    status,
                    dt.datetime.fromisoformat(created_at),
                    {r[0]: (r[1], r[2], r[3]) for r in requests},
                )
            )
        return batches

    def begin_batch(
        self, submission: str, input_file_id: str, model: str, requests: dict[str, tuple[str, str, str]]
    ) -> None:
        """Record a submission and its requests, before the batch is created."""
        with self._transaction() as db:
            db.execute(
                """INSERT INTO batches (submission, input_file_id, model, status, created_at)
                   VALUES (?, ?, ?, 'submitting', ?)""",
                (submission, input_file_id, model, _now()),
            )
            db.executemany(
                """INSERT INTO batch_requests (submission, custom_id, profile, paper_key, interests_hash)
                   VALUES (?, ?, ?, ?, ?)""",
                [(submission, custom_id, *request) for custom_id, request in requests.items()],
            )

    def update_batch(self, submission: str, status: str, batch_id: str | None = None, *, closed: bool = False) -> None:
        with self._transaction() as db:
            db.execute(
                """UPDATE batches SET status = ?, batch_id = coalesce(?, batch_id),
                   closed_at = CASE WHEN ? THEN ? ELSE closed_at END WHERE submission = ?""",
                (status, batch_id, closed, _now(), submission),
            )

    def batches_in_flight(self) -> list[tuple[str, str, dt.datetime]]:
        """For `digest status`: each open batch's id (or submission), status and start."""
        rows = self._db.execute(
            "SELECT coalesce(batch_id, submission), status, created_at FROM batches WHERE closed_at IS NULL"
        ).fetchall()
        return [(r[0], r[1], dt.datetime.fromisoformat(r[2])) for r in rows]

    # Runs

    def record_run(self, started_at: dt.datetime, summary: RunSummary) -> None:
        ok = not summary.errors and not summary.stopped
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (started_at, finished_at, ok, summary, command) VALUES (?, ?, ?, ?, ?)",
                (started_at.isoformat(), _now(), int(ok), summary.model_dump_json(), summary.command),
            )

    def last_good_run(self) -> dt.datetime | None:
        row = self._db.execute("SELECT max(started_at) FROM runs WHERE ok = 1 AND command = 'run'").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row and row[0] else None

    def recent_runs(self, count: int) -> list[tuple[dt.datetime, bool, RunSummary]]:
        rows = self._db.execute(
            "SELECT started_at, ok, summary FROM runs ORDER BY id DESC LIMIT ?", (count,)
        ).fetchall()
        return [(dt.datetime.fromisoformat(r[0]), bool(r[1]), RunSummary.model_validate_json(r[2])) for r in rows]
