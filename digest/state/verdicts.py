"""Verdicts, cached by profile prompt, model and prompt version; failures, counted per run."""

from __future__ import annotations

from collections.abc import Iterable

from digest.models import Failure, Verdict
from digest.state.tables import Tables, VerdictCache, prompt_hash, timestamp


class Verdicts(Tables):
    def cached_verdicts(
        self,
        paper_keys: Iterable[str],
        prompt: str,
        model: str,
        prompt_version: int,
        cache: VerdictCache = "verdicts",
    ) -> dict[str, Verdict]:
        """Verdicts given under exactly this profile prompt (interests, examples, language, TL;DR), model and
        version."""
        keys = list(paper_keys)
        found: dict[str, Verdict] = {}
        digest = prompt_hash(prompt)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"""SELECT paper_key, data FROM {cache} WHERE interests_hash = ? AND model = ?
                    AND prompt_version = ? AND paper_key IN ({",".join("?" * len(chunk))})""",
                (digest, model, prompt_version, *chunk),
            ).fetchall()
            found.update({key: Verdict.model_validate_json(data) for key, data in rows})
        return found

    def newest_verdicts(self, paper_keys: Iterable[str]) -> dict[str, Verdict]:
        """Each paper's newest verdict in the digest's cache, whatever the prompt, model or version it was given
        under: what the model said of it last."""
        keys = list(paper_keys)
        found: dict[str, Verdict] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"""SELECT paper_key, data FROM verdicts WHERE paper_key IN ({",".join("?" * len(chunk))})
                    ORDER BY created_at""",
                chunk,
            ).fetchall()
            found.update({key: Verdict.model_validate_json(data) for key, data in rows})  # the newest last: it wins
        return found

    def best_cached_scores(self, paper_ids: Iterable[str]) -> dict[str, int]:
        """The highest score a verdict in the digest's cache gives any version of each of these papers (by id
        without version; those with no cached verdict are left out), whatever the profile, prompt or model: what a
        search by min_score keeps at least, before it judges exactly."""
        ids = list(paper_ids)
        found: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._db.execute(
                f"""SELECT r.paper_id, max(json_extract(v.data, '$.score')) FROM paper_search_rows r
                    JOIN verdicts v ON v.paper_key = r.paper_key
                    WHERE r.paper_id IN ({",".join("?" * len(chunk))}) GROUP BY r.paper_id""",
                chunk,
            ).fetchall()
            found.update({paper_id: int(score) for paper_id, score in rows})
        return found

    def save_verdict(
        self,
        verdict: Verdict,
        profile: str,
        prompt: str,
        model: str,
        prompt_version: int,
        cache: VerdictCache = "verdicts",
    ) -> None:
        with self._transaction() as db:
            db.execute(
                f"""INSERT OR REPLACE INTO {cache} (paper_key, interests_hash, model, prompt_version, data, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (
                    verdict.paper_key,
                    prompt_hash(prompt),
                    model,
                    prompt_version,
                    verdict.model_dump_json(),
                    timestamp(),
                ),
            )
            db.execute("DELETE FROM failures WHERE paper_key = ? AND profile = ?", (verdict.paper_key, profile))

    def save_failure(self, failure: Failure, profile: str) -> None:
        with self._transaction() as db:
            db.execute(
                """INSERT INTO failures (paper_key, profile, reason, attempts, updated_at) VALUES (?, ?, ?, 1, ?)
                   ON CONFLICT (paper_key, profile) DO UPDATE SET reason = excluded.reason,
                   attempts = attempts + 1, updated_at = excluded.updated_at""",
                (failure.paper_key, profile, failure.reason, timestamp()),
            )

    def failure_attempts(self, profile: str, paper_keys: Iterable[str]) -> dict[str, int]:
        """In how many runs the LLM failed on each of these papers, for this profile."""
        keys = list(paper_keys)
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"""SELECT paper_key, attempts FROM failures WHERE profile = ?
                    AND paper_key IN ({",".join("?" * len(chunk))})""",
                (profile, *chunk),
            ).fetchall()
            found.update({key: int(attempts) for key, attempts in rows})
        return found
