"""Feeds and papers: what each fetch brought, which papers a profile has not had in a digest, and a full-text search
over every stored paper (its index is kept in step by the triggers of migration m012)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from digest.models import Feed, Paper
from digest.state.tables import Tables, timestamp

# A search ranks the newest this many matches: bm25 costs a few microseconds a match, and a query of common words
# matches most of a large state. The answer says when older matches were left unranked.
RANKED_MATCHES = 5_000


class Papers(Tables):
    def feed_state(self, url: str) -> tuple[str | None, str | None, dt.date | None]:
        row = self._db.execute("SELECT etag, last_modified, last_announced FROM feeds WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None, None, None
        return row[0], row[1], dt.date.fromisoformat(row[2]) if row[2] else None

    def record_feed(self, feed: Feed, profiles: Iterable[str]) -> int:
        """Store the feed's papers and its validators together, so a crash cannot skip papers. Returns new papers."""
        now = timestamp()
        with self._transaction() as db:
            for name in profiles:
                db.execute("INSERT OR IGNORE INTO profiles (name, created_at) VALUES (?, ?)", (name, now))
            # The statement's own rows: not the search index's, which its triggers write beside them.
            added = db.executemany(
                "INSERT OR IGNORE INTO papers (key, announced, data, fetched_at) VALUES (?, ?, ?, ?)",
                [(p.key, p.announced.isoformat(), p.model_dump_json(), now) for p in feed.papers],
            ).rowcount
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

    def stored(self, keys: Iterable[str]) -> set[str]:
        """Which of these papers, by key (id and version), the state holds."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # in chunks under SQLite's limit on parameters (999 in old builds)
            chunk = wanted[start : start + 500]
            rows = self._db.execute(f"SELECT key FROM papers WHERE key IN ({', '.join('?' * len(chunk))})", chunk)
            found.update(row[0] for row in rows)
        return found

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

    def latest_papers(self, paper_ids: Iterable[str]) -> dict[str, Paper]:
        """The newest version the state holds of each of these papers, by versionless id: fetched, or rated."""
        found: dict[str, Paper] = {}
        for paper_id in dict.fromkeys(paper_ids):
            rows = self._db.execute(
                """SELECT data FROM papers WHERE key >= ? AND key < ?
                   UNION ALL SELECT paper FROM ratings WHERE paper_id = ?""",
                (f"{paper_id}v", f"{paper_id}w", paper_id),
            ).fetchall()
            papers = [Paper.model_validate_json(row[0]) for row in rows]
            if exact := [p for p in papers if p.id == paper_id]:
                found[paper_id] = max(exact, key=lambda p: p.version)
        return found

    def search_papers(
        self, phrases: Sequence[Sequence[str]], *, since: dt.date | None = None, most: int
    ) -> tuple[list[str], bool]:
        """The ids (without version) of the papers whose title, abstract or authors hold every phrase (a phrase is
        its words in order), best first (bm25; a match in the title counts most), at most `most`; and whether
        older matches were left unranked. Words are quoted for FTS5 here, so that no query is its syntax."""
        match = " ".join('"' + " ".join(words).replace('"', '""') + '"' for words in phrases)
        oldest = self._db.execute(
            "SELECT rowid FROM paper_search WHERE paper_search MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
            (match, RANKED_MATCHES - 1),
        ).fetchone()
        rows = self._db.execute(
            """SELECT r.paper_id FROM paper_search CROSS JOIN paper_search_rows r ON r.id = paper_search.rowid
               WHERE paper_search MATCH ? AND paper_search.rowid >= ? AND r.announced >= ?
               ORDER BY bm25(paper_search, 4.0, 1.0, 2.0) LIMIT ?""",
            (match, oldest[0] if oldest else 0, since.isoformat() if since else "", most),
        ).fetchall()
        # The versions of a paper are one result, where its best version ranks.
        return list(dict.fromkeys(row[0] for row in rows)), oldest is not None
