"""Parsing real arXiv feeds, and fetching them from a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections import Counter

import pytest

from digest.config import ArxivConfig
from digest.errors import FetchError
from digest.sources.arxiv import USER_AGENT, api_pacer, fetch_feed, fetch_since
from digest.sources.arxiv_parse import parse_feed
from digest.sources.retrying import FIRST_BACKOFF_SECONDS
from digest.taste.rules import Rules
from tests.helpers import (
    API_PAGE,
    CL_AI_FEED,
    CL_FEED,
    CV_FEED,
    EMPTY_FEED,
    FakeClock,
    base_config,
    day_feeds,
    first_items,
    run_cli,
)
from tests.servers import ApiServer, FeedServer, serve_asgi

ALL_TYPES = ["new", "cross", "replace", "replace-cross"]


@pytest.mark.parametrize(
    ("path", "categories", "expected", "date"),
    [
        (CL_FEED, ["cs.CL"], {"new": 117, "cross": 20, "replace": 10, "replace-cross": 2}, dt.date(2026, 6, 30)),
        (
            CL_AI_FEED,
            ["cs.CL", "cs.AI"],
            {"new": 133, "cross": 32, "replace": 9, "replace-cross": 3},
            dt.date(2026, 7, 1),
        ),
        (CV_FEED, ["cs.CV"], {"new": 283, "cross": 18}, dt.date(2026, 6, 23)),
        (EMPTY_FEED, ["cs.CL"], {}, dt.date(2026, 6, 27)),
    ],
)
def test_every_fixture_parses_with_the_right_counts(path, categories, expected, date):
    feed = parse_feed(path.read_bytes(), url="test", categories=categories, announce_types=ALL_TYPES)
    assert Counter(p.announce_type for p in feed.papers) == expected
    assert feed.announced == date
    for paper in feed.papers:
        assert not paper.abstract.startswith("arXiv:")
        assert "Announce Type" not in paper.abstract
        assert paper.abstract and paper.title and paper.authors and paper.categories
        assert paper.announced == date


def test_a_paper_is_parsed_completely():
    feed = parse_feed(CL_FEED.read_bytes(), url="test", categories=["cs.CL"], announce_types=ALL_TYPES)
    paper = feed.papers[0]
    assert paper.id == "2606.28354" and paper.version == 1 and paper.key == "2606.28354v1"
    assert paper.title == "Generating in the Limit with Infinitely Many Hallucinations"
    assert paper.authors == ["Irene Strauss", "Alexandra Butoi", "Ryan Cotterell"]
    assert paper.categories == ["cs.CL", "cs.FL", "cs.LG"]
    assert paper.primary_category == "cs.CL"
    assert paper.abstract.startswith("The classic paradigm of language identification")
    assert paper.abs_url == "https://arxiv.org/abs/2606.28354"
    assert paper.pdf_url == "https://arxiv.org/pdf/2606.28354v1"


def test_abstracts_keep_their_text_exactly():
    feed = parse_feed(CL_FEED.read_bytes(), url="test", categories=["cs.CL"], announce_types=ALL_TYPES)
    abstracts = " ".join(p.abstract for p in feed.papers)
    assert "p < 0.0001" in abstracts  # XML-escaped in the feed, plain text here
    assert "(Q&A)" in abstracts  # not HTML-escaped twice
    authors = {a for p in feed.papers for a in p.authors}
    assert any(not a.isascii() for a in authors)


def test_html_in_an_abstract_is_kept_as_text_not_sanitized_away():
    raw = CL_FEED.read_bytes().replace(b"The classic paradigm", b"&lt;script&gt;alert(1)&lt;/script&gt; &lt;s&gt; The")
    paper = parse_feed(raw, url="test", categories=["cs.CL"], announce_types=ALL_TYPES).papers[0]
    assert paper.abstract.startswith("<script>alert(1)</script> <s> The")


def test_replacements_are_skipped_by_default():
    feed = parse_feed(CL_FEED.read_bytes(), url="test", categories=["cs.CL"], announce_types=["new", "cross"])
    assert len(feed.papers) == 137
    assert feed.skipped == {"replace": 10, "replace-cross": 2}


def test_a_paper_in_several_followed_categories_appears_once():
    feed = parse_feed(CL_AI_FEED.read_bytes(), url="test", categories=["cs.CL", "cs.AI"], announce_types=ALL_TYPES)
    keys = [p.key for p in feed.papers]
    assert len(keys) == len(set(keys))
    doubled = CL_AI_FEED.read_bytes().replace(b"</channel>", _first_item(CL_AI_FEED.read_bytes()) + b"</channel>")
    again = parse_feed(doubled, url="test", categories=["cs.CL", "cs.AI"], announce_types=ALL_TYPES)
    assert len(again.papers) == len(feed.papers)


def _first_item(raw: bytes) -> bytes:
    start = raw.index(b"<item>")
    return raw[start : raw.index(b"</item>") + len(b"</item>")].replace(b"Announce Type: new", b"Announce Type: cross")


def test_an_html_error_page_is_an_error_not_an_empty_day():
    with pytest.raises(FetchError, match="did not answer with an RSS feed"):
        parse_feed(
            b"<html><body><h1>Service Unavailable</h1></body></html>",
            url="u",
            categories=["cs.CL"],
            announce_types=ALL_TYPES,
        )


def test_truncated_xml_is_an_error():
    raw = CL_FEED.read_bytes()[:50_000]
    with pytest.raises(FetchError, match="not valid XML"):
        parse_feed(raw, url="u", categories=["cs.CL"], announce_types=ALL_TYPES)


def test_a_feed_for_another_category_is_an_error():
    with pytest.raises(FetchError, match=r"served the feed for cs\.CV, not for cs\.CL"):
        parse_feed(CV_FEED.read_bytes(), url="u", categories=["cs.CL"], announce_types=ALL_TYPES)


def _config(url: str, max_retry_seconds: float = 30) -> ArxivConfig:
    return ArxivConfig(categories=["cs.CL"], feed_url=f"{url}/rss", max_retry_seconds=max_retry_seconds)


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def test_fetch_retries_503_then_succeeds():
    app = FeedServer(feeds={"/rss/cs.CL": CL_FEED.read_bytes()}, failures=[(503, b"busy"), (503, b"busy")])
    with serve_asgi(app) as url:
        feed = asyncio.run(fetch_feed(_config(url), sleep=_no_sleep))
    assert len(feed.papers) == 137
    assert len(app.requests) == 3


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("2", (2.0, 2.0)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", (1e9, None)),  # an HTTP date: (far) in the future
        ("Thu, 01 Jan 1970 00:00:00 GMT", (0.0, 0.0)),  # in the past: no wait
        ("soon, maybe", (FIRST_BACKOFF_SECONDS / 2, FIRST_BACKOFF_SECONDS)),  # unusable: our own back-off
    ],
)
def test_fetch_waits_as_long_as_retry_after_says(retry_after, expected):
    app = FeedServer(feeds={"/rss/cs.CL": CL_FEED.read_bytes()}, failures=[(503, b"busy")], retry_after=retry_after)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with serve_asgi(app) as url:
        feed = asyncio.run(fetch_feed(_config(url, max_retry_seconds=10**12), sleep=sleep))
    assert len(feed.papers) == 137
    low, high = expected
    assert len(waits) == 1 and waits[0] >= low and (high is None or waits[0] <= high)


def test_fetch_gives_up_with_a_clear_error():
    app = FeedServer(feeds={}, failures=[(503, b"busy")] * 100_000)
    with serve_asgi(app) as url, pytest.raises(FetchError, match=r"failed after \d+ attempts?: HTTP 503"):
        asyncio.run(fetch_feed(_config(url, max_retry_seconds=0.5)))


def test_a_missing_feed_is_an_error_at_once():
    app = FeedServer(feeds={})
    with serve_asgi(app) as url, pytest.raises(FetchError, match="answered HTTP 404"):
        asyncio.run(fetch_feed(_config(url)))
    assert len(app.requests) == 1


def test_a_repeated_request_is_conditional_and_answered_304():
    app = FeedServer(feeds={"/rss/cs.CL": CL_FEED.read_bytes()})
    with serve_asgi(app) as url:
        first = asyncio.run(fetch_feed(_config(url)))
        second = asyncio.run(fetch_feed(_config(url), etag=first.etag, last_modified=first.last_modified))
    assert first.etag and not first.not_modified
    assert second.not_modified and second.papers == []
    assert app.requests[1]["if-none-match"] == first.etag
    assert app.requests[1]["user-agent"] == USER_AGENT


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(FetchError, match="connection failed"):
        asyncio.run(fetch_feed(_config("http://127.0.0.1:1", max_retry_seconds=0)))


def test_backfill_pages_through_the_export_api_three_seconds_apart():
    clock = FakeClock(1000.0)
    api = ApiServer(page=API_PAGE.read_bytes(), clock=clock, failures=[503])
    today = dt.datetime.now(dt.UTC).date()
    with serve_asgi(api) as url:
        config = ArxivConfig(categories=["cs.CL", "cs.LG"], api_url=f"{url}/api/query", api_page_size=20)
        pacer = api_pacer(clock=clock, sleep=clock.sleep)
        feed = asyncio.run(fetch_since(config, dt.date(2026, 6, 25), pacer=pacer, sleep=clock.sleep))
    ends = {f"{day + dt.timedelta(days=1):%Y%m%d}2359" for day in (today, dt.datetime.now(dt.UTC).date())}
    assert len(api.entries) == 50
    assert [r["start"] for r in api.requests] == ["0", "0", "20", "40"]  # a 503, retried, then three pages
    assert all(r["max_results"] == "20" for r in api.requests)
    # The end of the range is a real one, the end of tomorrow (the API refuses 999912312359).
    assert api.requests[0]["search_query"] in {
        f"(cat:cs.CL OR cat:cs.LG) AND submittedDate:[202606250000 TO {end}]" for end in ends
    }
    gaps = [b - a for a, b in zip(api.arrivals, api.arrivals[1:], strict=False)]
    assert all(gap >= 3.0 for gap in gaps), gaps
    kinds = Counter(p.announce_type for p in feed.papers)
    assert kinds == {"new": 40, "cross": 10}  # primary cs.CL is new here; primaries cs.AI, cs.CV, cs.IT are cross
    paper = next(p for p in feed.papers if p.key == "2606.28354v1")
    assert paper.authors == ["Irene Strauss", "Alexandra Butoi", "Ryan Cotterell"]
    assert paper.categories[0] == "cs.CL" and paper.abstract.startswith("The classic paradigm")
    assert "\n" not in paper.abstract  # the API's hard wrapping is undone


def test_a_character_xml_forbids_costs_that_character_not_the_day(caplog):
    """One `&#xFFFE;` in a title, a raw U+FFFF in an abstract and a `&#1;` rejected the whole day before, as
    "the download was probably cut short"."""
    day = CL_FEED.read_bytes()
    clean = parse_feed(day, url="f", categories=["cs.CL"], announce_types=["new", "cross"])
    titles = [part.split(b"</title>")[0] for part in day.split(b"<title>")[2:5]]
    hostile = day.replace(titles[0], titles[0][:10] + b"&#xFFFE;" + titles[0][10:], 1)
    hostile = hostile.replace(titles[1], titles[1][:10] + "\uffff".encode() + b"&#1;" + titles[1][10:], 1)
    hostile = hostile.replace(titles[2], titles[2] + b" &#233;t&#xe9;", 1)  # allowed references stay
    with caplog.at_level("WARNING"):
        parsed = parse_feed(hostile, url="f", categories=["cs.CL"], announce_types=["new", "cross"])
    assert len(parsed.papers) == len(clean.papers) and not parsed.unreadable
    assert [p.title for p in parsed.papers][:2] == [p.title for p in clean.papers][:2]
    assert parsed.papers[2].title == clean.papers[2].title + " été"
    assert "removed 3 characters XML forbids (&#1;, &#xFFFE;, U+FFFF)" in caplog.text


def test_what_xml_forbids_never_reaches_a_model_from_the_llm_or_arxiv():
    from digest.models import Judgement

    said = Judgement.model_validate({"reason": "ok\uffff\ufffe\ud800 \x1b[2Jdone", "score": 7, "matched_interests": []})
    assert said.reason == "ok [2Jdone"


def test_authors_with_affiliations_are_their_names_and_a_followed_one_matches():
    """arXiv's feed writes each author as `First Last[ Suffix][ (Aff1, Aff2)]`, joined by ", " (arXiv/arxiv-feed's
    serializer, quoted in fixtures/real/SOURCES.md). The second item's creators are arxiv-feed's own expected output;
    the first item's are its real authors written in that form, with affiliations made up for them."""
    day = CL_FEED.read_bytes()
    creators = [part.split(b"</dc:creator>")[0] for part in day.split(b"<dc:creator>")[1:3]]
    written = [
        b"Irene Strauss (ETH Zurich, Department of Computer Science), Alexandra Butoi (ETH Zurich), Ryan Cotterell",
        b"Very Real Sr. (Cornell University), L Emeno",
    ]
    for real, with_affiliations in zip(creators, written, strict=True):
        day = day.replace(b"<dc:creator>" + real + b"<", b"<dc:creator>" + with_affiliations + b"<", 1)
    papers = parse_feed(day, url="test", categories=["cs.CL"], announce_types=ALL_TYPES).papers
    assert papers[0].authors == ["Irene Strauss", "Alexandra Butoi", "Ryan Cotterell"]
    assert papers[1].authors == ["Very Real Sr.", "L Emeno"]
    verdict = Rules(["Alexandra Butoi"], [], []).decide(papers[0])
    assert verdict is not None and verdict.rule == "author"


def test_an_earlier_batch_under_a_new_date_is_said_and_read_again_not_taken_as_the_day(
    tmp_path, feed_server, fake_llm, write_config
):
    """A category's feed served Monday's items again, dated Tuesday: nothing new was stored, the day moved on, and
    nothing said so."""
    (feed_url, feed), (llm_url, _) = feed_server, fake_llm
    small = tmp_path / "day.xml"
    small.write_bytes(first_items(CL_FEED.read_bytes(), 12))
    monday, tuesday = dt.date(2026, 6, 29), dt.date(2026, 6, 30)
    mondays, tuesdays = day_feeds([monday, tuesday], small)
    path = write_config(base_config(tmp_path, feed_url, llm_url))

    feed.feeds["/rss/cs.CL"] = mondays
    first = run_cli("run", "--config", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    feed.feeds["/rss/cs.CL"] = day_feeds([tuesday, monday], small)[0]  # Monday's items, dated Tuesday
    repeated = run_cli("run", "--config", str(path))
    assert repeated.returncode == 0, repeated.stdout + repeated.stderr
    assert (
        "warning: the feed is dated 2026-06-30, but its new papers in cs.CL were all seen before: an earlier "
        "announcement under a new date; it is read again on the next run" in repeated.stdout
    )
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("SELECT last_announced, etag FROM feeds").fetchall() == [("2026-06-29", None)]

    feed.feeds["/rss/cs.CL"] = tuesdays  # arXiv's feed put right
    tuesday_run = run_cli("run", "--config", str(path))
    assert tuesday_run.returncode == 0, tuesday_run.stdout + tuesday_run.stderr
    assert "warning" not in tuesday_run.stdout and "6 not seen before" in tuesday_run.stdout
    assert (tmp_path / "outbox" / "me" / "2026-06-30.eml").exists()
