"""The reader's Zotero library, live: read where it lives and as it changes, and "Save to Zotero" from the digest.
Each behaviour through the command line, as a reader meets it, against a loopback server speaking Zotero's v3 API
in its real format (tests/zotero.py) beside the loopback feed, export API and LLM servers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from digest.sources.arxiv_parse import parse_api_page
from tests.helpers import API_PAGE, base_config, run_cli, run_on_terminal, start_cli, stop_process, wait_until
from tests.servers import serve_asgi
from tests.zotero import API_KEY, HTML, FakeZotero, preprint_data

PAPERS, _ = parse_api_page(API_PAGE.read_bytes(), url="fixture", categories=["cs.CL"])
BIORXIV_DOI = "10.1101/2026.06.30.612345"
ZOTERO_ENV = {"ZOTERO_API_KEY": API_KEY}


@dataclass
class Library:
    """The reader's library as the tests set it up: which item names which paper, and where it sits."""

    zotero: FakeZotero
    url: str
    items: dict[str, str]  # paper id -> item key
    reading: str  # collection keys
    llms: str
    rejected: str


@pytest.fixture
def zotero() -> Iterator[tuple[str, FakeZotero]]:
    app = FakeZotero()
    with serve_asgi(app) as url:
        app.base_url = url
        yield url, app


def _add(app: FakeZotero, paper_index: int, collections: list[str], day: int, where: str = "archiveID") -> str:
    paper = PAPERS[paper_index]
    return app.add_item(
        preprint_data(
            paper.id,
            paper.title,
            abstract=paper.abstract,
            authors=paper.authors,
            collections=collections,
            added=f"2026-05-{day:02d}T09:00:00Z",
            where=where,
        )
    )


@pytest.fixture
def library(zotero) -> Library:
    """The real library's 15 collections and 20 items (none an arXiv paper), and a reader's: "Reading" with a
    subcollection "LLMs", "Rejected", and one elsewhere; each id field Zotero's arXiv translator writes used once."""
    url, app = zotero
    app.add_real_collections()
    app.add_real_items()
    reading = app.add_collection("Reading")
    llms = app.add_collection("LLMs", parent=reading)
    rejected = app.add_collection("Rejected")
    elsewhere = app.add_collection("Elsewhere")
    items = {}
    for index, where in enumerate(["archiveID", "extra", "DOI", "url", "number"]):
        items[PAPERS[index].id] = _add(app, index, [reading], day=index + 1, where=where)
    items[PAPERS[5].id] = _add(app, 5, [llms], day=6)
    items[PAPERS[6].id] = _add(app, 6, [reading, rejected], day=7)  # "not for me" wins
    items[PAPERS[7].id] = _add(app, 7, [elsewhere], day=8)  # not in the chosen collections
    biorxiv = preprint_data("x", "A bioRxiv paper on cortex", abstract="Neurons.", collections=[reading], where="DOI")
    items[BIORXIV_DOI] = app.add_item(biorxiv | {"DOI": BIORXIV_DOI, "repository": "bioRxiv", "archiveID": ""})
    return Library(app, url, items, reading, llms, rejected)


def zotero_section(url: str, **more: Any) -> dict[str, Any]:
    return {
        "user_id": 475425,
        "api_key": "${ZOTERO_API_KEY}",
        "api_url": url,
        "collections": ["Reading"],
        "not_for_me": ["Rejected"],
    } | more


@pytest.fixture
def digest_cli(tmp_path, feed_server, export_api, fake_llm, write_config) -> Callable[..., Callable[..., Any]]:
    """A config for the loopback servers with the profile's `library`; returns `digest ...` run with it."""
    (feed_url, _), (api_url, _), (llm_url, _) = feed_server, export_api, fake_llm

    def configure(library: dict[str, Any] | None, **overrides: Any) -> Callable[..., Any]:
        config = base_config(tmp_path, feed_url, llm_url, **overrides)
        config["arxiv"]["api_url"] = api_url
        config["profiles"][0]["library"] = library
        path = write_config(config)
        return lambda *args, env=ZOTERO_ENV: run_cli(*args, "--config", str(path), env=env)

    return configure


def _ratings(digest: Callable[..., Any]) -> dict[str, dict[str, Any]]:
    done = digest("ratings", "--json")
    assert done.returncode == 0, done.stderr
    return {r["paper"]: r for r in json.loads(done.stdout)}


def _asked(app: FakeZotero, since: int = 0) -> list[str]:
    """The requests the server received from the `since`th on, as method, path and the query that matters."""
    shown = []
    for request in app.requests[since:]:
        query = {k: v for k, v in request["query"].items() if k in ("since", "format", "itemKey", "start", "q")}
        if "itemKey" in query:
            query["itemKey"] = f"{len(query['itemKey'].split(','))} keys"
        said = "&".join(f"{k}={v}" for k, v in query.items())
        path = request["path"].removeprefix("/users/475425")
        shown.append(f"{request['method']} {path}" + (f"?{said}" if said else ""))
    return shown


def test_a_first_read_takes_the_library_and_an_unchanged_one_costs_one_request(library, digest_cli) -> None:
    digest = digest_cli({"zotero": zotero_section(library.url)})
    done = digest("import")
    assert done.returncode == 0, done.stderr
    assert (
        "the Zotero library of user 475425 (profile me): 29 items read in 3 requests; 29 items, 9 naming a paper "
        "(20 naming none: counted, never guessed); 7 more like this, 1 not for me (8 new, 0 changed, 0 taken back)"
    ) in done.stdout
    assert _asked(library.zotero) == [
        "GET /items/top?since=0&format=versions",
        "GET /collections?since=0",
        "GET /items?itemKey=29 keys",
    ]
    first = library.zotero.requests[0]["headers"]
    assert first["zotero-api-key"] == API_KEY and first["zotero-api-version"] == "3"
    assert "if-modified-since-version" not in first

    given = _ratings(digest)
    ids = [p.id for p in PAPERS]
    assert {paper: r["rating"] for paper, r in given.items()} == {
        **dict.fromkeys(ids[:6], 1),  # archiveID, extra, DOI, url, number; and the subcollection's
        ids[6]: -1,  # in Reading and in Rejected: not for me
        BIORXIV_DOI: 1,  # by its DOI
    }
    assert {r["source"] for r in given.values()} == {"zotero"}
    # Each dated by its dateAdded, so the latest additions come first among the prompt's examples.
    assert given[ids[0]]["rated_at"].startswith("2026-05-01T09:00:00")
    assert [r["paper"] for r in json.loads(digest("ratings", "--json").stdout)][:2] == [BIORXIV_DOI, ids[6]]
    assert given[ids[3]]["title"] == PAPERS[3].title and given[BIORXIV_DOI]["title"] == "A bioRxiv paper on cortex"

    seen = len(library.zotero.requests)
    again = digest("import")
    assert again.returncode == 0, again.stderr
    assert "unchanged since the last read (1 request); 29 items" in again.stdout
    assert "(0 new, 0 changed, 0 taken back)" in again.stdout
    assert _asked(library.zotero, seen) == ["GET /items/top?since=" + str(library.zotero.version) + "&format=versions"]
    assert library.zotero.requests[seen]["headers"]["if-modified-since-version"] == str(library.zotero.version)


def test_a_run_reads_only_what_changed_and_an_item_removed_stops_counting(library, digest_cli, tmp_path) -> None:
    """Moved to "not for me", deleted, put in the trash, taken out of Reading, added: a run reads the changes only
    (If-Modified-Since-Version, then `since`, the changed items by key, and `deleted`); a rating given by hand
    stands whatever the library does."""
    digest = digest_cli({"zotero": zotero_section(library.url)})
    assert digest("import").returncode == 0
    ids, app = [p.id for p in PAPERS], library.zotero
    assert digest("rate", ids[4], "down").returncode == 0  # by hand: the reader's word

    version = app.version
    app.change_item(library.items[ids[0]], collections=[library.reading, library.rejected])
    app.delete_item(library.items[ids[1]])
    app.change_item(library.items[ids[2]], deleted=1)  # in the trash
    app.change_item(library.items[ids[3]], collections=[])
    app.delete_item(library.items[ids[4]])  # rated by hand: stays
    app.change_item(library.items[ids[7]], collections=[library.llms])  # now in a subcollection of Reading
    new = _add(app, 8, [library.reading], day=20)
    seen = len(app.requests)

    run = digest("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert _asked(app, seen) == [
        f"GET /items/top?since={version}&format=versions",
        f"GET /collections?since={version}",
        f"GET /deleted?since={version}",
        "GET /items?itemKey=5 keys",  # the changed ones; the deleted are gone
    ]
    assert app.requests[seen]["headers"]["if-modified-since-version"] == str(version)
    assert app.requests[-1]["query"]["itemKey"].count(",") == 4 and new in app.requests[-1]["query"]["itemKey"]
    assert "library      the Zotero library of user 475425 (profile me): 5 items read in 4 requests" in run.stdout
    assert "(2 new, 1 changed, 3 taken back)" in run.stdout
    assert "1 paper rated otherwise by hand: your word stands" not in run.stdout  # its item is gone
    given = _ratings(digest)
    assert {paper: (r["rating"], r["source"]) for paper, r in given.items()} == {
        ids[0]: (-1, "zotero"),
        ids[4]: (-1, "cli"),
        ids[5]: (1, "zotero"),
        ids[6]: (-1, "zotero"),
        ids[7]: (1, "zotero"),
        ids[8]: (1, "zotero"),
        BIORXIV_DOI: (1, "zotero"),
    }
    assert next((tmp_path / "outbox" / "me").glob("*.html")).exists()  # and the digest went out

    seen = len(app.requests)
    again = digest("run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(app.requests) == seen + 1 and "unchanged since the last read (1 request)" in again.stdout

    # The collections the profile names change what the items mean, with no request but the one.
    digest = digest_cli({"zotero": zotero_section(library.url, collections=["LLMs"], not_for_me=[])})
    seen = len(app.requests)
    assert digest("import").returncode == 0
    assert len(app.requests) == seen + 1
    assert {paper: r["rating"] for paper, r in _ratings(digest).items() if r["source"] == "zotero"} == {
        ids[5]: 1,
        ids[7]: 1,
    }


def test_pages_follow_the_link_header_and_429_and_503_are_waited_out(library, digest_cli) -> None:
    app = library.zotero
    app.versions_page, app.page_limit = 10, 4  # 29 items: 3 pages of versions; 19 collections: 5 pages
    app.script = [(429, {"retry-after": "1"}, "Too Many Requests"), (503, {"retry-after": "0"}, "Busy")]
    digest = digest_cli({"zotero": zotero_section(library.url)})
    done = digest("import")
    assert done.returncode == 0, done.stderr
    # 2 refused, then 3 pages of versions, 5 of collections, and the 29 items asked for by key 4 a page.
    assert "29 items read in 18 requests" in done.stdout, done.stdout
    assert "the list of changed items: HTTP 429; trying again in 1.0 s" in done.stderr
    pages = [r for r in app.requests if r["path"].endswith("/items/top")]
    assert [r["query"].get("start") for r in pages] == [None, None, None, "10", "20"]  # asked again, then by Link
    assert all(r["headers"]["zotero-api-key"] == API_KEY for r in app.requests)
    assert len(_ratings(digest)) == 8, done.stdout


def test_backoff_and_retry_after_past_the_budget_stop_the_read_and_the_next_goes_on(library, digest_cli) -> None:
    """Waits are honoured, never cut short: one the run cannot afford ends the library step where it is, said in the
    summary, and the digest goes on; the next read starts from where this one stopped."""
    app = library.zotero
    app.backoff = "86400"  # a day: no further request today
    digest = digest_cli({"zotero": zotero_section(library.url)})
    run = digest("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(app.requests) == 1
    assert "stopped at a pause Zotero asked for (Backoff) of 86400 s, past its budget" in run.stdout
    assert "digest: " in run.stdout  # the digest went out all the same

    app.backoff = None
    app.script = [(429, {"retry-after": "86400"}, "Too Many Requests")]
    run = digest("run")
    assert run.returncode == 0 and len(app.requests) == 2
    assert "stopped at the wait Zotero asked for (HTTP 429) of 86400 s, past its budget" in run.stdout

    assert digest("run").returncode == 0
    assert len(_ratings(digest)) == 8


def test_a_next_page_on_another_server_is_not_followed_with_the_key(library, digest_cli) -> None:
    app = library.zotero
    app.versions_page = 10
    app.base_url = "https://elsewhere.example"
    run = digest_cli({"zotero": zotero_section(library.url)})("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the next page of the list of changed items is on another server (elsewhere.example)" in run.stdout
    assert len(app.requests) == 1


def test_the_local_api_answers_403_until_it_is_on_and_digest_says_how_to_turn_it_on(digest_cli, tmp_path) -> None:
    app = FakeZotero(local=True, local_enabled=False)
    with serve_asgi(app) as url:
        app.base_url = url
        _add(app, 0, [], day=1)
        digest = digest_cli({"zotero": {"user_id": 0, "api_url": f"{url}/api"}})
        turn_on = "turn on 'Allow other applications on this computer to communicate with Zotero'"
        refused = digest("import", env={})
        assert refused.returncode == 1
        assert "Zotero desktop refused the list of changed items (HTTP 403): its local API is off" in refused.stderr
        assert turn_on in refused.stderr and "Traceback" not in refused.stderr
        checked = digest("check", env={})
        assert re.search(r"FAIL Zotero library \(me\): .*HTTP 403", checked.stdout) and turn_on in checked.stdout

        run = digest("run", env={})
        assert run.returncode == 0, run.stdout + run.stderr  # the library step, never the digest
        assert "warning: the Zotero library of user 0 (Zotero desktop's local API) (profile me) not read" in run.stdout
        assert next((tmp_path / "outbox" / "me").glob("*.html")).exists()

        app.local_enabled = True
        done = digest("import", env={})
        assert done.returncode == 0, done.stderr
        assert "1 more like this" in done.stdout
        assert all("zotero-api-key" not in r["headers"] for r in app.requests)  # the local API takes no key
        assert all(r["path"].startswith("/api/users/0/") for r in app.requests[-3:])
        checked = digest("check", env={})
        assert "ok   Zotero library (me): the Zotero library of user 0 (Zotero desktop's local API) answers" in (
            checked.stdout
        )

        # Zotero desktop has no /deleted: a change lists every key, and what is no longer listed was deleted.
        app.delete_item(next(iter(app.items)))
        _add(app, 1, [], day=2)
        seen = len(app.requests)
        changed = digest("import", env={})
        assert changed.returncode == 0, changed.stderr
        assert "1 item read in 3 requests" in changed.stdout and "(1 new, 0 changed, 1 taken back)" in changed.stdout
        assert [r["query"].get("since") for r in app.requests[seen:]] == ["0", "0", None]
        assert set(_ratings(digest)) == {PAPERS[1].id}


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        ("html", "the answer to the list of changed items is not Zotero's JSON (it is text/html)"),
        ("endless", "the answer to the list of changed items is larger than 16 MB"),
        ("429", "the list of changed items failed 5 times (HTTP 429)"),
    ],
)
def test_a_broken_or_hostile_zotero_costs_the_library_step_never_the_digest(
    broken, said, library, digest_cli, tmp_path
) -> None:
    app = library.zotero
    if broken == "html":
        app.script = [(200, {}, HTML)]
    elif broken == "endless":
        app.hostile = "endless"
    else:
        app.script = [(429, {"retry-after": "0"}, "Too Many Requests")] * 10
    run = digest_cli({"zotero": zotero_section(library.url)})("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"warning: the Zotero library of user 475425 (profile me) not read: {said}" in run.stdout
    assert "Traceback" not in run.stderr and API_KEY not in run.stdout + run.stderr
    assert next((tmp_path / "outbox" / "me").glob("*.html")).exists()


def test_a_huge_item_costs_that_item_and_the_rest_is_read(library, digest_cli) -> None:
    app = library.zotero
    huge = _add(app, 9, [library.reading], day=9)
    app.items[huge]["data"]["abstractNote"] = "x" * (17 * 2**20)
    done = digest_cli({"zotero": zotero_section(library.url)})("import")
    assert done.returncode == 0, done.stderr
    assert "1 item not Zotero's JSON, or too large: left out" in done.stdout
    assert "7 more like this, 1 not for me" in done.stdout
    # 50 asked, too large; then halves until the one item that is: 1 + 2 * 5 requests.
    assert sum(1 for r in app.requests if "itemKey" in r["query"]) == 11


@pytest.mark.long
def test_a_library_of_100000_items_is_read_over_several_runs_each_within_its_budget(
    library, digest_cli, tmp_path
) -> None:
    app = library.zotero
    app.add_bulk(100_000, collection=library.reading)
    digest = digest_cli({"zotero": zotero_section(library.url)})
    run = digest("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(app.requests) == 500
    assert "stopped at its budget of 500 requests with 75,129 items still to read" in run.stdout  # 498 pages
    assert "the next read goes on from there" in run.stdout
    assert next((tmp_path / "outbox" / "me").glob("*.html")).exists()

    run = digest("run")  # goes on where the first stopped: nothing is asked for twice
    assert run.returncode == 0, run.stdout + run.stderr
    assert app.requests[500]["headers"]["if-modified-since-version"] == str(app.version)
    asked = [key for r in app.requests if "itemKey" in r["query"] for key in r["query"]["itemKey"].split(",")]
    assert len(asked) == len(set(asked)) == 50 * (498 + 499)


def test_the_key_is_a_secret_needed_only_by_the_commands_that_use_it(library, digest_cli, tmp_path) -> None:
    digest = digest_cli({"zotero": zotero_section(library.url, save_to="digest")})
    for command in ("run", "import", "check"):
        missing = digest(command, env={})
        assert missing.returncode == 2, missing.stdout + missing.stderr
        assert "profiles[0].library.zotero.api_key: environment variable ZOTERO_API_KEY is not set" in missing.stderr
    for command in (("status",), ("ratings",), ("rate", PAPERS[0].id, "up"), ("import", str(tmp_path / "a.txt"))):
        (tmp_path / "a.txt").write_text(PAPERS[1].id + "\n")
        assert digest(*command, env={}).returncode == 0, command

    library.zotero.script = [(500, {}, f"<html>key {API_KEY} refused</html>")] * 5
    run = digest("run", "-v")
    assert run.returncode == 0 and "failed 5 times (HTTP 500)" in run.stdout
    assert digest("import").returncode == 0
    checked = digest("check", "-v")
    for said in (run.stdout, run.stderr, checked.stdout, checked.stderr):
        assert API_KEY not in said
    state = (tmp_path / "state.sqlite3").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("state*"))
    assert API_KEY.encode() not in state


@pytest.mark.parametrize(
    ("zotero", "said"),
    [
        ({"api_url": "https://api.zotero.org"}, "say whose library: user_id (your userID"),
        ({"user_id": 1, "group_id": 2}, "say whose library: user_id"),
        ({"user_id": 1, "save_to": "digest"}, "save_to needs an api_key with write access"),
        (
            {"user_id": 1, "colections": ["Reading"]},
            "library.zotero.colections: unknown key; did you mean 'collections'?",
        ),
        ({"user_id": 1, "collections": []}, "library.zotero.collections: List should have at least 1 item"),
        ({"user_id": 1, "api_url": "localhost:23119/api"}, "is not an http(s) URL"),
    ],
)
def test_a_zotero_section_that_cannot_work_is_a_config_error_naming_the_line(zotero, said, digest_cli) -> None:
    done = digest_cli({"zotero": zotero})("status")
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr and "line " in done.stderr and "Traceback" not in done.stderr


def test_check_says_what_the_key_may_do(library, digest_cli) -> None:
    digest = digest_cli({"zotero": zotero_section(library.url, save_to="digest")})
    checked = digest("check")
    assert (
        "ok   Zotero library (me): the key (user 475425) may read the Zotero library of user 475425, and write to "
        "it; Save to Zotero puts papers in 'digest'"
    ) in checked.stdout
    assert [r["path"] for r in library.zotero.requests] == ["/keys/current"]

    library.zotero.key_may_write = False
    checked = digest("check")
    assert checked.returncode == 1
    assert (
        "FAIL Zotero library (me): the key (user 475425) may read the Zotero library of user 475425, and not write"
        in (checked.stdout)
    )
    assert "Save to Zotero needs write access" in checked.stdout and "fix: allow the key to write" in checked.stdout

    other = digest_cli({"zotero": zotero_section(library.url) | {"user_id": 1234567}})("check")
    assert "the key is user 475425's, and library.zotero.user_id says 1234567" in other.stdout


def test_a_library_file_is_read_at_the_start_of_a_run_and_again_only_when_it_changes(digest_cli, tmp_path) -> None:
    library = tmp_path / "library.bib"
    library.write_text(
        f"@misc{{a, title = {{{PAPERS[0].title}}}, eprint = {{{PAPERS[0].id}}}, archiveprefix = {{arXiv}},"
        " abstract = {An abstract.}}\n"
    )
    digest = digest_cli({"file": str(library)})
    run = digest("run")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"library      {library} (profile me): 1 entry, 1 paper more like this (1 new, 0 changed)" in run.stdout
    again = digest("run")
    assert f"library      {library} (profile me): unchanged since the last read" in again.stdout
    library.write_text(
        library.read_text()
        + f"@misc{{b, title = {{{PAPERS[1].title}}}, eprint = {{{PAPERS[1].id}}}, archiveprefix = {{arXiv}},"
        " abstract = {Another.}}\n"
    )
    changed = digest("import")  # with no file: the profile's library, whether or not it changed
    assert changed.returncode == 0, changed.stderr
    assert "2 entries, 2 papers more like this (1 new, 0 changed)" in changed.stdout
    assert set(_ratings(digest)) == {PAPERS[0].id, PAPERS[1].id}

    library.unlink()
    gone = digest("run")
    assert gone.returncode == 0
    assert f"warning: {library} (profile me) not read: library.file {library} cannot be read" in gone.stdout
    assert "--as is for a FILE" in digest("import", "--as", "down").stderr
    without = digest_cli(None)("import")
    assert without.returncode == 2 and "profile me has no library to read" in without.stderr
    assert "give a FILE, or add a library: section" in without.stderr


def test_a_group_library_is_read_under_its_own_path(digest_cli) -> None:
    app = FakeZotero(group_id=4711)
    with serve_asgi(app) as url:
        app.base_url = url
        _add(app, 0, [], day=1)
        group = {"group_id": 4711, "api_key": "${ZOTERO_API_KEY}", "api_url": url}
        done = digest_cli({"zotero": group})("import")
        assert done.returncode == 0, done.stderr
        assert "the Zotero library of group 4711 (profile me): 1 item read" in done.stdout
        paths = {r["path"] for r in app.requests}
        assert paths == {"/groups/4711/items/top", "/groups/4711/collections", "/groups/4711/items"}


@pytest.mark.long
def test_a_library_of_20000_items_is_read_with_a_progress_count_and_then_in_one_request(
    zotero, digest_cli, tmp_path
) -> None:
    import os

    url, app = zotero
    reading = app.add_collection("Reading")
    app.add_bulk(20_000, collection=reading)
    digest = digest_cli({"zotero": zotero_section(url, not_for_me=[])})
    config = next(tmp_path.glob("config.yaml"))
    environment = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"} | ZOTERO_ENV
    process, stdout, terminal = run_on_terminal(["import", "--config", str(config)], environment, 300)
    assert process.returncode == 0, terminal.decode(errors="replace")
    assert "20,000 items read in 402 requests" in stdout and "20,000 more like this" in stdout
    assert b"reading the library, items: 20,000/20,000" in terminal and terminal.endswith(b"\r\x1b[K")
    seen = len(app.requests)
    again = digest("import")
    assert "unchanged since the last read (1 request)" in again.stdout and len(app.requests) == seen + 1


def test_serve_reads_the_library_at_the_start_of_each_run(library, digest_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ZOTERO_API_KEY", API_KEY)  # start_cli passes the environment on
    digest_cli({"zotero": zotero_section(library.url)}, schedule={"cron": "0 7 * * *", "timezone": "UTC"})
    serving = start_cli("serve", "--config", str(tmp_path / "config.yaml"))  # never ran: the due run, at start
    try:
        wait_until(lambda: any((tmp_path / "outbox" / "me").glob("*.html")), timeout=60)
    finally:
        output = stop_process(serving)
    assert "library      the Zotero library of user 475425 (profile me): 29 items read in 3 requests" in output
    assert library.zotero.requests[0]["path"] == "/users/475425/items/top"
    assert len(_ratings(digest_cli({"zotero": zotero_section(library.url)}))) == 8


def test_what_an_item_says_reaches_the_terminal_as_text_only(zotero, digest_cli) -> None:
    url, app = zotero
    reading = app.add_collection("Reading")
    clear, title = "\x1b[2J\x1b[H", "\x1b]0;owned\x07"
    data = preprint_data(PAPERS[0].id, f"A title{title} here", abstract=f"An abstract{clear}.", collections=[reading])
    app.add_item(data | {"creators": [{"creatorType": "author", "name": f"Eve{clear}"}]})
    digest = digest_cli({"zotero": zotero_section(url, not_for_me=[])})
    imported = digest("import")
    listing = digest("ratings")
    assert imported.returncode == 0 and "1 more like this" in imported.stdout
    for printed in (imported.stdout, imported.stderr, listing.stdout, listing.stderr):
        assert "\x1b" not in printed and "\x07" not in printed, repr(printed)
