"""Read arXiv's two answers into Paper models: the RSS announcement feed (parse_feed) and a page of the export API's
Atom (parse_api_page). Nothing they send is trusted: one malformed item costs that item, never the day."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import re
import xml.sax
from collections.abc import Iterable
from typing import Any

import feedparser

from digest.errors import FetchError
from digest.models import AnnounceType, Feed, Paper
from digest.wording import UNSAFE_CHARACTERS

log = logging.getLogger(__name__)

ANNOUNCE_TYPES: frozenset[str] = frozenset({"new", "cross", "replace", "replace-cross"})
NEW_STYLE_ID = r"\d{4}\.\d{4,5}"
OLD_STYLE_ID = r"[a-z]+(?:-[a-z]+)*(?:\.[A-Za-z]{2})?/\d{7}"  # hep-th/9901001, math.AP/0601001
# An item's guid: a well-formed id with its version. Nothing else may become a file name or a link.
GUID = re.compile(rf"^(?:oai:arXiv\.org:)?(?P<id>{NEW_STYLE_ID}|{OLD_STYLE_ID})v(?P<version>\d+)$")
AFFILIATION = re.compile(r"\s*\(.*\)\s*$", re.DOTALL)  # "Jane Doe (MIT, CSAIL)": what follows the name
ABSTRACT_PREFIX = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*\S+\s*Abstract:\s*", re.IGNORECASE)


def parse_feed(data: bytes, *, url: str, categories: Iterable[str], announce_types: Iterable[AnnounceType]) -> Feed:
    """Parse an RSS announcement feed; anything that is not a whole feed for `categories` is a FetchError."""
    data = _without_forbidden_characters(data, url)
    # Sanitizing would treat abstracts as HTML and drop things like "<s> tokens"; we escape on output instead.
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    if parsed.get("bozo") and isinstance(parsed.get("bozo_exception"), xml.sax.SAXException):
        raise FetchError(
            f"arXiv feed {url} is not valid XML ({parsed['bozo_exception']}): the download was probably cut short",
            hint="try again later",
        )
    channel = parsed.get("feed", {})
    if not parsed.get("version") or "title" not in channel:
        start = data[:80].decode("utf-8", "replace").strip()
        raise FetchError(
            f"{url} did not answer with an RSS feed (it starts with {start!r})",
            hint="check arxiv.feed_url in config.yaml; arXiv may also be showing an error page",
        )
    followed = list(categories)
    _check_channel(channel, url, set(followed))
    unreadable: list[str] = []
    announced = _channel_date(channel)
    if announced is None:
        announced = dt.datetime.now(dt.UTC).date()
        unreadable.append(f"the feed's date {channel.get('published')!r} is unreadable; {announced} is used")
    wanted = set(announce_types)
    papers: dict[str, Paper] = {}
    skipped: dict[str, int] = {}
    for entry in parsed.entries:
        try:
            paper = _paper(entry, announced, followed[0])
        except ValueError as error:  # one malformed item costs that item, never the day
            unreadable.append(str(error))
            continue
        if paper.announce_type not in wanted:
            skipped[paper.announce_type] = skipped.get(paper.announce_type, 0) + 1
            continue
        known = papers.get(paper.key)
        if known is None or (paper.announce_type == "new" and known.announce_type != "new"):
            papers[paper.key] = paper
    return Feed(
        url=url,
        announced=announced,
        papers=list(papers.values()),
        skipped=skipped,
        unreadable=unreadable,
        one_day=True,
    )


# Characters XML 1.0 forbids, raw (C0 controls but tab, newline and return; U+FFFE and U+FFFF in UTF-8) or as a
# character reference (&#1;, &#xFFFE;, a surrogate): one of them makes the parser reject the whole document.
FORBIDDEN_RAW = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")
CHARACTER_REFERENCE = re.compile(rb"&#(?:x([0-9a-fA-F]{1,8})|([0-9]{1,10}));")


def _forbidden(code: int) -> bool:
    allowed = code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
    return not (allowed or 0x10000 <= code <= 0x10FFFF)


def _without_forbidden_characters(data: bytes, url: str) -> bytes:
    """The feed with every character XML forbids removed, and said: one such character in one abstract costs
    that character, not the day."""
    removed: list[str] = []

    def reference(match: re.Match[bytes]) -> bytes:
        code = int(match[1], 16) if match[1] else int(match[2])
        if not _forbidden(code):
            return match[0]
        removed.append(match[0].decode())
        return b""

    def raw(match: re.Match[bytes]) -> bytes:
        removed.append(f"U+{ord(match[0].decode('utf-8')):04X}")
        return b""

    cleaned = CHARACTER_REFERENCE.sub(reference, FORBIDDEN_RAW.sub(raw, data))
    if removed:
        shown = ", ".join(sorted(set(removed)))
        log.warning("arXiv feed %s: removed %d characters XML forbids (%s)", url, len(removed), shown)
    return cleaned


def _check_channel(channel: Any, url: str, categories: set[str]) -> None:
    """A mirror or cache that serves another category's feed must not pass for a quiet day."""
    link = str(channel.get("link", ""))
    served = link.rstrip("/").rsplit("/", 1)[-1] if "/" in link else str(channel.get("title", "")).split(" ")[0]
    served_set = set(served.split("+"))
    if served and all("." in c or c.isalpha() for c in served_set) and served_set != categories:
        raise FetchError(
            f"{url} served the feed for {served}, not for {'+'.join(sorted(categories))}",
            hint="check arxiv.feed_url: a proxy or mirror may be rewriting the request",
        )


def _channel_date(channel: Any) -> dt.date | None:
    raw = channel.get("published") or channel.get("updated")
    try:
        return email.utils.parsedate_to_datetime(raw).date()
    except (TypeError, ValueError):
        return None


def _paper(entry: Any, announced: dt.date, feed_category: str) -> Paper:
    """One item as a Paper; ValueError, naming the item, when it is not one. An item with no category is kept
    under the feed's."""
    guid = str(entry.get("id", ""))[:100]
    match = GUID.match(guid)
    if match is None:
        problem = "no guid" if not guid else "no version" if GUID.match(f"{guid}v1") else "no arXiv id"
        raise ValueError(f"an item with guid {guid!r} ({problem}) was left out")
    announce_type = str(entry.get("arxiv_announce_type", "new")).strip()
    if announce_type not in ANNOUNCE_TYPES:
        raise ValueError(f"item {guid} has an unknown announce type {announce_type[:40]!r} and was left out")
    creators = str(entry.get("author", ""))
    categories = [str(t["term"]) for t in entry.get("tags", []) if t.get("term")]
    return Paper(
        id=match["id"],
        version=int(match["version"]),
        title=_clean(entry.get("title", "")),
        authors=authors_of(creators),
        abstract=_clean(ABSTRACT_PREFIX.sub("", str(entry.get("summary", "")))),
        categories=categories or [feed_category],
        announce_type=announce_type,  # type: ignore[arg-type]  # checked against ANNOUNCE_TYPES above
        announced=announced,
    )


def authors_of(creators: str) -> list[str]:
    """The names in an item's dc:creator, without their affiliations. arXiv's feed writes each author as
    `First Last[ Suffix][ (Aff1, Aff2)]`, joined by ", " (arXiv/arxiv-feed, feed/serializers/extensions.py), so a
    comma inside parentheses is an affiliation's, not a new author's. Unbalanced parentheses (a cut or odd name) are
    read as plain commas."""
    names: list[str] = []
    depth, start = 0, 0
    for index, character in enumerate(creators):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth < 0:
            break
        if character == "," and depth == 0:
            names.append(creators[start:index])
            start = index + 1
    if depth != 0:
        names = [part.split("(")[0].replace(")", "") for part in creators.split(",")]
    else:
        names.append(creators[start:])
    return [name for part in names if (name := _clean(AFFILIATION.sub("", part)))]


def parse_api_page(data: bytes, *, url: str, categories: Iterable[str]) -> tuple[list[Paper], int]:
    """One page of the export API's Atom: its papers and the query's total number of results."""
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    if parsed.get("bozo") and isinstance(parsed.get("bozo_exception"), xml.sax.SAXException):
        raise FetchError(f"arXiv API {url} answered invalid XML ({parsed['bozo_exception']})", hint="try again later")
    channel = parsed.get("feed", {})
    if parsed.get("version") != "atom10" or "opensearch_totalresults" not in channel:
        raise FetchError(f"arXiv API {url} did not answer with an API result page", hint="check arxiv.api_url")
    followed = set(categories)
    papers = []
    for entry in parsed.entries:
        if "/api/errors" in str(entry.get("id", "")):
            raise FetchError(f"arXiv API {url} refused the query: {_clean(entry.get('summary', ''))}")
        match = GUID.match(str(entry.get("id", "")).rsplit("/abs/", 1)[-1])
        if match is None:  # one malformed entry costs that entry
            log.warning(
                "arXiv API %s: an entry with the unexpected id %r was left out", url, str(entry.get("id"))[:100]
            )
            continue
        tags = [str(t["term"]) for t in entry.get("tags", []) if t.get("term")]
        primary = str(entry.get("arxiv_primary_category", {}).get("term", tags[0] if tags else ""))
        version = int(match["version"])
        kind: AnnounceType = "new" if primary in followed or primary.split(".")[0] in followed else "cross"
        published = str(entry.get("published", ""))[:10]
        papers.append(
            Paper(
                id=match["id"],
                version=version,
                title=_clean(entry.get("title", "")),
                authors=[_clean(a.get("name", "")) for a in entry.get("authors", []) if a.get("name")],
                abstract=_clean(entry.get("summary", "")),
                categories=[primary, *(t for t in tags if t != primary)],
                announce_type=kind if version == 1 else ("replace" if kind == "new" else "replace-cross"),
                announced=dt.date.fromisoformat(published) if published else dt.date.today(),
            )
        )
    return papers, int(channel["opensearch_totalresults"])


def _clean(text: str) -> str:
    return " ".join(UNSAFE_CHARACTERS.sub(" ", str(text)).split())
