"""One answer of the API bioRxiv and medRxiv share (digest/sources/rxiv.py): a page read as JSON, its records checked
one by one, and the listing's total and the cursor it says it starts at. Nothing it sends is trusted."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from digest.sources.rxiv_text import plain_abstract, plain_text

DOI = re.compile(r"10\.\d{4,9}/[0-9A-Za-z.\-_/]{1,100}")


def _text(clean: Callable[[str], str], limit: int) -> BeforeValidator:
    """Untrusted text made plain by `clean` and cut to `limit`; a null as no text (a paper with no abstract is still
    a paper)."""

    def plain(value: object) -> object:
        if value is None:
            return ""
        return clean(value)[:limit] if isinstance(value, str) else value

    return BeforeValidator(plain)


class Record(BaseModel):
    """One version of one paper, as the API writes it; what digest does not use is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    doi: Annotated[str, _text(plain_text, 200), Field(pattern=DOI.pattern)]
    version: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")]
    date: dt.date
    title: Annotated[str, _text(plain_text, 1000), Field(min_length=1)]
    authors: Annotated[str, _text(plain_text, 20_000)] = ""
    abstract: Annotated[str, _text(plain_abstract, 20_000)] = ""
    category: Annotated[str, _text(plain_text, 200), Field(min_length=1)]
    type: Annotated[str, _text(plain_text, 100)] = ""  # "new results", "PUBLISHAHEADOFPRINT"; or withdrawn
    server: Annotated[str, _text(plain_text, 100)] = ""  # "bioRxiv", "medRxiv"

    @property
    def withdrawn(self) -> bool:
        """The version that withdraws the paper: `withdrawn` on bioRxiv, `WITHDRAWN` on medRxiv."""
        return self.type.strip().lower() == "withdrawn"


def records_of(page: dict[str, Any], label: str, unreadable: list[str]) -> list[Record]:
    """The page's records, each checked on its own: one that does not read is left out and named."""
    found = []
    for number, raw in enumerate(page.get("collection") or []):
        try:
            found.append(Record.model_validate(raw))
        except ValidationError as error:
            doi = raw.get("doi") if isinstance(raw, dict) else None
            name = f"{doi!r}"[:120] if isinstance(doi, str) else f"number {number + 1} of its page"
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors())
            unreadable.append(f"{label} record {name} was left out ({problem[:200]})")
    return found


def read_page(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The page, or None and what it was instead."""
    if not body.strip():
        return None, "an empty body"
    try:
        page = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None, f"something that is not JSON ({body[:60]!r})"
    if not isinstance(page, dict) or not isinstance(page.get("messages"), list):
        return None, "JSON that is not one of its pages (no messages)"
    status = str((page["messages"][:1] or [{}])[0].get("status", "") if page["messages"] else "")
    if status != "ok" and "no posts found" not in status.lower():
        return None, f"the status {status[:100]!r}"
    if not isinstance(page.get("collection", []), list):
        return None, "a collection that is not a list"
    return page, ""


def _message(page: dict[str, Any]) -> dict[str, Any]:
    first = page["messages"][0] if page["messages"] else None
    return first if isinstance(first, dict) else {}


def total_of(page: dict[str, Any]) -> int | None:
    """The records in the whole listing (the API writes it as a string), if the page says."""
    return _whole_number(_message(page).get("total"))


def cursor_of(page: dict[str, Any]) -> int | None:
    """The record the page says it starts at, if it says."""
    return _whole_number(_message(page).get("cursor"))


def _whole_number(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None
