"""How figures read in what digest prints: "1 paper", "2 papers"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural unless there is exactly one: "1 entry", "3 entries"."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def paper_count(count: int) -> str:
    return counted(count, "paper")
