"""Embeddings, kept so that a paper is embedded once whatever the number of profiles and runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from digest.state.tables import Tables

Vector = npt.NDArray[np.float32]


class Vectors(Tables):
    def vectors(self, keys: Iterable[str], model: str) -> dict[str, Vector]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Vector] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({','.join('?' * len(chunk))})",
                (model, *chunk),
            ).fetchall()
            found.update({key: np.frombuffer(blob, dtype=np.float32) for key, blob in rows})
        return found

    def save_vectors(self, model: str, vectors: Mapping[str, Vector]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO vectors (key, model, vector) VALUES (?, ?, ?)",
                [(key, model, np.asarray(vector, dtype=np.float32).tobytes()) for key, vector in vectors.items()],
            )
