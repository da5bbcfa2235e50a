"""SQLite state: papers seen, cached verdicts, ratings, digests and their deliveries, batches, runs, the Zotero
library; each part's reads and writes in its module of digest/state/, composed here into `Store`.

The schema is built by the named steps of `migrations`, applied in order on open.
"""

from __future__ import annotations

import fcntl
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO

from digest.errors import DigestError, StateError
from digest.state.batches import Batches, BatchRecord
from digest.state.digests import DeliveryState, Digests
from digest.state.migrations import MIGRATIONS
from digest.state.papers import Papers
from digest.state.ratings import Ratings
from digest.state.runs import Runs
from digest.state.tables import VerdictCache, prompt_hash
from digest.state.vectors import Vectors
from digest.state.verdicts import Verdicts
from digest.state.zotero import ZoteroTables

__all__ = ["BatchRecord", "DeliveryState", "Store", "VerdictCache", "describe_state_error", "prompt_hash"]

NEARLY_FULL_BYTES = 16 * 2**20  # a failed write with less free space than this is taken for a full disk


def describe_state_error(error: sqlite3.Error, path: Path) -> StateError:
    """What went wrong with the state file, in words, and what to do: the disk, the file, or its permissions."""
    text = str(error).lower()
    if "readonly" in text or "unable to open" in text or "permission" in text:
        return StateError(
            f"cannot write the state file {path}: {error}",
            hint="make the file and its folder writable by this user, or point state: in config.yaml elsewhere",
        )
    if "full" in text or ("disk i/o error" in text and _nearly_full(path.parent)):
        # SQLite says "disk I/O error" when a write fails for want of space in the journal: the disk, all the same.
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


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


class Store(Papers, Verdicts, Vectors, Ratings, Digests, Batches, Runs, ZoteroTables):
    """All reads and writes of the state file, each part in its module of digest/state/; each method is one
    transaction. This class opens the file (migrated to the latest schema), keeps settings, and locks a run."""

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
        for version, step in enumerate(MIGRATIONS[self.schema_version :], start=self.schema_version + 1):
            # One script per migration, schema change and version bump committed together.
            self._db.executescript(f"BEGIN IMMEDIATE; {step()}; PRAGMA user_version = {version}; COMMIT;")
