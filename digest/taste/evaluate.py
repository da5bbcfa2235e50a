"""`digest eval`: how well a profile's interests, examples and model reproduce the reader's own ratings.

K-fold cross-validation over the rated papers: each paper is judged with the examples of the other folds only, never
with its own rating in the prompt, and once more with the written interests alone, to show what the ratings bought.
A paper the reader liked counts as relevant; the model's verdict counts as relevant at the profile's min_score, as
in the digest. Verdicts are cached apart from the digest's, so asking again costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pydantic import BaseModel

from digest.config import Config, Profile
from digest.errors import DigestError, LLMError
from digest.llm.answers import Outcome
from digest.llm.live import Classifier
from digest.llm.prices import charges_nothing, estimate_cost
from digest.llm.prompt import PROMPT_VERSION, estimate_tokens, paper_message
from digest.llm.prompt import system_prompt as build_prompt
from digest.llm.requests import Job
from digest.llm.tally import Tally
from digest.models import Failure, OnProgress, Paper, Rating, Verdict
from digest.state.store import Store, VerdictCache
from digest.taste.embeddings import embedder_for, interests_key, paper_text, vectors_for
from digest.taste.signals import Signals, compare
from digest.wording import paper_count

MIN_EACH = 3  # ratings of each kind that an evaluation needs
EVAL_CACHE: VerdictCache = "eval_verdicts"


class Asked(NamedTuple):
    """A rated paper as eval asks about it: with the other folds' ratings as examples, and with the interests alone."""

    rating: Rating
    with_examples: str  # the prompt
    without: str


class Scores(BaseModel):
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None  # None where it is 0/0
    recall: float | None
    f1: float | None

    @classmethod
    def of(cls, pairs: Sequence[tuple[bool, bool]]) -> Scores:
        """From (the reader liked it, the model picked it) pairs."""
        tp = sum(liked and picked for liked, picked in pairs)
        fp = sum(picked and not liked for liked, picked in pairs)
        fn = sum(liked and not picked for liked, picked in pairs)
        tn = len(pairs) - tp - fp - fn
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        return cls(tp=tp, fp=fp, fn=fn, tn=tn, precision=precision, recall=recall, f1=f1)


class EvalReport(Scores):
    """The figures with examples at the top level; `without_examples` the same papers judged on interests alone."""

    profile: str
    model: str
    papers: int
    liked: int
    disliked: int
    folds: int
    min_score: int
    without_examples: Scores
    unjudged: int  # papers the model could not judge (kept out of both sets of figures)
    requests: int
    cached: int  # verdicts that came from the cache of an earlier eval
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    free: bool = False  # a local server, or a price of 0
    prompt_tokens_per_paper: int  # estimated, with the examples of one fold
    prompt_tokens_per_paper_without_examples: int
    # Every signal as the digest ranks by it, and what eval proposes; None without embeddings (taste_problem: why).
    signals: Signals | None = None
    taste_problem: str | None = None


AUTO_MIN_SCORE = "auto_min_score:"  # a state setting per profile: the cut `min_score: auto` takes


def with_learned_cut(store: Store, profile: Profile) -> Profile:
    """The profile with the cut it digests at: for `min_score: auto`, the one the last `digest eval` found best
    matched the reader's ratings (the default until then)."""
    saved = store.get_setting(AUTO_MIN_SCORE + profile.name) if profile.auto_min_score else None
    return profile if saved is None or not saved.isdigit() else profile.model_copy(update={"min_score": int(saved)})


def folds_of(ratings: Sequence[Rating], folds: int) -> list[list[Rating]]:
    """Stratified and deterministic: likes and dislikes each in id order, dealt round the folds in turn. With fewer
    than two papers a fold, leave-one-out."""
    ordered = sorted(ratings, key=lambda r: (-r.rating, r.paper.id))
    count = folds if len(ordered) >= 2 * folds else len(ordered)
    dealt: list[list[Rating]] = [[] for _ in range(count)]
    for index, rating in enumerate(ordered):
        dealt[index % count].append(rating)
    return dealt


async def evaluate(
    config: Config,
    store: Store,
    profile: Profile,
    *,
    folds: int = 5,
    model: str | None = None,
    on_progress: OnProgress | None = None,
) -> EvalReport:
    ratings = store.ratings(profile.name)
    liked = sum(r.liked for r in ratings)
    disliked = len(ratings) - liked
    if liked < MIN_EACH or disliked < MIN_EACH:
        need = ", ".join(
            f"{MIN_EACH - n} more as {word}" for n, word in ((liked, "up"), (disliked, "down")) if n < MIN_EACH
        )
        raise DigestError(
            f"profile {profile.name} has {paper_count(liked)} rated up and {disliked} rated down; an evaluation "
            f"needs at least {MIN_EACH} of each",
            hint=f"rate {need} (digest rate PAPER up|down --profile {profile.name}, or digest import FILE)",
        )
    llm = config.llm if model is None else config.llm.model_copy(update={"model": model})
    interests_only = build_prompt(profile)
    # Every paper judged twice: with the other folds' examples, and with the interests alone.
    judged: list[Asked] = []
    for fold in folds_of(ratings, folds):
        held_out = {r.paper.id for r in fold}
        prompt = build_prompt(profile, [r for r in ratings if r.paper.id not in held_out])  # newest first
        judged += [Asked(rating, prompt, interests_only) for rating in fold]
    papers_of: dict[str, list[Paper]] = {}
    for rating, with_examples, without in judged:
        papers_of.setdefault(with_examples, []).append(rating.paper)
        papers_of.setdefault(without, []).append(rating.paper)

    verdicts: dict[tuple[str, str], Verdict] = {}  # (paper key, prompt) -> verdict
    jobs: list[Job] = []
    for instructions, papers in papers_of.items():
        cached = store.cached_verdicts((p.key for p in papers), instructions, llm.model, PROMPT_VERSION, EVAL_CACHE)
        verdicts.update({(key, instructions): verdict for key, verdict in cached.items()})
        jobs += [Job(profile, p, instructions) for p in papers if p.key not in cached]
    from_cache = len(verdicts)

    failures: list[Failure] = []

    def record(job: Job, outcome: Outcome) -> None:
        if isinstance(outcome, Failure):
            failures.append(outcome)  # counted as unjudged below; eval leaves the digest's failures alone
            return
        store.save_verdict(outcome, profile.name, job.instructions, llm.model, PROMPT_VERSION, EVAL_CACHE)
        verdicts[(outcome.paper_key, job.instructions)] = outcome

    classifier = Classifier(llm)
    progress = Tally(len(jobs), llm, on_progress)
    try:
        if jobs:
            await classifier.classify(jobs, record, progress)
    finally:
        progress.finish(classifier.usage)
        await classifier.close()

    with_pairs, without_pairs, unjudged = [], [], 0
    for rating, with_examples, without in judged:
        taught = verdicts.get((rating.paper.key, with_examples))
        untaught = verdicts.get((rating.paper.key, without))
        if taught is None or untaught is None:
            unjudged += 1
            continue
        with_pairs.append((rating.liked, taught.score >= profile.min_score))
        without_pairs.append((rating.liked, untaught.score >= profile.min_score))
    usage = classifier.usage
    if judged and unjudged == len(judged):  # no figure means anything: say why, and fail
        last = f" (the last: {failures[-1].reason})" if failures else ""
        raise LLMError(
            f"no rated paper could be judged: the LLM failed on all {len(judged)} after {usage.requests} "
            f"requests{last}",
            hint="run `digest check` to see what the LLM server answers; then `digest eval` again (verdicts it "
            "did get are kept)",
        )
    signals, problem = await _signals(config, store, profile, ratings, folds_of(ratings, folds), judged, verdicts)
    if signals is not None and signals.proposed_min_score is not None:
        store.put_setting(AUTO_MIN_SCORE + profile.name, str(signals.proposed_min_score))
    sample = judged[0]
    return EvalReport(
        signals=signals,
        taste_problem=problem,
        **Scores.of(with_pairs).model_dump(),
        profile=profile.name,
        model=llm.model,
        papers=len(ratings),
        liked=liked,
        disliked=disliked,
        folds=len(folds_of(ratings, folds)),
        min_score=profile.min_score,
        without_examples=Scores.of(without_pairs),
        unjudged=unjudged,
        requests=usage.requests,
        cached=from_cache,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=estimate_cost(usage, llm),
        free=charges_nothing(llm),
        prompt_tokens_per_paper=estimate_tokens(sample.with_examples, paper_message(sample.rating.paper)),
        prompt_tokens_per_paper_without_examples=estimate_tokens(sample.without, paper_message(sample.rating.paper)),
    )


async def _signals(
    config: Config,
    store: Store,
    profile: Profile,
    ratings: Sequence[Rating],
    folds: Sequence[Sequence[Rating]],
    judged: Sequence[Asked],
    verdicts: dict[tuple[str, str], Verdict],
) -> tuple[Signals | None, str | None]:
    """Taste's figures beside the LLM's: the rated papers embedded (once: vectors are kept), and the papers of the
    profile's latest digest, to propose a judge_share."""
    try:
        embedder = embedder_for(config)
    except DigestError as error:
        return None, str(error)
    if embedder is None:
        return None, "embeddings: off in config.yaml"
    latest = store.latest_digest_date(profile.name)
    day = store.papers_of_digest(profile.name, latest) if latest is not None else []
    texts = {p.key: paper_text(p) for p in [*(r.paper for r in ratings), *day]}
    texts[interests_key(profile.interests)] = profile.interests
    try:
        vectors, _ = await vectors_for(store, embedder, texts)
    except DigestError as error:
        return None, str(error)
    finally:
        await embedder.close()
    llm_scores = {
        rating.paper.key: verdict.score
        for rating, with_examples, _ in judged
        if (verdict := verdicts.get((rating.paper.key, with_examples))) is not None
    }
    signals = compare(
        ratings,
        folds,
        vectors,
        vectors[interests_key(profile.interests)],
        llm_scores,
        taste_weight=profile.taste_weight,
        min_score=profile.min_score,
        day_vectors=[vectors[p.key] for p in day],
        day=str(latest) if latest is not None else None,
    )
    return signals, None
