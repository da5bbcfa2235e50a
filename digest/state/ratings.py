"""The reader's ratings, kept for good."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from digest.models import Paper, Rating, RatingSource
from digest.state.tables import Tables, precise_timestamp

# Whose word weighs more: a rating given by hand over the live Zotero library's, and the library's (the reader's
# word today) over a file imported once. A rating replaces one that weighs as much or less, never more.
WEIGHT: dict[str, int] = {"import": 0, "zotero": 1, "cli": 2, "web": 2}


class GivenRating(NamedTuple):
    rating: int  # 1 or -1
    source: RatingSource  # where it came from


class Ratings(Tables):
    def rate(
        self, profile: str, paper: Paper, rating: int, source: RatingSource, rated_at: dt.datetime | None = None
    ) -> str:
        """Record the reader's rating; returns what happened: "added", "changed" or "unchanged".

        An import or the Zotero library never overrides a rating the reader gave by hand, and giving the same
        rating again keeps its date, so re-importing a file changes nothing. `rated_at`: when the reader said it, if
        not now (a Zotero item's dateAdded)."""
        with self._transaction() as db:
            return _rate(db, profile, paper, rating, source, rated_at)

    def rate_many(
        self, profile: str, rated: Iterable[tuple[Paper, int, dt.datetime | None]], source: RatingSource
    ) -> dict[str, int]:
        """Many ratings (paper, rating, when) in one transaction, as `rate` records each: a library's thousands in a
        moment, where a transaction each took minutes. How many were added, changed and unchanged."""
        counts = {"added": 0, "changed": 0, "unchanged": 0}
        with self._transaction() as db:
            for paper, rating, rated_at in rated:
                counts[_rate(db, profile, paper, rating, source, rated_at)] += 1
        return counts

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

    def clear_ratings_from(self, profile: str, paper_ids: Iterable[str], source: RatingSource) -> int:
        """Take back the ratings of these papers that came from `source` (items removed from the Zotero library
        take back what they gave, never a rating given by hand); how many."""
        with self._transaction() as db:
            cursor = db.executemany(
                "DELETE FROM ratings WHERE profile = ? AND paper_id = ? AND source = ?",
                ((profile, paper_id, source) for paper_id in paper_ids),
            )
        return cursor.rowcount

    def rating_sources(self, profile: str) -> dict[str, GivenRating]:
        """The profile's ratings by paper: 1 or -1, and where each came from."""
        rows = self._db.execute("SELECT paper_id, rating, source FROM ratings WHERE profile = ?", (profile,))
        return {str(paper_id): GivenRating(int(rating), source) for paper_id, rating, source in rows}

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


def _rate(
    db: sqlite3.Connection, profile: str, paper: Paper, rating: int, source: RatingSource, rated_at: dt.datetime | None
) -> str:
    row = db.execute(
        "SELECT rating, source FROM ratings WHERE profile = ? AND paper_id = ?", (profile, paper.id)
    ).fetchone()
    if row is not None and (row[0] == rating or WEIGHT[source] < WEIGHT[row[1]]):
        return "unchanged"
    db.execute(
        """INSERT INTO ratings (profile, paper_id, rating, paper, source, rated_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (profile, paper_id) DO UPDATE SET rating = excluded.rating, paper = excluded.paper,
           source = excluded.source, rated_at = excluded.rated_at""",
        (profile, paper.id, rating, paper.model_dump_json(), source, precise_timestamp(rated_at)),
    )
    return "added" if row is None else "changed"
