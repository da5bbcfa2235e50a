"""Every signal of `digest eval` against the reader's ratings, from vectors and the LLM's cross-validated scores (no
I/O): the interests alone, taste trained on the ratings of the other folds, the LLM, and the two fused as the digest
fuses them; and what it proposes: the cut that best matches the ratings, and the share of a day the LLM must read
to keep 95% of the papers the reader liked."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from digest.models import Rating
from digest.state.vectors import Vector
from digest.taste.measures import RankingScores
from digest.taste.ranker import RatedVector, TasteModel, percentiles

KEEP = 0.95  # of the liked papers, what judge_share is proposed to keep
SHARE_STEP = 0.1  # judge_share is proposed in tenths, rounded up


class Signals(BaseModel):
    interests: RankingScores  # taste from the interests alone: the cold start
    ratings: RankingScores  # taste trained on the other folds' ratings
    llm: RankingScores | None  # the LLM's score with the other folds' examples
    fused: RankingScores | None  # the LLM's score moved by taste, as the digest cuts
    proposed_min_score: int | None  # the cut on the fused score that best matched the ratings (F1)
    proposed_judge_share: float | None  # to keep KEEP of the liked papers, ranked among a recent day's papers
    day: str | None = None  # that day
    # The fused (or LLM) score of each rated paper, liked and not: for the picture of where the two lie.
    liked_scores: list[float] = []
    disliked_scores: list[float] = []


def compare(
    ratings: Sequence[Rating],
    folds: Sequence[Sequence[Rating]],
    vectors: Mapping[str, Vector],
    interests: Vector,
    llm_scores: Mapping[str, int],
    *,
    taste_weight: float,
    min_score: int,
    day_vectors: Sequence[Vector] = (),
    day: str | None = None,
) -> Signals:
    """`llm_scores`: by paper key, the LLM's cross-validated score (missing for a paper it could not judge);
    `day_vectors`: a recent day's papers, against which the liked ones are ranked to propose a judge_share."""
    order = [r.paper.key for r in ratings]
    wanted = [r.liked for r in ratings]
    matrix = np.stack([vectors[key] for key in order])
    cold = TasteModel(interests, []).score(matrix)
    trained = np.zeros(len(order))
    position = {key: i for i, key in enumerate(order)}
    for fold in folds:
        held_out = {r.paper.key for r in fold}
        rest = [
            RatedVector(vectors[r.paper.key], r.liked, r.paper.title) for r in ratings if r.paper.key not in held_out
        ]
        model = TasteModel(interests, rest)
        rows = [position[r.paper.key] for r in fold]
        trained[rows] = percentiles(model.score(np.stack([vectors[r.paper.key] for r in fold])))
    # One place among all the rated papers, as the digest places a paper among the day's.
    place = percentiles(trained)
    judged = [i for i, key in enumerate(order) if key in llm_scores]
    llm = fused = None
    proposed = None
    liked_scores: list[float] = []
    disliked_scores: list[float] = []
    if judged:
        llm_values = [float(llm_scores[order[i]]) for i in judged]
        fused_values = [llm_scores[order[i]] + taste_weight * (2 * place[i] - 1) for i in judged]
        judged_wanted = [wanted[i] for i in judged]
        llm = RankingScores.of(llm_values, judged_wanted, min_score)
        fused = RankingScores.of(fused_values, judged_wanted, min_score)
        proposed = best_cut(fused_values, judged_wanted)
        liked_scores = [v for v, w in zip(fused_values, judged_wanted, strict=True) if w]
        disliked_scores = [v for v, w in zip(fused_values, judged_wanted, strict=True) if not w]
    return Signals(
        interests=RankingScores.of(list(cold), wanted),
        ratings=RankingScores.of(list(trained), wanted),
        llm=llm,
        fused=fused,
        proposed_min_score=proposed,
        proposed_judge_share=_share_to_keep(ratings, vectors, interests, day_vectors),
        day=day if day_vectors else None,
        liked_scores=liked_scores,
        disliked_scores=disliked_scores,
    )


def best_cut(scores: Sequence[float], wanted: Sequence[bool]) -> int | None:
    """The whole-number cut whose picks (score at least it) best match what was wanted, by F1; the higher of equals,
    for a shorter digest. None without a paper wanted."""
    if not any(wanted):
        return None
    best, best_f1 = None, -1.0
    for cut in range(11):
        picked = [s >= cut for s in scores]
        hits = sum(p and w for p, w in zip(picked, wanted, strict=True))
        f1 = 2 * hits / (sum(picked) + sum(wanted))
        if f1 >= best_f1:
            best, best_f1 = cut, f1
    return best


def _share_to_keep(
    ratings: Sequence[Rating], vectors: Mapping[str, Vector], interests: Vector, day: Sequence[Vector]
) -> float | None:
    """The share of the day the LLM must read, best by taste first, for KEEP of the liked papers to be among it,
    were they that day's papers: each liked paper is placed among the day's by a model trained without it."""
    liked = [r for r in ratings if r.liked]
    if not day or not liked:
        return None
    day_matrix = np.stack(list(day))
    above: list[float] = []
    for rating in liked:
        rest = [
            RatedVector(vectors[r.paper.key], r.liked, r.paper.title)
            for r in ratings
            if r.paper.key != rating.paper.key
        ]
        model = TasteModel(interests, rest)
        scores = model.score(np.vstack([day_matrix, vectors[rating.paper.key][None, :]]))
        above.append(float((scores[:-1] > scores[-1]).mean()))
    # Each liked paper is kept when the LLM reads at least the share above it; KEEP of them at this share:
    needed = sorted(above)[math.ceil(KEEP * len(above)) - 1]
    return min(1.0, max(SHARE_STEP, math.ceil(needed / SHARE_STEP - 1e-9) * SHARE_STEP))


def _rated(ratings: Sequence[Rating], vectors: Mapping[str, Vector], leaving_out: set[str]) -> list[RatedVector]:
    return [
        RatedVector(vectors[r.paper.key], r.liked, r.paper.title, r.rated_at)
        for r in ratings
        if r.paper.key not in leaving_out
    ]
