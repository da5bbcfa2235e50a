"""Digests and their deliveries: one per recipient, marked the moment a server accepts it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from digest.models import Delivery, Digest
from digest.state.tables import Tables, timestamp


class RecordedDigest(NamedTuple):
    """A digest as it was rendered, and when it was recorded."""

    content: Digest
    recorded_at: dt.datetime


@dataclass(frozen=True)
class DeliveryState:
    """A delivery that is not done, for `digest status`."""

    announced: dt.date
    profile: str
    recipient: str
    status: str
    attempts: int
    last_error: str | None


class Digests(Tables):
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
                    timestamp(),
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

    def digest_content(self, profile: str, announced: dt.date) -> RecordedDigest | None:
        """A recorded digest as it was rendered, and when it was recorded."""
        row = self._db.execute(
            "SELECT content, created_at FROM digests WHERE profile = ? AND announced = ? AND content IS NOT NULL",
            (profile, announced.isoformat()),
        ).fetchone()
        if row is None:
            return None
        return RecordedDigest(Digest.model_validate_json(row[0]), dt.datetime.fromisoformat(row[1]))

    def digests_holding(self, profile: str, paper_keys: Iterable[str]) -> dict[str, dt.date]:
        """The date of the profile's digest that accounts for each of these papers (shown in it, or read for it and
        left out), for those in one."""
        keys = list(paper_keys)
        found: dict[str, dt.date] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"""SELECT p.paper_key, d.announced FROM digest_papers p JOIN digests d ON d.id = p.digest_id
                    WHERE p.profile = ? AND p.paper_key IN ({",".join("?" * len(chunk))})""",
                (profile, *chunk),
            ).fetchall()
            found.update({key: dt.date.fromisoformat(day) for key, day in rows})
        return found

    def pending_deliveries(self) -> list[Delivery]:
        """Oldest digest first."""
        rows = self._db.execute(
            """SELECT d.id, d.profile, d.announced, v.recipient, v.message_id, d.message, d.subject, d.content
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
                subject=r[6],
                content=None if r[7] is None else Digest.model_validate_json(r[7]),
            )
            for r in rows
        ]

    def mark_delivered(self, digest_id: int, recipient: str) -> None:
        with self._transaction() as db:
            db.execute(
                """UPDATE deliveries SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL
                   WHERE digest_id = ? AND recipient = ?""",
                (timestamp(), digest_id, recipient),
            )

    def mark_attempt(
        self, digest_id: int, recipient: str, error: str, *, status: Literal["pending", "failed", "uncertain"]
    ) -> None:
        """An attempt that did not deliver: to be retried (pending), refused for good (failed), or that may have
        (uncertain); neither of the last two is tried again."""
        with self._transaction() as db:
            db.execute(
                """UPDATE deliveries SET attempts = attempts + 1, last_error = ?, status = ?
                   WHERE digest_id = ? AND recipient = ?""",
                (error, status, digest_id, recipient),
            )

    def destination_waits(self) -> dict[str, dt.datetime]:
        """The destinations whose services asked to be sent nothing before a time still to come (Retry-After)."""
        rows = self._db.execute(
            "SELECT name, not_before FROM destinations WHERE not_before > ?", (timestamp(),)
        ).fetchall()
        return {r[0]: dt.datetime.fromisoformat(r[1]) for r in rows}

    def count_run(self, destination: str, *, took: bool, not_before: dt.datetime | None) -> int:
        """A run's outcome for a destination: it took a digest, or it took none (one more run in a row), and the time
        its service asked to be sent nothing before. Returns the runs in a row it has taken nothing."""
        until = None if not_before is None else not_before.astimezone(dt.UTC).isoformat(timespec="seconds")
        with self._transaction() as db:
            db.execute(
                """INSERT INTO destinations (name, failed_runs, not_before) VALUES (?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET not_before = excluded.not_before,
                   failed_runs = CASE WHEN ? THEN 0 ELSE failed_runs + 1 END""",
                (destination, 0 if took else 1, until, took),
            )
            row = db.execute("SELECT failed_runs FROM destinations WHERE name = ?", (destination,)).fetchone()
        return int(row[0])

    def fail_pending(self, destination: str, error: str) -> int:
        """Every delivery still pending to `destination` refused for good, with `error`. Returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE deliveries SET status = 'failed', last_error = ? WHERE recipient = ? AND status = 'pending'",
                (error, destination),
            )
        return int(cursor.rowcount)

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
        """Pending, failed and uncertain deliveries, newest digest first."""
        rows = self._db.execute(
            """SELECT d.announced, d.profile, v.recipient, v.status, v.attempts, v.last_error
               FROM digests d JOIN deliveries v ON v.digest_id = d.id
               WHERE v.status IN ('pending', 'failed', 'uncertain')
               ORDER BY d.announced DESC, d.id DESC, v.recipient LIMIT ?""",
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
            # A rated paper's vector goes too: a rating keeps the paper, and its vector is made again when needed.
            db.execute("DELETE FROM vectors WHERE key IN (SELECT key FROM old_papers)")
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
