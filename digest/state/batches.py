"""Batch API submissions: recorded before the batch is created, open until their results are."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from digest.state.tables import Tables, timestamp


@dataclass(frozen=True)
class BatchRecord:
    """A Batch API submission not yet closed, and what it asks: custom_id -> (profile, paper key, prompt hash)."""

    submission: str
    batch_id: str | None
    input_file_id: str
    status: str
    created_at: dt.datetime
    requests: dict[str, tuple[str, str, str]]
    model: str


class Batches(Tables):
    def open_batches(self) -> list[BatchRecord]:
        """Every open submission, whatever model it asked: one asked of a model since replaced is still paid for
        until it is cancelled."""
        rows = self._db.execute(
            """SELECT submission, batch_id, input_file_id, status, created_at, model FROM batches
               WHERE closed_at IS NULL ORDER BY created_at"""
        ).fetchall()
        batches = []
        for submission, batch_id, file_id, status, created_at, model in rows:
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
                    model,
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
                (submission, input_file_id, model, timestamp()),
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
                (status, batch_id, closed, timestamp(), submission),
            )

    def batches_in_flight(self) -> list[tuple[str, str, dt.datetime]]:
        """For `digest status`: each open batch's id (or submission), status and start."""
        rows = self._db.execute(
            "SELECT coalesce(batch_id, submission), status, created_at FROM batches WHERE closed_at IS NULL"
        ).fetchall()
        return [(r[0], r[1], dt.datetime.fromisoformat(r[2])) for r in rows]
