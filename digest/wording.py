"""How figures read in what digest prints: "1 paper", "2 papers"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural unless there is exactly one: "1 entry", "3 entries"."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


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
