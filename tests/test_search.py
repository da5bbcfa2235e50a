"""The full-text search over the state: its index filled from the papers stored before it, kept in step by every
save, prune and change of a paper, and a reader's query that is never FTS5's syntax."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from digest.agents.read import Reader, phrases
from digest.config import Config
from digest.errors import UsageError
from digest.llm.prompt import PROMPT_VERSION, system_prompt
from digest.models import Feed, Paper, Verdict
from digest.sources.arxiv_parse import parse_feed
from digest.state import papers as stored_papers
from digest.state.migrations import MIGRATIONS, m012_paper_search
from digest.state.store import Store
from tests.helpers import CL_FEED

DAY = dt.date(2026, 6, 30)


def real_papers() -> list[Paper]:
    return parse_feed(CL_FEED.read_bytes(), url="f", categories=["cs.CL"], announce_types=["new", "cross"]).papers


def paper(number: int, title: str, *, version: int = 1, announced: dt.date = DAY, abstract: str = "") -> Paper:
    return Paper(
        id=f"2606.{number:05d}",
        version=version,
        title=title,
        authors=["Diego Patiño", "Ana Lima"],
        abstract=abstract or f"An abstract of paper {number}.",
        categories=["cs.CL"],
        announce_type="new",
        announced=announced,
    )


def store_feed(store: Store, papers: list[Paper], url: str = "f") -> int:
    return store.record_feed(Feed(url=url, announced=DAY, papers=papers), ["me"])


def search(store: Store, phrase: str, since: dt.date | None = None) -> list[str]:
    """The ids of the papers holding the words of `phrase` in this order."""
    return store.search_papers([phrase.split()], since=since, most=50)[0]


def indexed_words(store: Store) -> int:
    """How many distinct words the index holds: none once every paper is gone, if each left as it came."""
    db: sqlite3.Connection = store._db
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.words USING fts5vocab(main, paper_search, 'row')")
    return int(db.execute("SELECT count(*) FROM temp.words").fetchone()[0])


def test_papers_stored_before_the_index_existed_are_found(tmp_path: Path) -> None:
    """A state written by the release before: the migration fills the index with what it holds."""
    path = tmp_path / "state.sqlite3"
    before = MIGRATIONS.index(m012_paper_search)
    real = real_papers()
    with sqlite3.connect(path) as db:
        for step in MIGRATIONS[:before]:
            db.executescript(step())
        db.execute(f"PRAGMA user_version = {before}")
        db.executemany(
            "INSERT INTO papers (key, announced, data, fetched_at) VALUES (?, ?, ?, ?)",
            [(p.key, p.announced.isoformat(), p.model_dump_json(), "2026-06-30T06:00:00+00:00") for p in real],
        )
        # A paper stored by the first releases says arxiv_id, not id.
        db.execute(
            "UPDATE papers SET data = json_set(json_remove(data, '$.id'), '$.arxiv_id', ?) WHERE key = ?",
            (real[0].id, real[0].key),
        )
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert search(store, "Evaluation Illusion") == ["2606.29228"]
        assert real[0].id in search(store, real[0].title.split(":")[0])
        assert len(search(store, "the")) == 50  # bounded by `most`


def test_the_index_follows_every_save_prune_and_change(tmp_path: Path) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        assert store_feed(store, [paper(1, "Speculative decoding"), paper(2, "Tokenizers")]) == 2
        assert store_feed(store, [paper(1, "Speculative decoding"), paper(3, "Speculative sampling")]) == 1
        assert sorted(search(store, "speculative")) == ["2606.00001", "2606.00003"]
        assert search(store, "patino") and search(store, "Patiño")  # accents as the reader types them, or not
        assert search(store, "tokenizer") == ["2606.00002"]  # "tokenizers": the same word

        store._db.execute(
            "UPDATE papers SET data = json_set(data, '$.title', 'Draft verification') WHERE key = '2606.00001v1'"
        )
        assert search(store, "speculative") == ["2606.00003"] and search(store, "verification") == ["2606.00001"]

        keys = ["2606.00001v1", "2606.00002v1", "2606.00003v1"]
        store.record_digest("me", DAY, "subject", b"message", keys, {})
        assert store.prune(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)) == 3
        assert search(store, "verification") == [] and search(store, "tokenizer") == []
        assert indexed_words(store) == 0  # each paper left the index exactly as it came in
        store._db.execute("INSERT INTO paper_search (paper_search, rank) VALUES ('integrity-check', 0)")


def test_versions_are_one_result_and_since_filters_by_announcement(tmp_path: Path) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        store_feed(store, [paper(1, "Old speculative decoding", announced=dt.date(2026, 6, 1))], "a")
        store_feed(store, [paper(1, "New speculative decoding", version=2), paper(2, "Speculative sampling")], "b")
        assert sorted(search(store, "speculative")) == ["2606.00001", "2606.00002"]
        assert search(store, "Old speculative") == ["2606.00001"]  # found by its first version's words
        assert store.latest_papers(["2606.00001"])["2606.00001"].version == 2
        assert sorted(search(store, "speculative", since=dt.date(2026, 6, 30))) == ["2606.00001", "2606.00002"]
        assert search(store, "old", since=dt.date(2026, 6, 30)) == []


def test_a_query_matching_too_many_papers_ranks_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored_papers, "RANKED_MATCHES", 3)
    with Store(tmp_path / "state.sqlite3") as store:
        for number in range(1, 7):
            store_feed(store, [paper(number, f"Decoding {number}")], f"feed {number}")
        found, unranked = store.search_papers([["decoding"]], most=50)
        assert sorted(found) == ["2606.00004", "2606.00005", "2606.00006"] and unranked
        assert store.search_papers([["decoding"], ["6"]], most=50) == (["2606.00006"], False)


def test_words_are_quoted_so_that_none_is_fts5_syntax(tmp_path: Path) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        store_feed(store, real_papers())
        for words in (
            ["AND"],
            ["OR", "("],
            ['a"b'],
            ["NEAR(x", "y)"],
            ["*"],
            ["title:x"],
            ["'; DROP TABLE papers; --"],
        ):
            store.search_papers([words], most=10)  # an answer, not an FTS5 syntax error
        assert store.search_papers([["Evaluation", "Illusion"]], most=10) == (["2606.29228"], False)


@pytest.mark.parametrize(
    ("query", "searched"),
    [
        ("speculative decoding", [["speculative"], ["decoding"]]),
        ('"speculative decoding" tree', [["speculative", "decoding"], ["tree"]]),
        ("AND OR (", [["AND"], ["OR"]]),
        (
            'NEAR(a b) title:lang* ^x -y "unclosed',
            [["NEAR", "a"], ["b"], ["title", "lang"], ["x"], ["y"], ["unclosed"]],
        ),
        ("Patiño's 2606.29563", [["Patiño", "s"], ["2606", "29563"]]),
    ],
)
def test_a_query_is_words_and_phrases_never_fts5_syntax(query: str, searched: list[list[str]]) -> None:
    assert phrases(query) == searched


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ('"', "no words"),
        ("( ) * -", "no words"),
        ("x" * 10_000, "10,000 characters long; at most 500"),
        (" ".join(f"w{n}" for n in range(17)), "17 words or phrases; at most 16"),
    ],
)
def test_a_query_without_words_or_too_long_is_refused_in_words(query: str, said: str) -> None:
    with pytest.raises(UsageError, match=said):
        phrases(query)


def test_min_score_keeps_exactly_the_papers_a_profile_scored_so(tmp_path: Path) -> None:
    """Whatever decided the score: a cached verdict, or a rule of the reader's that no verdict was cached for."""
    config = Config.model_validate(
        {
            "arxiv": {"categories": ["cs.CL"]},
            "llm": {"api_key": "unused"},
            "profiles": [{"name": "me", "interests": "Decoding.", "must_include": ["tree decoding"]}],
            "state": str(tmp_path / "state.sqlite3"),
        }
    )
    profile = config.profiles[0]
    liked, disliked, ruled, unjudged = (
        paper(1, "Speculative decoding"),
        paper(2, "Greedy decoding"),
        paper(3, "Tree decoding"),
        paper(4, "Beam decoding"),
    )
    with Store(config.state) as store:
        store_feed(store, [liked, disliked, ruled, unjudged])
        for judged, score in ((liked, 8), (disliked, 2)):
            verdict = Verdict(paper_key=judged.key, score=score, reason="r", matched_interests=[])
            store.save_verdict(verdict, "me", system_prompt(profile), config.llm.model, PROMPT_VERSION)
    reader = Reader(config)
    found = reader.search("decoding", min_score=6)
    assert sorted(p.id for p in found.papers) == [liked.id, ruled.id]
    assert {p.id: p.verdicts[0].verdict_from for p in found.papers} == {liked.id: "model", ruled.id: "rule"}
    assert [p.id for p in reader.search("decoding", min_score=6, limit=1).papers] in ([liked.id], [ruled.id])
    assert sorted(p.id for p in reader.search("decoding").papers) == [liked.id, disliked.id, ruled.id, unjudged.id]
