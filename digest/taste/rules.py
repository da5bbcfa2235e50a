"""The reader's own rules, applied before any LLM request: followed authors and keywords.

A rule that decides a paper decides it for free: followed authors and `must_include` keywords put it in the
digest, `exclude` keywords keep it out. Only the papers no rule decides are sent to the LLM.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from digest.models import Paper, Rule, Verdict

# Letters that are not a base letter plus an accent, so Unicode decomposition leaves them as they are.
UNDECOMPOSABLE = str.maketrans(
    {"\u0131": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe", "þ": "th"}  # \u0131: dotless i
)


def _fold(text: str) -> str:
    """Lower case, accents and punctuation gone: 'Patiño' and 'Patino', 'S.' and 'S', a dotless i and an i."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(UNDECOMPOSABLE))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^\w\s-]", " ", plain).replace("-", " ")


@dataclass(frozen=True)
class AuthorName:
    """A name reduced to what identifies it across spellings: the given names' initials and the family name."""

    given: tuple[str, ...]
    family: str

    @classmethod
    def parse(cls, name: str) -> AuthorName | None:
        parts = _fold(name).split()
        if not parts:
            return None
        return cls(given=tuple(parts[:-1]), family=parts[-1])

    def matches(self, other: AuthorName) -> bool:
        """Same family name, and the first given names agree as far as both are spelled out ('Y.' = 'Yoshua');
        middle names are ignored ('Percy S. Liang' = 'Percy Liang')."""
        if self.family != other.family:
            return False
        if not self.given or not other.given:
            return True
        mine, theirs = self.given[0], other.given[0]
        return mine == theirs or (min(len(mine), len(theirs)) == 1 and mine[0] == theirs[0])


def _keyword_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


class Rules:
    """One profile's rules. A followed author wins over everything; an excluded keyword wins over an included."""

    def __init__(self, follow_authors: Iterable[str], must_include: Iterable[str], exclude: Iterable[str]) -> None:
        self._authors = [(name, parsed) for name in follow_authors if (parsed := AuthorName.parse(name))]
        self._include = [(k, _keyword_pattern(k)) for k in must_include if k.strip()]
        self._exclude = [(k, _keyword_pattern(k)) for k in exclude if k.strip()]

    def decide(self, paper: Paper) -> Verdict | None:
        """A verdict when a rule decides the paper, otherwise None (the LLM decides)."""
        for author in paper.authors:
            parsed = AuthorName.parse(author)
            for followed, name in self._authors:
                if parsed is not None and name.matches(parsed):
                    return _verdict(paper, True, f"By an author you follow: {author}", "author", followed)
        text = f"{paper.title}\n{paper.abstract}"
        for keyword, pattern in self._exclude:
            if pattern.search(text):
                return _verdict(paper, False, f"Matches '{keyword}', which you excluded", "excluded", keyword)
        for keyword, pattern in self._include:
            if pattern.search(text):
                return _verdict(paper, True, f"Matches '{keyword}'", "keyword", keyword)
        return None


def _verdict(paper: Paper, relevant: bool, reason: str, rule: Rule, matched: str) -> Verdict:
    return Verdict(
        paper_key=paper.key,
        score=10 if relevant else 0,
        reason=reason,
        matched_interests=[matched],
        rule=rule,
    )
