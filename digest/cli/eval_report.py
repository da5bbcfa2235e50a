"""`digest eval`'s report: the LLM's figures with and without the reader's examples, every signal ranked against
the ratings, what eval proposes, and a picture of where liked and disliked papers lie."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.cli.progress import describe_cost
from digest.wording import counted, paper_count

if TYPE_CHECKING:  # the types only: numpy and the taste model are not imported to print a table
    from digest.taste.evaluate import EvalReport, Scores
    from digest.taste.signals import Signals


def _figure(value: float | None) -> str:
    return "   -" if value is None else f"{value:.2f}"


def _scores_row(name: str, scores: Scores) -> str:
    return (
        f"  {name:<16} {_figure(scores.precision):>9} {_figure(scores.recall):>7} {_figure(scores.f1):>6} "
        f"{scores.tp:>5} {scores.fp:>4} {scores.fn:>4} {scores.tn:>4}"
    )


def eval_report(report: EvalReport) -> str:
    lines = [
        f"digest eval - profile {report.profile} - {report.model} - {counted(report.papers, 'rated paper')} "
        f"({report.liked} up, {report.disliked} down), {report.folds} folds, relevant at score {report.min_score}+",
        f"  {'':<16} {'precision':>9} {'recall':>7} {'F1':>6} {'tp':>5} {'fp':>4} {'fn':>4} {'tn':>4}",
        _scores_row("with examples", report),
        _scores_row("interests only", report.without_examples),
    ]
    if report.f1 is not None and report.without_examples.f1 is not None:
        lines.append(f"  the ratings bought F1 {report.f1 - report.without_examples.f1:+.2f}")
    if report.unjudged:
        verb = "is" if report.unjudged == 1 else "are"
        lines.append(
            f"  warning: {paper_count(report.unjudged)} could not be judged and {verb} left out of the figures"
        )
    lines.append(
        f"  llm          {counted(report.requests, 'request')} "
        f"({counted(report.cached, 'verdict')} from an earlier eval), "
        f"{report.prompt_tokens:,} prompt tokens, {report.completion_tokens:,} completion tokens, "
        f"{describe_cost(report.cost_usd, free=report.free)}"
    )
    lines.append(
        f"  prompt       about {report.prompt_tokens_per_paper:,} tokens a paper with examples, "
        f"{report.prompt_tokens_per_paper_without_examples:,} without"
    )
    if report.signals is None:
        lines.append(f"  taste        not measured: {report.taste_problem}")
    else:
        lines += _signals_report(report.signals, report.min_score)
    return "\n".join(lines)


def _signals_report(signals: Signals, min_score: int) -> list[str]:
    lines = [
        "",
        f"  every signal, ranking your rated papers      {'AUC':>5} {'AP':>5} {'P@5':>5} {'P@10':>5} "
        f"{'recall at ' + str(min_score) + '+':>12}",
    ]
    rows = [
        ("taste, interests alone", signals.interests),
        ("taste, trained on your ratings", signals.ratings),
        ("the LLM", signals.llm),
        ("the LLM and taste, fused", signals.fused),
    ]
    for name, scores in rows:
        if scores is None:
            continue
        lines.append(
            f"  {name:<44} {_figure(scores.auc):>5} {_figure(scores.average_precision):>5} "
            f"{_figure(scores.precision_at_5):>5} {_figure(scores.precision_at_10):>5} "
            f"{_figure(scores.recall_at_cut) if scores.recall_at_cut is not None else '':>12}"
        )
    if signals.proposed_min_score is not None:
        lines.append(
            f"  proposed     min_score: {signals.proposed_min_score} (the cut that best matches your ratings; "
            "min_score: auto takes it)"
        )
    if signals.proposed_judge_share is not None:
        lines.append(
            f"  proposed     judge_share: {signals.proposed_judge_share:g} (the LLM reads that share of a day like "
            f"{signals.day}, best by taste, and sees 95% of the papers you liked; it saves "
            f"{1 - signals.proposed_judge_share:.0%} of its requests)"
        )
    if signals.liked_scores or signals.disliked_scores:
        lines += ["", "  fused score   liked" + " " * 17 + "not for me"]
        lines += score_chart(signals.liked_scores, signals.disliked_scores)
    return lines


CHART_WIDTH = 20


def score_chart(liked: list[float], disliked: list[float]) -> list[str]:
    """Where the papers you liked and those you did not lie on the fused score: a bar per two points, each side
    scaled to its own largest bin, so that a reader sees at a glance whether the two overlap."""
    bins = [(low, low + 2) for low in range(10, -1, -2)]

    def count(scores: list[float], low: int, high: int) -> int:
        return sum(low <= s < high or (high > 10 and s >= low) for s in scores)

    liked_counts = [count(liked, low, high) for low, high in bins]
    disliked_counts = [count(disliked, low, high) for low, high in bins]
    lines = []
    for (low, high), up, down in zip(bins, liked_counts, disliked_counts, strict=True):
        left = "#" * round(CHART_WIDTH * up / max(max(liked_counts), 1))
        right = "#" * round(CHART_WIDTH * down / max(max(disliked_counts), 1))
        label = f"{low}+" if high > 10 else f"{low}-{high}"
        lines.append(f"  {label:>9}   {left:<{CHART_WIDTH}} {up:>3}  {right:<{CHART_WIDTH}} {down:>3}")
    return lines
