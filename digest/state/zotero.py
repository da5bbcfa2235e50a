"""The reader's Zotero library as last read, and the papers "Save to Zotero" wrote.

A library is kept as what digest needs of it, not as Zotero holds it: per top-level item, the paper it names (or
none), what it says of that paper, its collections, whether it is in the trash and when it was added. What an item
means for a profile (its collections against the profile's) is worked out from this, so a changed config needs no
request, and an unchanged library costs one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from digest.state.tables import Tables, timestamp


class CollectionRow(NamedTuple):
    key: str
    name: str
    parent: str | None


class ItemRow(NamedTuple):
    """What a read item says, as kept."""

    key: str
    version: int
    paper_id: str | None  # None: no arXiv, bioRxiv or medRxiv id
    seed: str | None  # the library's word on the paper (digest.taste.library.Seed), as JSON
    collections: list[str]
    trashed: bool
    added_at: str | None  # dateAdded, as Zotero writes it


class LibraryCounts(NamedTuple):
    items: int
    with_paper: int
    unread: int


class SaveRecord(NamedTuple):
    write_token: str
    item_key: str | None  # None: the create was sent, and not confirmed


class ZoteroTables(Tables):
    def zotero_version(self, library: str) -> int | None:
        """The library version its items are listed to; None when it was never read."""
        row = self._db.execute("SELECT version FROM zotero_libraries WHERE library = ?", (library,)).fetchone()
        return None if row is None else int(row[0])

    def zotero_changes(
        self,
        library: str,
        version: int,
        listed: dict[str, int],
        collections: Iterable[CollectionRow],
        deleted_items: Iterable[str],
        deleted_collections: Iterable[str],
    ) -> None:
        """What changed in the library up to `version`, in one transaction: the items listed since (to be read),
        the collections changed, and what was deleted."""
        with self._transaction() as db:
            db.executemany(
                """INSERT INTO zotero_items (library, key, listed) VALUES (?, ?, ?)
                   ON CONFLICT (library, key) DO UPDATE SET listed = excluded.listed""",
                ((library, key, item_version) for key, item_version in listed.items()),
            )
            db.executemany(
                """INSERT OR REPLACE INTO zotero_collections (library, key, name, parent) VALUES (?, ?, ?, ?)""",
                ((library, *collection) for collection in collections),
            )
            db.executemany(
                "DELETE FROM zotero_items WHERE library = ? AND key = ?", ((library, k) for k in deleted_items)
            )
            db.executemany(
                "DELETE FROM zotero_collections WHERE library = ? AND key = ?",
                ((library, k) for k in deleted_collections),
            )
            db.execute(
                """INSERT INTO zotero_libraries (library, version, read_at) VALUES (?, ?, ?)
                   ON CONFLICT (library) DO UPDATE SET version = excluded.version, read_at = excluded.read_at""",
                (library, version, timestamp()),
            )

    def zotero_unread(self, library: str) -> list[str]:
        """The items listed and not read at that version yet, oldest listed first."""
        rows = self._db.execute(
            """SELECT key FROM zotero_items WHERE library = ? AND (read IS NULL OR read < listed)
               ORDER BY listed, key""",
            (library,),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def zotero_read(self, library: str, items: Iterable[ItemRow], gone: Iterable[str]) -> None:
        """Items read, and the keys asked for that the library no longer has as top-level items."""
        with self._transaction() as db:
            db.executemany(
                """UPDATE zotero_items SET read = max(listed, ?), listed = max(listed, ?), paper_id = ?, seed = ?,
                   collections = ?, trashed = ?, added_at = ? WHERE library = ? AND key = ?""",
                (
                    (
                        item.version,
                        item.version,
                        item.paper_id,
                        item.seed,
                        json.dumps(item.collections),
                        int(item.trashed),
                        item.added_at,
                        library,
                        item.key,
                    )
                    for item in items
                ),
            )
            db.executemany("DELETE FROM zotero_items WHERE library = ? AND key = ?", ((library, k) for k in gone))

    def zotero_item_keys(self, library: str) -> set[str]:
        rows = self._db.execute("SELECT key FROM zotero_items WHERE library = ?", (library,))
        return {str(row[0]) for row in rows}

    def zotero_collections(self, library: str) -> list[CollectionRow]:
        rows = self._db.execute(
            "SELECT key, name, parent FROM zotero_collections WHERE library = ? ORDER BY name, key", (library,)
        ).fetchall()
        return [CollectionRow(*row) for row in rows]

    def zotero_papers(self, library: str) -> Iterator[ItemRow]:
        """The items read that name a paper, one at a time."""
        rows = self._db.execute(
            """SELECT key, read, paper_id, seed, collections, trashed, added_at FROM zotero_items
               WHERE library = ? AND paper_id IS NOT NULL AND read IS NOT NULL ORDER BY key""",
            (library,),
        )
        for key, version, paper_id, seed, collections, trashed, added_at in rows:
            yield ItemRow(key, version, paper_id, seed, json.loads(collections), bool(trashed), added_at)

    def zotero_seeds(self, library: str, keys: Iterable[str]) -> dict[str, str]:
        """What these items say of their papers (the Seed JSON), by item key."""
        wanted = list(keys)
        rows = self._db.execute(
            f"""SELECT key, seed FROM zotero_items WHERE library = ? AND seed IS NOT NULL
                AND key IN ({",".join("?" * len(wanted))})""",
            (library, *wanted),
        )
        return {str(key): str(seed) for key, seed in rows}

    def zotero_counts(self, library: str) -> LibraryCounts:
        row = self._db.execute(
            """SELECT count(*), count(paper_id), sum(read IS NULL OR read < listed) FROM zotero_items
               WHERE library = ? AND NOT trashed""",
            (library,),
        ).fetchone()
        return LibraryCounts(int(row[0]), int(row[1]), int(row[2] or 0))

    def zotero_save(self, library: str, paper_id: str) -> SaveRecord | None:
        row = self._db.execute(
            "SELECT write_token, item_key FROM zotero_saves WHERE library = ? AND paper_id = ?", (library, paper_id)
        ).fetchone()
        return None if row is None else SaveRecord(*row)

    def zotero_save_sending(self, library: str, paper_id: str, write_token: str) -> None:
        """Written before the create is sent: a create whose answer was lost is retried with the same token."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO zotero_saves (library, paper_id, write_token, saved_at) VALUES (?, ?, ?, ?)",
                (library, paper_id, write_token, timestamp()),
            )

    def zotero_saved(self, library: str, paper_id: str, item_key: str) -> None:
        with self._transaction() as db:
            db.execute(
                """INSERT INTO zotero_saves (library, paper_id, write_token, item_key, saved_at) VALUES (?, ?, '', ?, ?)
                   ON CONFLICT (library, paper_id) DO UPDATE SET item_key = excluded.item_key,
                   saved_at = excluded.saved_at""",
                (library, paper_id, item_key, timestamp()),
            )

    def zotero_save_forgotten(self, library: str, paper_id: str) -> None:
        """The saved item is gone from the library (deleted, or in the trash): a new save makes a new one."""
        with self._transaction() as db:
            db.execute("DELETE FROM zotero_saves WHERE library = ? AND paper_id = ?", (library, paper_id))
