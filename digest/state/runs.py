"""Each run's summary, and each preview's, for `digest status` and the scheduler."""

from __future__ import annotations

import datetime as dt

from digest.models import RunSummary, Usage
from digest.state.tables import Tables, timestamp


class Runs(Tables):
    def record_run(self, started_at: dt.datetime, summary: RunSummary) -> None:
        ok = not summary.errors and not summary.stopped
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (started_at, finished_at, ok, summary, command) VALUES (?, ?, ?, ?, ?)",
                (started_at.isoformat(), timestamp(), int(ok), summary.model_dump_json(), summary.command),
            )

    def last_good_run(self) -> dt.datetime | None:
        row = self._db.execute("SELECT max(started_at) FROM runs WHERE ok = 1 AND command = 'run'").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row and row[0] else None

    def recent_runs(self, count: int) -> list[tuple[dt.datetime, bool, RunSummary]]:
        rows = self._db.execute(
            "SELECT started_at, ok, summary FROM runs ORDER BY id DESC LIMIT ?", (count,)
        ).fetchall()
        return [(dt.datetime.fromisoformat(r[0]), bool(r[1]), RunSummary.model_validate_json(r[2])) for r in rows]

    def spent_since(self, after: dt.datetime | None) -> tuple[Usage, float | None]:
        """What the runs and previews started after `after` (all, without it) asked of the LLM, and cost: a weekly
        digest's week. The cost is None when a run that asked anything has none (a model without a price)."""
        rows = self._db.execute(
            "SELECT summary FROM runs WHERE ? IS NULL OR started_at > ?",
            (None if after is None else after.isoformat(), None if after is None else after.isoformat()),
        ).fetchall()
        usage, cost = Usage(), 0.0
        unknown = False
        for (text,) in rows:
            summary = RunSummary.model_validate_json(text)
            usage.add(summary.usage)
            if summary.cost is None:
                unknown = unknown or summary.usage.requests + summary.usage.batch_requests > 0
            else:
                cost += summary.cost
        return usage, None if unknown else cost
