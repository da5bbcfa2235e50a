"""bioRxiv and medRxiv beside arXiv: a loopback server speaking their API's format (tests/servers.py's RxivAPI,
serving the real records of tests/fixtures/rxiv/), and digest run as a user runs it."""

from __future__ import annotations

import datetime as dt
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
# Whole real pages of /details (see fixtures/SOURCES.md): 50 records each, every key the API writes.
BIORXIV_PAGE = json.loads((RXIV / "biorxiv_details_2020-01-01_2022-12-31_cursor0.json").read_text())
MEDRXIV_PAGE = json.loads((RXIV / "medrxiv_details_2020-01-01_2022-12-31_cursor0.json").read_text())
LOOKUPS = [
    record
    for name in ("findpapers_biorxiv_doi_lookups.json", "findpapers_medrxiv_doi_lookups.json")
    for lookup in json.loads((RXIV / name).read_text())
    for record in lookup["raw_response"]["collection"]
]
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
    assert api.asked("biorxiv") == []  # a medrxiv.org link names its server: bioRxiv is not asked
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
    from digest.sources.medrxiv import MedrxivSource

    source, pages = MedrxivSource.label, MedrxivSource.pages(IMMUNITY, 2)
    assert pages.abstract == f"https://www.medrxiv.org/content/{IMMUNITY}v2"
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


def _stored(tmp_path: Path, state: str = "state.sqlite3") -> dict[str, dict[str, Any]]:
    """The papers the state holds, by key."""
    with sqlite3.connect(tmp_path / state) as db:
        return {key: json.loads(data) for key, data in db.execute("SELECT key, data FROM papers")}


def _last_read(tmp_path: Path, server: str, state: str = "state.sqlite3") -> str | None:
    with sqlite3.connect(tmp_path / state) as db:
        row = db.execute("SELECT last_announced FROM feeds WHERE url LIKE ?", (f"%/details/{server}",)).fetchone()
    return row[0] if row else None


def _subjects(records: list[dict[str, Any]]) -> list[str]:
    return sorted({record["category"] for record in records})


def _digest_text(tmp_path: Path) -> str:
    [eml] = (tmp_path / "outbox" / "me").glob("*.eml")
    email = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert isinstance(email, EmailMessage)
    body = email.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


MARKUP = re.compile(r"O_LI|C_LI|SCPLOW|O_ST_ABS|C_ST_ABS|TEXTBOX|\{beta\}|\{\+/-\}|\{middle dot\}|\[&[gl]e;\]")


def test_real_records_read_as_plain_text_and_keep_every_sign_that_is_text() -> None:
    from digest.sources.rxiv_page import Record

    records = [*BIORXIV_PAGE["collection"], *MEDRXIV_PAGE["collection"], *LOOKUPS]
    assert len(records) == 116 and all(len(r) == 15 and r["funder"] == "NA" for r in records)
    read = {(r["doi"], r["version"]): Record.model_validate(r) for r in records}
    for raw in records:
        record = read[raw["doi"], raw["version"]]
        assert not MARKUP.search(record.abstract + record.title), record.doi
        # "p<.001", ">35kg/m2", ">900 datasets": what is not markup stays, every sign of it.
        assert (record.abstract.count("<"), record.abstract.count(">")) == (
            raw["abstract"].count("<"),
            raw["abstract"].count(">"),
        )
    assert read["10.1101/2019.12.26.19014274", "1"].abstract.startswith("Objectives: To evaluate whether")
    assert (
        "Methods: This will be a diagnostic accuracy test study." in read["10.1101/2019.12.26.19014274", "1"].abstract
    )
    assert read["10.1101/19004184", "3"].abstract.startswith("BACKGROUND: Analysis of sequenced genomes")
    assert read["10.1101/066688", "5"].abstract.startswith("When emerging pathogens")  # its heading "ABSTRACT" gone
    assert "(age: 67±8, 57% male, MMSE: 21±5)" in read["10.1101/19005512", "2"].abstract
    assert "25·8% were mixed infections" in read["10.1101/2019.12.28.19015941", "1"].abstract
    assert "blood pressure of ≥ 140/90 mmHg" in read["10.1101/2019.12.28.19015628", "1"].abstract
    assert "(BMD T-score≤-2.5)" in read["10.1101/2019.12.30.19016154", "1"].abstract
    assert "(boys: β=0.83, 95%CI:0.65, 1.02;" in read["10.1101/19003665", "2"].abstract
    assert "Treg includes DCreg, ILCreg, TGFβ CD4 T cell" in read["10.1101/006965", "13"].abstract
    assert read["10.1101/2019.12.29.19016113", "1"].abstract.endswith(
        "Highlights: Speech-sound changes elicit comparable mismatch fields in dyslexics and controls. Mismatch fields "
        "(MMFs) to vowel identity and duration changes are left-lateralized. Stronger left MMFs are associated with "
        "better verbal working memory across groups. Stronger right MMFs are associated with better technical reading "
        "in dyslexics. Low-level neural speech discrimination is associated with reading-related skills."
    )
    assert (
        "What this paper adds. What is already known: Like simulation, intuitively we know"
        in read["10.1101/2019.12.31.19016170", "1"].abstract
    )
    assert "Key points. Question: How did the separate mechanisms" in read["10.1101/2020.01.02.20016329", "1"].abstract
    assert (
        "Research in context. Evidence before this study: We searched PubMed"
        in read["10.1101/2019.12.31.19016220", "1"].abstract
    )
    assert "Results: 3131 respondents were included" in read["10.1101/2020.01.06.19015735", "1"].abstract
    assert read["10.1101/2022.11.18.516120", "1"].abstract.startswith("Background: Drug-resistant focal epilepsy")


def test_only_real_markup_is_taken_out_of_a_record() -> None:
    """The issue's sentence in a real record: the old stripper took "<65 years (p<0.05) than in those aged >" for a
    tag and left "aged =65"."""
    from digest.sources.rxiv_page import Record

    real = MEDRXIV_PAGE["collection"][0]
    sentence = "Mortality was higher in those aged <65 years (p<0.05) than in those aged >=65."
    record = Record.model_validate(
        {
            **real,
            "title": "<i>Plasmodium</i> in CO<sub>2</sub>-rich air, and <s> tokens",
            "abstract": f"{sentence}<br/>Second paragraph &amp; a <b>bold</b> claim.",
        }
    )
    assert record.abstract == f"{sentence} Second paragraph & a bold claim."
    assert record.title == "Plasmodium in CO2-rich air, and <s> tokens"


def test_real_pages_as_the_api_serves_them_every_record_read_and_the_digest_in_plain_words(
    tmp_path, feed_server, fake_llm, write_config
):
    """Two real pages of /details: all 15 keys, `funder` in `messages`, versions up to 13, and bioRxiv's page all
    replacements; a record with no abstract or authors (null: made here on a real record) is still a paper."""
    (_, llm) = fake_llm
    biorxiv, medrxiv = list(BIORXIV_PAGE["collection"]), list(MEDRXIV_PAGE["collection"])
    medrxiv[-1] = {**medrxiv[-1], "abstract": None, "authors": None}  # judged on its title
    api = RxivAPI(records={"biorxiv": biorxiv, "medrxiv": medrxiv})
    with serve_asgi(api) as url:
        config = configure(tmp_path, feed_server, fake_llm, url)
        llm.judge = lambda title, abstract: (
            (True, 9)
            if re.search(r"Cochrane|pathogens encounter", abstract) or title == medrxiv[-1]["title"]
            else (False, 2)
        )
        del config["arxiv"]
        config["biorxiv"] = {"categories": _subjects(biorxiv), "announce_types": ["new", "replace"], "api_url": url}
        config["medrxiv"] = {"categories": _subjects(medrxiv), "announce_types": ["new", "replace"], "api_url": url}
        path = write_config(config)
        replacements = run_cli("run", "--dry-run", "--config", str(path))
        config["biorxiv"]["announce_types"] = config["medrxiv"]["announce_types"] = ["new"]
        only_new = run_cli("run", "--dry-run", "--config", str(write_config(config)))
        config["biorxiv"]["announce_types"] = config["medrxiv"]["announce_types"] = ["new", "replace"]
        run = run_cli("run", "--config", str(write_config(config)))
    assert replacements.returncode == 0, replacements.stdout + replacements.stderr
    dois = {"biorxiv": len({r["doi"] for r in biorxiv}), "medrxiv": len({r["doi"] for r in medrxiv})}
    assert dois == {"biorxiv": 40, "medrxiv": 49}
    assert "fetched      89 papers (56 replace, 33 new)" in replacements.stdout  # bioRxiv's 40 are all replace
    assert "    bioRxiv    40 papers, 2 requests" in replacements.stdout
    assert "    bioRxiv    0 papers, 2 requests" in only_new.stdout  # a page of replacements only
    assert "left out     56 replace" in only_new.stdout
    assert run.returncode == 0, run.stdout + run.stderr
    assert "could not be read" not in run.stdout
    stored = _stored(tmp_path)
    assert len(stored) == dois["biorxiv"] + dois["medrxiv"]
    assert stored["10.1101/006965v13"]["announce_type"] == "replace"
    assert not any(MARKUP.search(p["abstract"]) for p in stored.values())
    untold = stored[f"{medrxiv[-1]['doi']}v{medrxiv[-1]['version']}"]
    assert untold["abstract"] == "" and untold["authors"] == []
    text = _digest_text(tmp_path)
    assert "Objectives: To evaluate whether or not systematic reviewers can use Cochrane Central Register" in text
    assert "When emerging pathogens encounter new host species" in text and "SCPLOW" not in text
    assert medrxiv[-1]["title"] in text


# A medRxiv paper under the prefix both servers have used since December 2025: the example DOI, on the real
# record of another medRxiv paper (no real API record with that prefix is public).
NEW_MEDRXIV = "10.64898/2026.03.15.26348338"


def test_a_doi_alone_names_no_server_its_page_the_state_or_the_api_does(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    rxiv_url, api = rxiv
    paper = {**MEDRXIV_PAGE["collection"][0], "doi": NEW_MEDRXIV, "version": "1"}  # its "server" is "medRxiv"
    # Listed under both servers' paths, as by an API that looks a DOI up whatever server the path names: the
    # record's own "server" decides.
    api.records["medrxiv"].append(paper)
    api.records["biorxiv"].append(paper)
    path = write_config(configure(tmp_path, feed_server, fake_llm, rxiv_url))
    library = tmp_path / "library.bib"
    library.write_text(
        f"@article{{new, title = {{A new medRxiv paper}}, abstract = {{Its abstract.}}, doi = {{{NEW_MEDRXIV}}}}}\n"
        f"@article{{paged, title = {{KCNQ2/3}}, abstract = {{Its abstract.}}, doi = {{{KCNQ}}},\n"
        f"  url = {{https://www.biorxiv.org/content/{KCNQ}v1}}}}\n"
    )
    imported = run_cli("import", str(library), "--config", str(path))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "2 entries, 2 papers rated (2 new" in imported.stdout
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        rated = {r[0]: json.loads(r[1]) for r in db.execute("SELECT paper_id, paper FROM ratings")}
    assert rated[NEW_MEDRXIV]["source"] == "medRxiv"
    assert rated[NEW_MEDRXIV]["links"]["abstract"] == f"https://www.medrxiv.org/content/{NEW_MEDRXIV}v1"
    assert rated[KCNQ]["source"] == "bioRxiv" and rated[KCNQ]["links"]["abstract"].startswith("https://www.biorxiv")
    # The DOI alone was asked of both servers, bioRxiv first; the entry with its biorxiv.org page of neither.
    assert api.asked("biorxiv") == [f"/details/biorxiv/{NEW_MEDRXIV}/na/json"]
    assert api.asked("medrxiv") == [f"/details/medrxiv/{NEW_MEDRXIV}/na/json"]

    again = run_cli("rate", NEW_MEDRXIV, "down", "--config", str(path))  # pasted alone: the state knows it now
    assert again.returncode == 0, again.stderr
    assert len(api.requests) == 2
    pasted = run_cli("rate", f"https://www.medrxiv.org/content/{NEW_MEDRXIV}v1", "up", "--config", str(path))
    assert pasted.returncode == 0 and len(api.requests) == 2


def test_a_withdrawn_version_is_no_paper_to_read_and_a_digested_paper_withdrawn_is_not_sent_again(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    """No real withdrawn record is public: the `type` of real records is set here as the API writes a withdrawal,
    "withdrawn" on bioRxiv and "WITHDRAWN" on medRxiv."""
    (rxiv_url, api), (_, llm) = rxiv, fake_llm
    api.page_size = 30
    api.records = {"medrxiv": [MEDRXIV[0]], "biorxiv": [{**BIORXIV[1], "type": "withdrawn"}]}
    config = configure(tmp_path, feed_server, fake_llm, rxiv_url)
    config["medrxiv"]["announce_types"] = ["new", "replace"]
    path = write_config(config)
    first = run_cli("run", "--config", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"warning: bioRxiv: 1 paper withdrawn by the authors, left out: {KCNQ}" in first.stdout
    assert f"{KCNQ}v1" not in _stored(tmp_path) and f"{IMMUNITY}v1" in _stored(tmp_path)
    assert "Evolution of immunity to SARS-CoV-2" in _digest_text(tmp_path)
    judged = llm.requests

    api.records["medrxiv"] = [MEDRXIV[0], {**MEDRXIV[1], "type": "WITHDRAWN"}]  # its second version withdraws it
    second = run_cli("run", "--config", str(path))
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"warning: medRxiv: 1 paper withdrawn by the authors, left out: {IMMUNITY}" in second.stdout
    assert f"{IMMUNITY}v2" not in _stored(tmp_path) and llm.requests == judged  # neither judged nor sent


def test_an_empty_page_before_the_total_is_asked_again_and_if_it_stays_empty_said(
    tmp_path, feed_server, fake_llm, rxiv, write_config
):
    rxiv_url, api = rxiv
    api.records["biorxiv"] = [BIORXIV[1], BIORXIV[0]]
    api.no_records = {1: 1}  # the page at record 1 comes back empty once, then with its record
    config = configure(tmp_path, feed_server, fake_llm, rxiv_url)
    del config["medrxiv"]
    run = run_cli("run", "--config", str(write_config(config)))
    assert run.returncode == 0, run.stdout + run.stderr
    pages = api.asked("biorxiv")
    assert len(pages) == 3 and pages[1] == pages[2] and pages[1].endswith("/1/json")  # asked again
    assert {f"{KCNQ}v1", f"{MACAQUES}v1"} <= set(_stored(tmp_path)) and "ended early" not in run.stdout

    api.no_records = {1: 99}  # and now for good
    config["state"] = "again.sqlite3"
    again = run_cli("run", "--config", str(write_config(config)))
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(
        r"warning: bioRxiv: the listing from (\S+) to \S+ ended early, at record 1 of 2: the page at record 1 had no "
        r"records, 3 times; the next run reads it again",
        again.stdout,
    )
    stored = _stored(tmp_path, "again.sqlite3")
    assert f"{KCNQ}v1" in stored and f"{MACAQUES}v1" not in stored
    assert _last_read(tmp_path, "biorxiv", "again.sqlite3") == str(dt.date.today() - dt.timedelta(days=1))


def test_a_page_with_no_total_reads_on_while_pages_are_full(tmp_path, feed_server, fake_llm, rxiv, write_config):
    rxiv_url, api = rxiv
    api.records["biorxiv"] = [BIORXIV[1], BIORXIV[0], {**MEDRXIV_PAGE["collection"][0], "category": "neuroscience"}]
    api.lie = "no total"  # `total: null` on every page
    config = configure(tmp_path, feed_server, fake_llm, rxiv_url)
    del config["medrxiv"]
    run = run_cli("run", "--config", str(write_config(config)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "    bioRxiv    3 papers (3 new), 4 requests" in run.stdout  # three full pages, then an empty one
    assert "ended early" not in run.stdout


def test_an_api_that_lies_ends_its_listing_at_once_and_holds_up_no_other_source(
    tmp_path, feed_server, fake_llm, write_config
):
    """The issue's API: a total of "10000" on every page and the same three records whatever the cursor. It cost 300
    requests in 300 s before, and the day's arXiv papers were stored and never judged nor sent."""
    (_, llm), records = fake_llm, BIORXIV_PAGE["collection"][:3]
    api = RxivAPI(records={"biorxiv": records}, lie="repeats")
    with serve_asgi(api) as url:
        config = configure(tmp_path, feed_server, fake_llm, url, max_run_minutes=1)
        del config["medrxiv"]
        config["biorxiv"] = {"categories": _subjects(records), "announce_types": ["new", "replace"], "api_url": url}
        run = run_cli("run", "--config", str(write_config(config)))
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(api.requests) == 2
        assert re.search(
            r"warning: bioRxiv: the listing from \S+ to \S+ ended early, at record 3 of 10,000: the page at record 3 "
            r"brought only records of the pages before it; the next run reads it again",
            run.stdout,
        )
        assert llm.requests == ARXIV_DAY + 3 and "Traceback" not in run.stderr
        assert "Generating in the Limit" in _digest_text(tmp_path)  # the arXiv papers went out

        api.lie, api.page_size = "cursor", 1  # every page says it is the one at cursor 0
        api.requests.clear()
        config["state"] = "again.sqlite3"
        again = run_cli("run", "--config", str(write_config(config)))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(api.requests) == 2
    assert (
        "ended early, at record 1 of 3: the API answered the page at record 1 with the one at record 0" in again.stdout
    )


def test_a_listing_takes_at_most_a_quarter_of_the_run(tmp_path, feed_server, fake_llm, write_config):
    """A listing that goes on (a record a page, a request a second): cut after a quarter of max_run_minutes (here
    0.25 minutes, so 3.75 s), said, and the arXiv papers judged and sent in the time left."""
    records = BIORXIV_PAGE["collection"]
    api = RxivAPI(records={"biorxiv": records}, page_size=1)
    with serve_asgi(api) as url:
        config = configure(tmp_path, feed_server, fake_llm, url, max_run_minutes=0.25)
        del config["medrxiv"]
        config["biorxiv"] = {"categories": _subjects(records), "announce_types": ["new", "replace"], "api_url": url}
        run = run_cli("run", "--config", str(write_config(config)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(
        r"warning: bioRxiv: the listing from \S+ to \S+ ended early, at record \d+ of 50: reading it took longer than "
        r"4 s, a quarter of max_run_minutes; the next run reads it again",
        run.stdout,
    )
    assert len(api.requests) < len(records)
    assert "Generating in the Limit" in _digest_text(tmp_path)
