"""The reader teaches the digest: `digest rate`, `ratings`, `import`, the examples in the prompt, and `eval`, each run
as a user runs it, against the loopback feed, export API and LLM servers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from digest.errors import UsageError
from digest.sources.arxiv_parse import parse_api_page
from digest.taste.ratings import PaperRef, find_paper, parse_paper
from tests.helpers import API_PAGE, FIXTURES, base_config, run_cli, run_on_terminal, write_bibtex_library
from tests.servers import ApiServer, FakeLLM, FeedServer

LIBRARY = FIXTURES / "library"
API_PAPERS, _ = parse_api_page(API_PAGE.read_bytes(), url="fixture", categories=["cs.CL"])
BY_ID = {p.id: p for p in API_PAPERS}


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("2606.29563", PaperRef("2606.29563", None)),
        ("2606.29563v2", PaperRef("2606.29563", 2)),
        ("arXiv:2606.29563", PaperRef("2606.29563", None)),
        ("  arxiv: 2606.29563v1 ", PaperRef("2606.29563", 1)),
        ("https://arxiv.org/abs/2606.29563", PaperRef("2606.29563", None)),
        ("https://arxiv.org/abs/2606.29563v3", PaperRef("2606.29563", 3)),
        ("https://arxiv.org/pdf/2606.29563v1", PaperRef("2606.29563", 1)),
        ("http://arxiv.org/pdf/2606.29563v1.pdf", PaperRef("2606.29563", 1)),
        ("https://www.arxiv.org/html/2606.29563v2/", PaperRef("2606.29563", 2)),
        ("0704.0001", PaperRef("0704.0001", None)),
        ("hep-th/9901001", PaperRef("hep-th/9901001", None)),
        ("https://arxiv.org/abs/hep-th/9901001v2", PaperRef("hep-th/9901001", 2)),
        ("math.AP/0601001", PaperRef("math/0601001", None)),
    ],
)
def test_a_paper_as_readers_paste_it(pasted: str, expected: PaperRef) -> None:
    assert parse_paper(pasted) == expected


@pytest.mark.parametrize("pasted", ["2606.295", "hello", "https://example.org/abs/2606.29563", "2606.29563v", ""])
def test_what_is_not_a_paper_is_a_usage_error(pasted: str) -> None:
    with pytest.raises(UsageError, match="is not an arXiv, bioRxiv or medRxiv paper"):
        parse_paper(pasted)


def test_an_id_inside_a_longer_text_counts_only_where_it_says_arxiv() -> None:
    assert find_paper("arXiv preprint arXiv:2606.28667") == PaperRef("2606.28667", None)
    assert find_paper("10.48550/arXiv.2606.28354") == PaperRef("2606.28354", None)
    assert find_paper("http://arxiv.org/abs/2606.28823v1") == PaperRef("2606.28823", 1)
    assert find_paper("10.1162/neco.1997.9.8.1735") is None
    assert find_paper("pages 2606.1234 to 2606.1250") is None


@dataclass
class Servers:
    feed: FeedServer
    api: ApiServer
    llm: FakeLLM
    feed_url: str
    api_url: str
    llm_url: str


@pytest.fixture
def servers(feed_server, export_api, fake_llm) -> Iterator[Servers]:
    (feed_url, feed), (api_url, api), (llm_url, llm) = feed_server, export_api, fake_llm
    yield Servers(feed, api, llm, feed_url, api_url, llm_url)


@pytest.fixture
def digest_cli(
    tmp_path: Path, servers: Servers, write_config: Callable[[dict[str, Any]], Path]
) -> Callable[..., Callable[..., Any]]:
    """A config for the loopback servers (with `profiles`, if given); returns `digest ...` run with it."""

    def configure(**overrides: Any) -> Callable[..., Any]:
        config = base_config(tmp_path, servers.feed_url, servers.llm_url, **overrides)
        config["arxiv"]["api_url"] = servers.api_url
        path = write_config(config)
        return lambda *args: run_cli(*args, "--config", str(path))

    return configure


def _ratings(digest: Callable[..., Any], *profile: str) -> list[dict[str, Any]]:
    done = digest("ratings", "--json", *profile)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.long
def test_rate_looks_up_unknown_papers_once_and_refuses_what_it_cannot_use(digest_cli, servers) -> None:
    digest = digest_cli()
    done = digest("rate", "https://arxiv.org/abs/2606.28354v1", "up")
    assert done.returncode == 0, done.stderr
    assert "more like this: 2606.28354" in done.stdout
    assert [r["id_list"] for r in servers.api.requests] == ["2606.28354"]  # the state had no papers yet
    assert digest("rate", "arXiv:2606.28457", "down").returncode == 0

    for args, message in [
        (("2606.99999", "up"), "arXiv does not know the paper 2606.99999"),
        (("2606.28354", "sideways"), "'sideways' is not a rating"),
        (("2606.28354", "up", "--profile", "mee"), "there is no profile 'mee'"),
        (("not-a-paper", "up"), "'not-a-paper' is not an arXiv, bioRxiv or medRxiv paper"),
    ]:
        refused = digest("rate", *args)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr and "Traceback" not in refused.stderr

    given = _ratings(digest)
    assert [(r["paper"], r["rating"], r["source"]) for r in given] == [
        ("2606.28457", -1, "cli"),
        ("2606.28354", 1, "cli"),
    ]
    assert given[1]["title"] == BY_ID["2606.28354"].title and given[1]["rated_at"]

    assert digest("rate", "2606.28457", "up").returncode == 0  # changed
    assert digest("rate", "2606.28354", "clear").returncode == 0  # removed
    assert [(r["paper"], r["rating"]) for r in _ratings(digest)] == [("2606.28457", 1)]
    assert "had no rating" in digest("rate", "2606.28354", "clear").stdout
    listing = digest("ratings")
    assert "1 rating (1 up, 0 down)" in listing.stdout and "2606.28457" in listing.stdout


@pytest.mark.long
def test_import_takes_arxiv_papers_from_zotero_bibtex_csl_json_and_text_and_reports_the_rest(
    digest_cli, servers, tmp_path
) -> None:
    digest = digest_cli()
    zotero = digest("import", str(LIBRARY / "zotero.bib"))
    assert zotero.returncode == 0, zotero.stderr
    assert "6 entries, 4 papers rated (4 new, 0 changed, 0 unchanged)" in zotero.stdout
    assert (
        "2 entries name no arXiv, bioRxiv or medRxiv paper, left out: hochreiter_long_1997, jurafsky_speech_2009"
        in (zotero.stdout)
    )
    assert servers.api.requests == []  # every entry had its title and abstract

    mixed = digest("import", str(LIBRARY / "mixed.bib"), "--as", "down")
    assert mixed.returncode == 0, mixed.stderr
    assert "4 papers rated (4 new" in mixed.stdout
    assert "left out: jumper_highly_2021, papineni_bleu_2002" in mixed.stdout
    assert "1 id is unknown to their sources, left out: 2606.99999" in mixed.stdout
    # One request for all the entries without an abstract.
    assert [sorted(r["id_list"].split(",")) for r in servers.api.requests] == [
        ["2606.28524", "2606.28667", "2606.28823", "2606.28876", "2606.99999"]
    ]

    csl = digest("import", str(LIBRARY / "zotero.json"))
    assert csl.returncode == 0, csl.stderr
    assert "3 papers rated (3 new" in csl.stdout and "LSTM1997" in csl.stdout

    text = tmp_path / "reading-list.txt"
    text.write_text("# papers from the reading group\n2606.29118\nhttps://arxiv.org/pdf/2606.29734v1\n\nnot a paper\n")
    plain = digest("import", str(text))
    assert plain.returncode == 0, plain.stderr
    assert "2 papers rated (2 new" in plain.stdout and "left out: line 5" in plain.stdout

    before = _ratings(digest)
    assert len(before) == 13
    by_paper = {r["paper"]: r for r in before}
    assert by_paper["2606.28524"]["rating"] == -1 and by_paper["2606.28524"]["title"] == BY_ID["2606.28524"].title
    assert by_paper["2606.28354"]["title"] == "Generating in the Limit with Infinitely Many Hallucinations"
    assert by_paper["2606.28823"]["version"] == 1
    assert {r["source"] for r in before} == {"import"}

    for again in ("zotero.bib", "zotero.json"):
        done = digest("import", str(LIBRARY / again))
        assert "0 new, 0 changed" in done.stdout
    assert "0 new, 0 changed, 4 unchanged" in digest("import", str(LIBRARY / "mixed.bib"), "--as", "down").stdout
    assert _ratings(digest) == before  # re-importing changes nothing, not even the dates

    # A rating given by hand is the reader's word: an import does not override it.
    assert digest("rate", "2606.28354", "down").returncode == 0
    digest("import", str(LIBRARY / "zotero.bib"))
    assert {r["paper"]: r["rating"] for r in _ratings(digest)}["2606.28354"] == -1

    missing = digest("import", str(tmp_path / "nowhere.bib"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_latex_in_a_bibtex_export_is_decoded(tmp_path) -> None:
    from digest.taste.library import library_parts

    def read_library(path: Path) -> list[Any]:
        return [seed for part in library_parts(path) for seed in part.seeds]

    seeds = {s.ref.id: s for s in read_library(LIBRARY / "zotero.bib")}
    assert "perplexity rises by 201% at 4x" in (seeds["2606.28560"].abstract or "")
    mixed = {s.ref.id: s for s in read_library(LIBRARY / "mixed.bib")}
    assert mixed["2606.28524"].authors[0] == "Pamela D. Rivière"


def _system_prompts_for(llm: FakeLLM, title: str) -> list[str]:
    return [m[0]["content"] for m in llm.prompts if json.loads(m[-1]["content"])["title"] == title]


def test_ratings_are_examples_in_the_profiles_prompt_and_rated_papers_are_never_shown_again(
    digest_cli, servers, small_day, tmp_path
) -> None:
    profiles = [
        {"name": "me", "email": ["me@example.org"], "interests": "Language models and their evaluation."},
        {"name": "other", "email": ["other@example.org"], "interests": "Language models, as a linguist sees them."},
    ]
    digest = digest_cli(profiles=profiles)
    several = digest("rate", "2606.28354", "up")
    assert several.returncode == 2 and "several profiles" in several.stderr
    assert digest("rate", "2606.28354", "up", "--profile", "me").returncode == 0
    assert digest("rate", "2606.28548", "down", "--profile", "me").returncode == 0
    assert _ratings(digest, "--profile", "other") == []

    run = digest("run")
    assert run.returncode == 0, run.stdout + run.stderr
    liked, disliked = BY_ID["2606.28354"].title, BY_ID["2606.28548"].title
    some_paper = BY_ID["2606.28524"].title
    prompts = _system_prompts_for(servers.llm, some_paper)
    mine = [p for p in prompts if "their evaluation" in p]
    others = [p for p in prompts if "as a linguist" in p]
    assert len(mine) == 1 and len(others) == 1
    assert "<<<RATED" in mine[0] and "RATED>>>" in mine[0]
    assert json.dumps(liked) in mine[0] and json.dumps(disliked) in mine[0]
    assert mine[0].index(json.dumps(disliked)) < mine[0].index(json.dumps(liked))  # newest first
    assert '"rating": "more like this"' in mine[0] and '"rating": "not for me"' in mine[0]
    assert "RATED" not in others[0] and liked not in others[0]
    # The rated papers were not asked about for "me", only for "other".
    assert all("their evaluation" not in p for p in _system_prompts_for(servers.llm, liked))
    assert len(_system_prompts_for(servers.llm, liked)) == 1

    outbox = tmp_path / "outbox"
    mine_html = next((outbox / "me").glob("*.html")).read_text()
    other_html = next((outbox / "other").glob("*.html")).read_text()
    assert "Generating in the Limit" not in mine_html and "Generating in the Limit" in other_html
    mine_text = message_from_bytes(next((outbox / "me").glob("*.eml")).read_bytes(), policy=policy.default)
    body = mine_text.get_body(preferencelist=("plain",))
    assert body is not None and "You have rated 2 papers for this digest" in body.get_content()
    assert "digest rate" in body.get_content() and "--profile me" in body.get_content()


@pytest.mark.long
def test_a_new_rating_rereads_only_papers_not_yet_in_a_digest(digest_cli, servers, small_day) -> None:
    digest = digest_cli()
    assert digest("rate", "2606.28354", "up").returncode == 0
    assert digest("preview").returncode == 0
    after_preview = servers.llm.requests
    assert after_preview == small_day - 1  # the feed's papers but the rated one
    assert digest("preview").returncode == 0
    assert servers.llm.requests == after_preview  # the examples are part of the cache key: cached

    assert digest("rate", "2606.28457", "down").returncode == 0
    rethreshold = digest("preview", "--min-score", "4")  # free, as the README says: cached verdicts only
    assert rethreshold.returncode == 0 and servers.llm.requests == after_preview, rethreshold.stdout
    assert f"{small_day - 2} papers not judged yet (a run, or a preview without --min-score)" in rethreshold.stdout
    run = digest("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert servers.llm.requests == after_preview + small_day - 2  # a new example: every paper not yet in a digest

    assert digest("rate", "2606.28524", "up").returncode == 0
    again = digest("run")
    assert again.returncode == 0
    assert servers.llm.requests == after_preview + small_day - 2  # everything is in a digest: nothing is asked again


def test_a_new_version_of_a_liked_paper_is_shown_marked_and_a_disliked_one_is_not(
    digest_cli, servers, tmp_path
) -> None:
    digest = digest_cli(
        arxiv={
            "categories": ["cs.CL"],
            "announce_types": ["new", "cross", "replace"],
            "feed_url": f"{servers.feed_url}/rss",
            "api_url": servers.api_url,
            "max_retry_seconds": 1,
        }
    )
    library = tmp_path / "saved.bib"
    library.write_text(
        "@misc{a, title = {Less is More: Lightweight Prompt Compression}, eprint = {2606.20571v1},"
        " archiveprefix = {arXiv}, abstract = {We compress prompts for question answering with language models.}}\n"
        "@misc{b, title = {Investigating Linguistic Steering}, eprint = {2606.20572v2}, archiveprefix = {arXiv},"
        " abstract = {Adjectives steer language models.}}\n"
    )
    assert digest("import", str(library)).returncode == 0
    assert digest("rate", "2606.20572", "down").returncode == 0
    assert digest("run").returncode == 0
    html = next((tmp_path / "outbox" / "me").glob("*.html")).read_text()
    assert "Less is More: Lightweight Prompt Compression" in html
    assert "New version of a paper you liked (v2)" in html
    assert "Investigating Linguistic Steering" not in html


@pytest.mark.long
def test_eval_figures_match_counts_by_hand_and_no_example_leaks_the_judged_paper(digest_cli, servers, tmp_path) -> None:
    digest = digest_cli()
    up, down = API_PAPERS[:15], API_PAPERS[15:30]
    for papers, word in ((up, "up"), (down, "down")):
        listing = tmp_path / f"{word}.txt"
        listing.write_text("\n".join(p.id for p in papers))
        assert digest("import", str(listing), "--as", word).returncode == 0

    done = digest("eval", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    # The loopback LLM scores 8 when the abstract mentions "language model", else 2; min_score is 6.
    picked = {p.id: "language model" in p.abstract.lower() for p in up + down}
    tp = sum(picked[p.id] for p in up)
    fp = sum(picked[p.id] for p in down)
    fn, tn = len(up) - tp, len(down) - fp
    assert (figures["tp"], figures["fp"], figures["fn"], figures["tn"]) == (tp, fp, fn, tn)
    assert figures["papers"] == 30 and figures["folds"] == 5
    assert figures["precision"] == pytest.approx(tp / (tp + fp))
    assert figures["recall"] == pytest.approx(tp / (tp + fn))
    assert figures["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert figures["without_examples"]["tp"] == tp
    assert figures["requests"] == 60 and figures["cost_usd"] > 0  # each paper with and without examples

    for messages in servers.llm.prompts:
        system, judged = messages[0]["content"], json.loads(messages[-1]["content"])["title"]
        assert f'"title": {json.dumps(judged, ensure_ascii=False)}' not in system  # never its own rating
    with_examples = [m[0]["content"] for m in servers.llm.prompts if "<<<RATED" in m[0]["content"]]
    assert len(with_examples) == 30

    again = json.loads(digest("eval", "--json").stdout)
    assert again["requests"] == 0 and again["cached"] == 60 and again["tp"] == tp  # cached apart, costs nothing
    other_model = json.loads(digest("eval", "--json", "--model", "gpt-4o").stdout)
    assert other_model["model"] == "gpt-4o" and other_model["requests"] == 60

    shown = digest("eval")
    assert shown.returncode == 0 and "with examples" in shown.stdout and "interests only" in shown.stdout


def test_eval_with_too_few_ratings_says_how_many_more_to_rate(digest_cli) -> None:
    digest = digest_cli()
    assert digest("rate", "2606.28354", "up").returncode == 0
    done = digest("eval")
    assert done.returncode == 1
    assert "1 paper rated up and 0 rated down" in done.stderr
    assert "rate 2 more as up, 3 more as down" in done.stderr and "Traceback" not in done.stderr


def test_eval_that_could_judge_no_paper_exits_1_and_says_why(digest_cli, servers, tmp_path) -> None:
    """Every request answered 500: no figure means anything, so no figures and exit 0 would be a lie."""
    llm = base_config(tmp_path, servers.feed_url, servers.llm_url)["llm"] | {"max_attempts": 1}
    digest = digest_cli(llm=llm)
    for papers, word in ((API_PAPERS[:3], "up"), (API_PAPERS[3:6], "down")):
        listing = tmp_path / f"{word}.txt"
        listing.write_text("\n".join(p.id for p in papers))
        assert digest("import", str(listing), "--as", word).returncode == 0
    servers.llm.random_failures = {"500": 1.0}
    done = digest("eval")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no rated paper could be judged: the LLM failed on all 6 after 12 requests (the last: " in done.stderr
    assert "Traceback" not in done.stderr and "precision" not in done.stdout


def test_what_a_library_file_says_reaches_the_terminal_as_text_only(digest_cli, tmp_path) -> None:
    """An entry key and a title with escape sequences (clear the screen, set the window title) were printed raw by
    `digest import` and `digest ratings`. Everything printed goes through one filter at the output boundary."""
    digest = digest_cli()
    clear, title = "\x1b[2J\x1b[H", "\x1b]0;owned\x07"
    library = tmp_path / "hostile.bib"
    library.write_text(
        f"@article{{key{clear}x,\n  title = {{A title{title} here}},\n  abstract = {{An abstract{clear}.}},\n"
        "  eprint = {2606.28354},\n  archiveprefix = {arXiv},\n}\n"
        f"@book{{not{clear}arxiv,\n  title = {{A book}},\n}}\n"
    )
    imported = digest("import", str(library))
    assert imported.returncode == 0, imported.stderr
    assert "notarxiv" in imported.stdout.replace("[2J[H", "")  # named, without its escapes
    listing = digest("ratings")
    for printed in (imported.stdout, imported.stderr, listing.stdout, listing.stderr):
        assert "\x1b" not in printed and "\x07" not in printed, repr(printed)


@pytest.mark.long
def test_a_large_library_is_read_in_chunks_with_progress_and_a_huge_field_costs_only_that_field(
    digest_cli, tmp_path
) -> None:
    """100,000 entries were killed after 300 s at 526 MB with nothing printed; one 50 MB field was still being
    parsed after 4.5 minutes. (The 100,000-entry figures are in benchmarks/library.py.)"""

    library = tmp_path / "large.bib"
    write_bibtex_library(library, 10_000, huge_field=50_000_000)
    config = tmp_path / "config.yaml"
    digest_cli()  # writes the config
    environment = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "DIGEST_CONFIG"}}
    # Generous: a slow machine takes seconds; the old code took many minutes.
    process, stdout, terminal = run_on_terminal(["import", str(library), "--config", str(config)], environment, 120)
    assert process.returncode == 0, terminal.decode(errors="replace")
    assert "10,000 entries, 10,000 papers rated (10000 new" in stdout
    assert b"reading the library, entries: 10,000/10,000" in terminal  # redrawn in place, then wiped
    assert terminal.endswith(b"\r\x1b[K")
    given = {r["paper"]: r for r in _ratings(lambda *args: run_cli(*args, "--config", str(config)))}
    assert len(given) == 10_000
    assert given["2401.05000"]["title"] == "Café Models 5000"  # the entry with the huge field, without that field
    assert given["2401.00001"]["authors"] == ["Hans Müller", "Jan Šedivý"]


def test_csl_json_nested_too_deeply_is_a_named_error(digest_cli, tmp_path) -> None:
    digest = digest_cli()
    library = tmp_path / "deep.json"
    library.write_text("[" * 100_000 + "]" * 100_000)
    refused = digest("import", str(library))
    assert refused.returncode == 2, refused.stderr
    assert "nested too deeply to be CSL JSON" in refused.stderr and "Traceback" not in refused.stderr


def test_accents_and_escapes_are_decoded_as_the_latex_decoder_does() -> None:
    from pylatexenc.latex2text import LatexNodes2Text

    from digest.taste.library import _decoded

    decoder = LatexNodes2Text()
    for written in [
        'M{\\"u}ller',
        "Caf\\'e",
        "\\v{S}ediv\\'y",
        "Rivi\\`{e}re",
        "Erd\\H{o}s",
        "\\c{C}a\\u{g}lar",
        "20\\% gain",
        "{\\o}rsted",
        '\\r{A}ngstr\\"om',
        "$\\alpha$ and \\'e",
        "{T}he {GPT} model",
    ]:
        assert _decoded(decoder, written) == decoder.latex_to_text(written), written
