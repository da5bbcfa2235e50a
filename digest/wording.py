"""How figures read in what digest prints: "1 paper", "2 papers"."""

from __future__ import annotations

import re

# What a terminal would act on (escape sequences, carriage returns), what XML 1.0 forbids (a U+FFFF in one reason
# made the whole Atom feed unreadable), and the bidirectional controls, which reorder the text around them unseen
# (U+202E shows "fdp.exe" as "exe.pdf"): cut where untrusted text enters (from arXiv, from the LLM), and again where
# anything is printed.
UNSAFE_CHARACTERS = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural unless there is exactly one: "1 entry", "3 entries"."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def either(things: list[str]) -> str:
    """ "arXiv, bioRxiv or medRxiv"."""
    return " or ".join(filter(None, [", ".join(things[:-1]), *things[-1:]]))


def paper_count(count: int) -> str:
    return counted(count, "paper")


OPENING_CHARACTERS = 300


def opening(text: str, limit: int = OPENING_CHARACTERS) -> str:
    """An abstract's first sentence, or about `limit` characters of it cut at a word: what it is about, in brief."""
    end = text.find(". ", 40)
    if 0 < end < limit:
        return text[: end + 1]
    if len(text) > limit:
        return text[:limit].rsplit(" ", 1)[0] + " ..."
    return text
