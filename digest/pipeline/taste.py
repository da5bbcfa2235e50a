"""The taste stage: every paper embedded once (shared by every profile, kept in the state), then each profile's
papers of the day placed by the reader's taste, for the judge (which share the LLM reads) and for selection (how
far taste moves a score). Without embeddings (`embeddings: off`), or when they cannot be made, nothing is placed
and the LLM reads every paper, as before; the run says why."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from digest.config import Config, Profile
from digest.errors import DigestError
from digest.models import DayTaste, Paper
from digest.state.store import Store
from digest.state.vectors import Vector
from digest.taste.embeddings import Embedder, embedder_for, interests_key, paper_text, vectors_for
from digest.taste.ranker import RatedVector, TasteModel, percentiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TasteRun:
    """What the stage did, for the summary."""

    by_profile: Mapping[str, DayTaste]
    embedded: int = 0  # papers embedded by this run (the others were in the state)
    seconds: float = 0.0
    model: str = ""
    problem: str = ""  # why there is no taste this run, when there is none


async def place_by_taste(
    config: Config,
    store: Store,
    papers_of: Mapping[str, list[Paper]],
    in_scope: Callable[[Profile, list[Paper]], list[Paper]],
    *,
    embedder: Embedder | None = None,
) -> TasteRun:
    started = time.monotonic()
    try:
        embedder = embedder or embedder_for(config)
    except DigestError as error:
        return TasteRun({}, problem=str(error))
    if embedder is None:
        return TasteRun({})
    try:
        ratings = {p.name: store.ratings(p.name) for p in config.profiles}
        papers = {p.key: p for listed in papers_of.values() for p in listed}
        papers.update({r.paper.key: r.paper for rated in ratings.values() for r in rated})
        texts = {p.key: paper_text(p) for p in papers.values()}
        texts.update({interests_key(p.interests): p.interests for p in config.profiles})
        vectors, embedded = await vectors_for(store, embedder, texts)
        placed = {}
        for profile in config.profiles:
            mine = in_scope(profile, papers_of[profile.name])
            rated = [
                RatedVector(vectors[r.paper.key], r.liked, r.paper.title, r.rated_at) for r in ratings[profile.name]
            ]
            model = TasteModel(vectors[interests_key(profile.interests)], rated)
            placed[profile.name] = _day(model, mine, vectors)
    except DigestError as error:
        log.warning("taste: %s", error)
        return TasteRun({}, problem=str(error), model=embedder.model_id)
    finally:
        await embedder.close()
    return TasteRun(placed, embedded, time.monotonic() - started, embedder.model_id)


def _day(model: TasteModel, papers: Sequence[Paper], vectors: Mapping[str, Vector]) -> DayTaste:
    if not papers:
        return DayTaste(place={}, close_to={}, trained=model.trained)
    matrix = np.stack([vectors[p.key] for p in papers])
    places = percentiles(model.score(matrix))
    close_to = {}
    for paper, vector in zip(papers, matrix, strict=True):
        closest = model.closest_liked(vector)
        if closest is not None:
            close_to[paper.key] = closest.title
    place = {p.key: float(x) for p, x in zip(papers, places, strict=True)}
    return DayTaste(place=place, close_to=close_to, trained=model.trained)
