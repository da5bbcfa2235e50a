"""The reader's ratings, kept for good."""

from __future__ import annotations

import datetime as dt

from digest.models import Paper, Rating, RatingSource
from digest.state.tables import Tables, precise_timestamp


class Ratings(Tables):
    def rate(self, profile: str, paper: Paper, rating: int, source: RatingSource) -> str:
        """Record the reader's rating; returns what happened: "added", "changed" or "unchanged".

        An import never overrides a rating the reader gave by hand, and giving the same rating again keeps its date,
        so re-importing a file changes nothing."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT rating, source FROM ratings WHERE profile = ? AND paper_id = ?", (profile, paper.id)
            ).fetchone()
            if row is not None and (row[0] == rating or (source == "import" and row[1] != "import")):
                return "unchanged"
            db.execute(
                """INSERT INTO ratings (profile, paper_id, rating, paper, source, rated_at) VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (profile, paper_id) DO UPDATE SET rating = excluded.rating, paper = excluded.paper,
                   source = excluded.source, rated_at = excluded.rated_at""",
                (profile, paper.id, rating, paper.model_dump_json(), source, precise_timestamp()),
            )
        return "added" if row is None else "changed"

    def rating_of(self, profile: str, paper_id: str) -> int:
        """1, -1, or 0 for no rating."""
        row = self._db.execute(
            "SELECT rating FROM ratings WHERE profile = ? AND paper_id = ?", (profile, paper_id)
        ).fetchone()
        return int(row[0]) if row else 0

    def clear_rating(self, profile: str, paper_id: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM ratings WHERE profile = ? AND paper_id = ?", (profile, paper_id))
        return cursor.rowcount > 0

    def ratings(self, profile: str) -> list[Rating]:
        """The profile's ratings, newest first."""
        rows = self._db.execute(
            """SELECT paper, rating, source, rated_at FROM ratings WHERE profile = ?
               ORDER BY rated_at DESC, paper_id DESC""",
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
