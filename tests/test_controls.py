"""The reader's controls: followed authors, keywords, per-profile categories, language, TL;DR, thresholds, caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.sources.arxiv_parse import parse_feed
from digest.taste.rules import AuthorName, Rules
from tests.helpers import CL_AI_FEED, CL_FEED, base_config, first_items, run_cli

# A small day, the three papers below among its 16 (all new or cross): what matters is the controls, not the day.
DAY = first_items(CL_FEED.read_bytes(), 16)
PAPERS = parse_feed(DAY, url="", categories=["cs.CL"], announce_types=["new", "cross"]).papers
BY_COTTERELL = next(p for p in PAPERS if "Ryan Cotterell" in p.authors)
ON_DICTIONARIES = next(p for p in PAPERS if "Dictionary" in p.title)
ON_HATE_SPEECH = next(p for p in PAPERS if "hate speech" in (p.title + p.abstract).lower())


@pytest.mark.parametrize(
    ("followed", "written", "same"),
    [
        ("Yoshua Bengio", "Y. Bengio", True),
        ("Yoshua Bengio", "Yoshua Bengio", True),
        ("Y. Bengio", "Yoshua Bengio", True),
        ("Yoshua Bengio", "Samy Bengio", False),
        ("Percy Liang", "Percy S. Liang", True),
        ("Diego Patino", "Diego Patiño", True),
        ("Talip Tolga Sari", "Talip Tolga Sar\u0131", True),  # a dotless i, as in the feed
        ("Jean-Pierre Dupont", "J. Dupont", True),
        ("Percy Liang", "Percy Lang", False),
    ],
)
def test_author_names_match_across_spellings(followed, written, same):
    mine, theirs = AuthorName.parse(followed), AuthorName.parse(written)
    assert mine is not None and theirs is not None
    assert mine.matches(theirs) is same


def test_keywords_are_whole_words_or_phrases_case_insensitive():
    rules = Rules([], ["machine-readable dictionary"], ["speech"])
    assert rules.decide(ON_DICTIONARIES).rule == "keyword"  # type: ignore[union-attr]
    assert rules.decide(ON_HATE_SPEECH).rule == "excluded"  # type: ignore[union-attr]
    partial = Rules([], ["diction"], [])
    assert partial.decide(ON_DICTIONARIES) is None  # "diction" is not a word of "Dictionary"


def test_a_followed_author_wins_over_an_excluded_keyword():
    rules = Rules(["R. Cotterell"], [], ["language"])
    verdict = rules.decide(BY_COTTERELL)
    assert verdict is not None and verdict.rule == "author" and verdict.reason.endswith("Ryan Cotterell")


@pytest.fixture
def day(feed_server) -> None:
    """The feed server's cs.CL day is DAY."""
    feed_server[1].feeds["/rss/cs.CL"] = DAY


def _judge_by_words(title: str, abstract: str) -> tuple[bool, int]:
    text = abstract.lower()
    if "language model" in text:
        return True, 8
    return False, 5 if "model" in text else 2


def test_rules_cost_no_request_and_explain_themselves(tmp_path, feed_server, day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(
        follow_authors=["R. Cotterell"], must_include=["Machine-Readable Dictionary"], exclude=["hate speech"]
    )
    result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert llm.requests == len(PAPERS) - 3  # the three papers the rules decided were never sent
    for paper in (BY_COTTERELL, ON_DICTIONARIES, ON_HATE_SPEECH):
        assert paper.title not in llm.judged
    html = (tmp_path / "outbox" / "me" / "2026-06-30.html").read_text()
    assert "By authors you follow" in html and "By an author you follow: Ryan Cotterell" in html
    assert "Matching your keywords" in html and "Matches &#39;Machine-Readable Dictionary&#39;" in html.replace(
        "'", "&#39;"
    )
    assert ON_HATE_SPEECH.title not in html
    assert "3 by your rules or ratings" in result.stdout


def test_must_include_wins_over_a_low_score(tmp_path, feed_server, day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    llm.judge = _judge_by_words
    assert _judge_by_words(ON_DICTIONARIES.title, ON_DICTIONARIES.abstract)[1] < 6  # the LLM would leave it out
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(must_include=["dictionary"], min_score=9)
    assert run_cli("run", "--config", str(write_config(config))).returncode == 0
    html = (tmp_path / "outbox" / "me" / "2026-06-30.html").read_text()
    assert ON_DICTIONARIES.title in html


def test_language_and_tldr_reach_the_prompt_and_the_digest(tmp_path, feed_server, day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(language="German", tldr=True)
    assert run_cli("run", "--config", str(write_config(config))).returncode == 0
    instructions = llm.prompts[0][0]["content"]
    assert 'Write "reason" and "tldr" in German' in instructions
    assert '"tldr"' in instructions
    assert llm.requests == len(PAPERS)  # the TL;DR comes in the same answer: no extra request
    html = (tmp_path / "outbox" / "me" / "2026-06-30.html").read_text()
    assert "TL;DR" in html and "In short:" in html
    eml = (tmp_path / "outbox" / "me" / "2026-06-30.eml").read_text()
    assert "TL;DR: In short:" in " ".join(eml.split()) or "TL;DR" in eml


def test_changing_min_score_rerenders_from_cached_verdicts_for_free(tmp_path, feed_server, day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    llm.judge = _judge_by_words
    path = write_config(base_config(tmp_path, feed_url, llm_url))
    assert run_cli("run", "--config", str(path)).returncode == 0
    requests = llm.requests
    at_six = sum(1 for p in PAPERS if _judge_by_words(p.title, p.abstract)[1] >= 6)
    at_four = sum(1 for p in PAPERS if _judge_by_words(p.title, p.abstract)[1] >= 4)
    assert at_four > at_six

    preview = run_cli("preview", "--min-score", "4", "--config", str(path))
    assert preview.returncode == 0, preview.stderr
    assert llm.requests == requests  # not a single request
    assert (
        f"me: {at_four} papers for you at min_score 4, {at_four - at_six} more than at 6 ({at_six})" in preview.stdout
    )
    page = Path(preview.stdout.splitlines()[0]).read_text()
    assert f"{at_four} for you" in page

    again = run_cli("run", "--config", str(path))  # and a re-run of the day costs nothing either
    assert again.returncode == 0 and llm.requests == requests


def test_max_papers_keeps_the_best(tmp_path, feed_server, day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    llm.judge = _judge_by_words
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"][0].update(max_papers=3, min_score=4)
    assert run_cli("run", "--config", str(write_config(config))).returncode == 0
    text = (tmp_path / "outbox" / "me" / "2026-06-30.eml").read_text()
    html = (tmp_path / "outbox" / "me" / "2026-06-30.html").read_text()
    above = sum(1 for p in PAPERS if _judge_by_words(p.title, p.abstract)[1] >= 4)
    assert html.count('class="score"') == 3
    assert html.count(">8/10<") == 3  # the three best, all scored 8
    assert f"{above - 3} more papers passed your threshold but were left out by max_papers" in html
    assert text


def test_per_profile_categories_are_fetched_once_and_kept_apart(tmp_path, feed_server, fake_llm, write_config):
    feed_url, feed = feed_server
    llm_url, llm = fake_llm
    config = base_config(tmp_path, feed_url, llm_url)
    config["profiles"].append({"name": "ai", "interests": "Planning and agents.", "categories": ["cs.AI"]})
    result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["path"] for r in feed.requests] == ["/rss/cs.CL+cs.AI"]  # one request for the union
    both = parse_feed(CL_AI_FEED.read_bytes(), url="", categories=["cs.CL", "cs.AI"], announce_types=["new", "cross"])
    in_cl = [p for p in both.papers if "cs.CL" in p.categories]
    in_ai = [p for p in both.papers if "cs.AI" in p.categories]
    assert llm.requests == len(in_cl) + len(in_ai)
    assert 0 < len(in_ai) < len(both.papers)
