"""bioRxiv and medRxiv beside arXiv: a loopback server speaking their API's format (tests/servers.py's RxivAPI,
serving the real records of tests/fixtures/rxiv/), and digest run as a user runs it."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from digest.config import load_config
from digest.errors import ConfigError
from digest.state.migrations import MIGRATIONS
from tests.helpers import FIXTURES, base_config, first_items, run_cli
from tests.servers import RxivAPI, serve_asgi

RXIV = FIXTURES / "rxiv"
BIORXIV = json.loads((RXIV / "biorxiv_details_page.json").read_text())["collection"]
MEDRXIV = json.loads((RXIV / "medrxiv_10.1101_2020.09.09.20191205.json").read_text())["collection"]
KCNQ = "10.1101/2023.12.30.573731"
MACAQUES = "10.64898/2026.07.31.741992"
IMMUNITY = "10.1101/2020.09.09.20191205"
ARXIV_DAY = 12  # arXiv papers: the first items of a real day


@pytest.fixture
def rxiv() -> Iterator[tuple[str, RxivAPI]]:
    app = RxivAPI(records={"biorxiv": list(BIORXIV), "medrxiv": list(MEDRXIV)}, page_size=1)
    with serve_asgi(app) as url:
        yield url, app


def configure(tmp_path: Path, feed_server: Any, fake_llm: Any, rxiv_url: str, **sections: Any) -> dict[str, Any]:
    (feed_url, feed), (llm_url, llm) = feed_server, fake_llm
    feed.feeds["/rss/cs.CL"] = first_items(feed.feeds["/rss/cs.CL"], ARXIV_DAY)  # a small day of arXiv beside
    llm.judge = lambda title, abstract: (
        (True, 9)
        if re.search(r"KCNQ|SARS|language model", title + abstract)
        else (
            False,
            2,
        )
    )
    config = base_config(tmp_path, feed_url, llm_url)
    config["biorxiv"] = {"categories": ["neuroscience", "Animal-Behavior-and-Cognition"], "api_url": rxiv_url}
    config["medrxiv"] = {"categories": ["infectious diseases"], "api_url": rxiv_url}
    config.update(sections)
    return config


def test_a_day_of_biorxiv_medrxiv_and_arxiv_is_one_digest_each_paper_judged_once(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    (rxiv_url, api), (_, llm) = rxiv, fake_llm
    api.records["medrxiv"] = [MEDRXIV[0]]  # the first version, as the day it was posted listed it
    path = write_config(configure(tmp_path, feed_server, fake_llm, rxiv_url))
    run = run_cli("run", "--config", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    # Each page is one record here: two pages for bioRxiv's two papers.
    assert len(api.asked("biorxiv")) == 2 and len(api.asked("medrxiv")) == 1
    assert api.asked("biorxiv")[1].endswith("/1/json")  # the next page starts where the first one's records end
    times = [when for when, _ in api.requests]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))  # a request a second, for both servers
    assert f"    arXiv      {ARXIV_DAY} papers ({ARXIV_DAY} new), 1 request" in run.stdout
    assert "    bioRxiv    2 papers (2 new), 2 requests" in run.stdout
    assert "    medRxiv    1 paper (1 new), 1 request" in run.stdout
    assert llm.requests == ARXIV_DAY + 2 + 1  # every paper judged once

    email = message_from_bytes((tmp_path / "outbox" / "me" / "2026-06-30.eml").read_bytes(), policy=policy.default)
    assert isinstance(email, EmailMessage)
    assert email["Subject"].startswith("arXiv + bioRxiv + medRxiv digest - 30 Jun 2026 - ")
    text = email.get_body(preferencelist=("plain",))
    html = email.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    plain = text.get_content()
    assert "bioRxiv · neuroscience" in plain and "medRxiv · infectious diseases" in plain and "arXiv · cs.CL" in plain
    assert f"https://www.biorxiv.org/content/{KCNQ}v1  pdf: https://www.biorxiv.org/content/{KCNQ}v1.full.pdf" in plain
    assert f"https://www.medrxiv.org/content/{IMMUNITY}v1" in plain
    assert "A. K. Sinha, C. Lee" in plain  # names as arXiv writes them
    assert f'href="https://www.biorxiv.org/content/{KCNQ}v1.full"' in html.get_content()

    again = run_cli("run", "--config", str(path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert llm.requests == ARXIV_DAY + 3  # nothing judged twice
    assert "already recorded for 2026-06-30" in again.stdout
    # The second run reads bioRxiv from the day it last read to, again (the API lists a day into the next).
    assert "    bioRxiv    2 papers (2 new), 2 requests" in again.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        keys = [r[0] for r in db.execute("SELECT key FROM papers WHERE key LIKE '10.%'")]
    assert sorted(keys) == sorted([f"{KCNQ}v1", f"{MACAQUES}v1", f"{IMMUNITY}v1"])


def test_a_later_version_is_a_replacement_and_comes_when_announce_types_say(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    rxiv_url, api = rxiv
    api.page_size = 30  # as the real API's: one page each
    api.records["medrxiv"] = [MEDRXIV[1]]  # version 2, posted a day after version 1
    config = configure(tmp_path, feed_server, fake_llm, rxiv_url)
    path = write_config(config)
    dry = run_cli("run", "--dry-run", "--config", str(path))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "    medRxiv    0 papers, 1 request" in dry.stdout and "1 replace" in dry.stdout  # left out by default
    config["medrxiv"]["announce_types"] = ["new", "replace"]
    dry = run_cli("run", "--dry-run", "--config", str(write_config(config)))
    assert f"fetched      {ARXIV_DAY + 3} papers ({ARXIV_DAY + 2} new, 1 replace)" in dry.stdout
    assert "    bioRxiv    2 papers, 1 request" in dry.stdout and "    medRxiv    1 paper, 1 request" in dry.stdout
    assert not (tmp_path / "state.sqlite3").exists()  # the dry run writes no state
    api.records["medrxiv"] = list(MEDRXIV)  # versions 1 and 2 in one listing: the paper once, at version 2
    run = run_cli("run", "--config", str(path))
    assert "    medRxiv    1 paper (1 replace), 1 request" in run.stdout


def test_malformed_records_cost_themselves_and_a_broken_page_is_asked_again(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    rxiv_url, api = rxiv
    hostile = [
        {**BIORXIV[1], "version": "one"},
        {k: v for k, v in BIORXIV[1].items() if k != "doi"},
        {**BIORXIV[1], "doi": "javascript:alert(1)"},
        "not a record",
    ]
    api.records["biorxiv"] = [BIORXIV[1], *hostile, BIORXIV[0]]
    api.page_size = 3
    api.broken = {3: "empty"}  # the second page answers 200 with no body, every time
    config = configure(tmp_path, feed_server, fake_llm, rxiv_url)
    config["biorxiv"]["max_retry_seconds"] = 3
    del config["medrxiv"]
    path = write_config(config)
    run = run_cli("run", "--config", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "items of the bioRxiv feed could not be read" in run.stdout
    assert "bioRxiv record '10.1101/2023.12.30.573731' was left out (version:" in run.stdout
    assert "bioRxiv record number 3 of its page was left out (doi: Field required)" in run.stdout
    assert "bioRxiv page at record 3: bioRxiv API" in run.stdout and "answered with an empty body" in run.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        keys = [r[0] for r in db.execute("SELECT key FROM papers WHERE key LIKE '10.%'")]
        (announced,) = db.execute("SELECT last_announced FROM feeds WHERE url LIKE '%/details/biorxiv'").fetchone()
    assert keys == [f"{KCNQ}v1"]  # the good record before the broken page is kept
    api.broken = {}
    second = run_cli("run", "--config", str(path))
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("left out") >= 3
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        keys = [r[0] for r in db.execute("SELECT key FROM papers WHERE key LIKE '10.%' ORDER BY key")]
    assert keys == [f"{KCNQ}v1", f"{MACAQUES}v1"]  # the page given up on was asked again, from the same day
    assert announced is not None


def test_an_empty_day_is_said_plainly_and_biorxiv_alone_is_a_whole_config(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    rxiv_url, api = rxiv
    api.records = {}
    config = configure(tmp_path, feed_server, fake_llm, rxiv_url)
    del config["arxiv"], config["medrxiv"]
    run = run_cli("run", "--config", str(write_config(config)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(
        r"warning: bioRxiv: no new papers in neuroscience, animal behavior and cognition from \S+", run.stdout
    )
    assert "digest: nothing new: no digest" in run.stdout


def test_a_subject_biorxiv_does_not_have_is_named_with_the_nearest(tmp_path, write_config):
    config = base_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9/v1")
    config["biorxiv"] = {"categories": ["neurosciense"]}
    config["profiles"][0]["categories"] = ["cs.CL", "virology"]
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(config), {"OPENAI_API_KEY": "k"})
    problems = "\n".join(raised.value.problems)
    assert "'neurosciense' is not a bioRxiv subject; did you mean 'neuroscience'? its subjects: animal" in problems
    assert "'virology' is neither an arXiv category (like cs.CL) nor a bioRxiv or medRxiv subject" in problems
    config["biorxiv"] = {"categories": ["neuroscience"]}
    config["profiles"][0]["categories"] = ["cs.CL", "epidemiology"]  # bioRxiv and medRxiv both have it
    assert load_config(write_config(config), {"OPENAI_API_KEY": "k"}).profiles[0].categories == [
        "cs.CL",
        "epidemiology",
    ]
    del config["arxiv"]
    with pytest.raises(ConfigError, match=r"follows cs\.CL, an arXiv category, but there is no arxiv: section"):
        load_config(write_config(config), {"OPENAI_API_KEY": "k"})


RECOVAR = """@article{gilles2023bayesian,
title = "A Bayesian Framework for Cryo-EM Heterogeneity Analysis using Regularized Covariance Estimation",
journal = "bioRxiv",
year = "2024",
publisher = "Cold Spring Harbor Laboratory",
abstract = {Proteins and the complexes they form are central to nearly all cellular processes.},
elocation-id = "2023.10.28.564422",
doi = "https://doi.org/10.1101/2023.10.28.564422",
url = "https://www.biorxiv.org/content/10.1101/2023.10.28.564422v4",
author = "Gilles, Marc Aurèle T and Singer, Amit",
}
@article{kcnq, title = {KCNQ2/3}, doi = {10.1101/2023.12.30.573731}}
@article{journal, title = {A journal paper}, doi = {10.1038/s41467-021-21444-5}}
"""


def test_rate_import_and_the_web_links_take_dois(tmp_path, feed_server, fake_llm, rxiv, write_config):
    rxiv_url, api = rxiv
    path = write_config(configure(tmp_path, feed_server, fake_llm, rxiv_url))
    rated = run_cli("rate", f"https://www.medrxiv.org/content/{IMMUNITY}v2.full.pdf", "up", "--config", str(path))
    assert rated.returncode == 0, rated.stderr
    assert f"more like this: {IMMUNITY} 'Evolution of immunity to SARS-CoV-2'" in rated.stdout
    assert api.asked("biorxiv") == [f"/details/biorxiv/{IMMUNITY}/na/json"]  # not bioRxiv's: asked medRxiv next
    assert api.asked("medrxiv") == [f"/details/medrxiv/{IMMUNITY}/na/json"]
    unknown = run_cli("rate", "10.1101/2099.01.01.000001", "down", "--config", str(path))
    assert unknown.returncode == 2 and "bioRxiv nor medRxiv does not know the paper" in unknown.stderr

    library = tmp_path / "library.bib"
    library.write_text(RECOVAR)
    imported = run_cli("import", str(library), "--config", str(path))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "3 entries, 2 papers rated (2 new" in imported.stdout
    assert "1 entry names no arXiv, bioRxiv or medRxiv paper, left out: journal" in imported.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        papers = {r[0]: json.loads(r[1]) for r in db.execute("SELECT paper_id, paper FROM ratings")}
    assert papers["10.1101/2023.10.28.564422"]["version"] == 4
    assert papers["10.1101/2023.10.28.564422"]["links"]["abstract"].startswith("https://www.biorxiv.org/content/")
    assert papers[IMMUNITY]["source"] == "medRxiv" and papers[KCNQ]["source"] == "bioRxiv"


def test_a_state_from_before_sources_keeps_every_arxiv_paper_and_rating(tmp_path):
    import digest.state.store as store_module

    state = tmp_path / "old.sqlite3"
    with sqlite3.connect(state) as db:
        for step in MIGRATIONS[:7]:
            db.executescript(step())
        db.execute(f"PRAGMA user_version = {7}")
        paper = {
            "arxiv_id": "2606.28354",
            "version": 1,
            "title": "Generating in the Limit",
            "authors": ["A"],
            "abstract": "x",
            "categories": ["cs.CL"],
            "announce_type": "new",
            "announced": "2026-06-30",
        }
        db.execute(
            "INSERT INTO papers VALUES ('2606.28354v1', '2026-06-30', ?, '2026-06-30T00:00:00')", (json.dumps(paper),)
        )
        db.execute(
            "INSERT INTO ratings VALUES ('me', '2606.28354', 1, ?, 'cli', '2026-06-30T00:00:00')", (json.dumps(paper),)
        )
    with store_module.Store(state) as store:
        assert store.rating_of("me", "2606.28354") == 1
        found = store.latest_papers(["2606.28354"])["2606.28354"]
        assert found.id == "2606.28354" and found.source == "arXiv"
        assert (
            found.abs_url == "https://arxiv.org/abs/2606.28354"
            and found.html_url == "https://arxiv.org/html/2606.28354v1"
        )


def test_a_rating_link_names_a_doi_and_reads_back_as_it() -> None:
    from digest.links import Links
    from digest.models import Paper
    from digest.sources.rxiv import pages_of

    source, pages = pages_of(IMMUNITY, 2)
    assert source == "medRxiv" and pages.abstract == f"https://www.medrxiv.org/content/{IMMUNITY}v2"
    paper = Paper.model_validate(
        {
            **MEDRXIV[1],
            "id": IMMUNITY,
            "version": 2,
            "authors": [],
            "categories": [],
            "announce_type": "replace",
            "announced": "2020-09-11",
            "source": source,
            "links": pages,
        }
    )
    links = Links("https://digest.example.org", "s" * 32)
    token = links.read(links.rate("me", paper, 1).rsplit("/", 1)[1])
    assert token is not None and (token.a, token.v, token.r) == (IMMUNITY, 2, 1)
    assert paper.anchor == "p-10.1101-2020.09.09.20191205"
