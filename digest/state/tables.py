"""What every part of the store shares: the connection, one transaction at a time, and timestamps."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

# Where verdicts are cached: the digest's own, or `digest eval`'s.
VerdictCache = Literal["verdicts", "eval_verdicts"]


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.strip().encode()).hexdigest()[:16]


def timestamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def precise_timestamp(when: dt.datetime | None = None) -> str:
    """To the microsecond: ratings given in one second keep their order, newest first. Now, unless `when`."""
    return (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="microseconds")


class Tables:
    """One part of the store, over the state file's connection (opened, migrated and closed by `Store`)."""

    _db: sqlite3.Connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
