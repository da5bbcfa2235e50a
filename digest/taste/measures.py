"""How well a ranking matches what a reader wanted: the measures `digest eval` and benchmarks/taste.py report.
Plain functions over scores (higher: more wanted) and labels (True: wanted)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel


def auc(scores: Sequence[float], wanted: Sequence[bool]) -> float | None:
    """The chance that a wanted paper scores above an unwanted one (ties count half); None without both kinds."""
    positives = [s for s, w in zip(scores, wanted, strict=True) if w]
    negatives = [s for s, w in zip(scores, wanted, strict=True) if not w]
    if not positives or not negatives:
        return None
    above = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return above / (len(positives) * len(negatives))


def _ranked(scores: Sequence[float], wanted: Sequence[bool]) -> list[bool]:
    """The labels, best score first; among equal scores, the unwanted first (no credit for a lucky tie)."""
    return [w for _, w in sorted(zip(scores, wanted, strict=True), key=lambda pair: (-pair[0], pair[1]))]


def average_precision(scores: Sequence[float], wanted: Sequence[bool]) -> float | None:
    ranked = _ranked(scores, wanted)
    total = sum(ranked)
    if not total:
        return None
    hits, summed = 0, 0.0
    for rank, is_wanted in enumerate(ranked, start=1):
        if is_wanted:
            hits += 1
            summed += hits / rank
    return summed / total


def precision_at(scores: Sequence[float], wanted: Sequence[bool], k: int) -> float | None:
    ranked = _ranked(scores, wanted)[:k]
    return sum(ranked) / len(ranked) if ranked else None


def recall_at_cut(scores: Sequence[float], wanted: Sequence[bool], cut: float) -> float | None:
    """The share of the wanted papers that score at least `cut`."""
    chosen = [s >= cut for s, w in zip(scores, wanted, strict=True) if w]
    return sum(chosen) / len(chosen) if chosen else None


def share_for_recall(scores: Sequence[float], wanted: Sequence[bool], recall: float = 0.95) -> float | None:
    """The smallest share of the papers, best score first, that holds `recall` of the wanted ones: how much of a
    day the LLM must read, ranked so, to miss no more than the rest."""
    ranked = _ranked(scores, wanted)
    needed = math.ceil(recall * sum(ranked))
    if not needed:
        return None
    hits = 0
    for rank, is_wanted in enumerate(ranked, start=1):
        hits += is_wanted
        if hits >= needed:
            return rank / len(ranked)
    return 1.0


class RankingScores(BaseModel):
    """One signal against the reader's labels."""

    auc: float | None
    average_precision: float | None
    precision_at_5: float | None
    precision_at_10: float | None
    recall_at_cut: float | None = None

    @classmethod
    def of(cls, scores: Sequence[float], wanted: Sequence[bool], cut: float | None = None) -> RankingScores:
        return cls(
            auc=auc(scores, wanted),
            average_precision=average_precision(scores, wanted),
            precision_at_5=precision_at(scores, wanted, 5),
            precision_at_10=precision_at(scores, wanted, 10),
            recall_at_cut=None if cut is None else recall_at_cut(scores, wanted, cut),
        )
