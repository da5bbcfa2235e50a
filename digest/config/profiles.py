"""A profile: one reader's interests, rules, cut and cadence, and where their digest goes."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digest.config.base import StrictModel, check_email
from digest.config.library import LibraryConfig
from digest.taxonomy import (
    ARCHIVES,
    BIORXIV_SUBJECTS,
    MEDRXIV_SUBJECTS,
    check_arxiv_category,
    normalise_subject,
)


def _check_profile_category(category: str) -> str:
    """A profile may follow any source's categories: an arXiv category, or a bioRxiv or medRxiv subject."""
    subject = normalise_subject(category)
    if subject in BIORXIV_SUBJECTS or subject in MEDRXIV_SUBJECTS:
        return subject
    if "." in category or category in ARCHIVES:
        return check_arxiv_category(category)
    close = difflib.get_close_matches(subject, BIORXIV_SUBJECTS + MEDRXIV_SUBJECTS, n=1, cutoff=0.6)
    said = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(
        f"'{category}' is neither an arXiv category (like cs.CL) nor a bioRxiv or medRxiv subject (like "
        f"neuroscience){said}"
    )


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


NOTIFY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _check_notify_url(url: SecretStr, info: ValidationInfo) -> SecretStr:
    """An Apprise URL (ntfy://, json://, slack://, ...). Commands that notify have Apprise parse it, which sends
    nothing; the others only look at its shape, and do not import Apprise. Errors never show the URL: it carries a
    token."""
    value = url.get_secret_value().strip()
    if not value:
        return url  # an unset ${VAR} for a command that notifies nobody: left out
    scheme = value.partition("://")[0] if "://" in value else ""
    if not NOTIFY_URL.fullmatch(value):
        raise ValueError(
            "is not an Apprise URL like ntfy://ntfy.sh/your-topic or json://host/path (the list of services: "
            "https://github.com/caronc/apprise/wiki)"
        )
    if "notify" in (info.context or {}).get("uses", ()):
        import apprise

        if apprise.Apprise.instantiate(value) is None:
            raise ValueError(
                f"Apprise cannot use this {scheme}:// URL: an unknown service, or a part it needs is missing or "
                "malformed; check it against the service's page in https://github.com/caronc/apprise/wiki"
            )
    return SecretStr(value)


DEFAULT_MIN_SCORE = 6
# On the four labelled reader-days, the clearly wanted papers all ranked within the best 41% by taste.
DEFAULT_JUDGE_SHARE = 0.5


class Profile(StrictModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    email: list[str] = []
    # Chat and push destinations, as Apprise URLs: usually a ${VAR} each, because the URL carries a token.
    notify: list[Annotated[SecretStr, AfterValidator(_check_notify_url)]] = []
    # weekly: one digest a week, on `weekday`, of the week's best; papers are still fetched and judged every day.
    cadence: Literal["daily", "weekly"] = "daily"
    weekday: Weekday = "monday"
    interests: Annotated[str, Field(min_length=1)]
    # The cut, on the fused score (the LLM's score nudged by taste); `min_score: auto` takes the cut that best
    # matched the reader's ratings when `digest eval` last measured it (DEFAULT_MIN_SCORE until then).
    min_score: Annotated[int, Field(ge=0, le=10)] = DEFAULT_MIN_SCORE
    # The share of each day's papers, best by taste first, that the LLM is asked about; the rest are judged by
    # taste alone and recorded so. 1 asks it about every paper. Chosen on the labelled days in tests/fixtures/labels.
    judge_share: Annotated[float, Field(gt=0, le=1)] = DEFAULT_JUDGE_SHARE
    # How far taste moves the LLM's score: up to this many points up for the day's closest paper, down for the
    # farthest; 0 leaves the LLM's score as it is.
    taste_weight: Annotated[float, Field(ge=0, le=5)] = 1.0
    send_empty: bool = False
    max_papers: Annotated[int, Field(ge=1)] | None = None
    group_by: Literal["interest", "category", "none"] = "interest"
    categories: Annotated[list[str], Field(min_length=1)] | None = None
    follow_authors: list[str] = []
    must_include: list[str] = []
    exclude: list[str] = []
    language: Annotated[str, Field(min_length=2, max_length=40)] | None = None
    tldr: bool = False
    # How many prompt tokens the papers the reader rated may take (most recent first); 0 leaves them out.
    examples: Annotated[int, Field(ge=0, le=50_000)] = 1500
    # The reader's own library (Zotero, or a file Better BibTeX keeps exported): read at the start of every run.
    library: LibraryConfig | None = None

    _auto_min_score: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _min_score_auto(cls, data: object, handler: ModelWrapValidatorHandler[Profile]) -> Profile:
        auto = isinstance(data, dict) and data.get("min_score") == "auto"
        profile = handler({**data, "min_score": DEFAULT_MIN_SCORE} if auto and isinstance(data, dict) else data)
        profile._auto_min_score = auto
        return profile

    @property
    def auto_min_score(self) -> bool:
        """`min_score: auto`: the cut is learned from the reader's ratings."""
        return self._auto_min_score

    @field_validator("categories")
    @classmethod
    def _valid_categories(cls, categories: list[str] | None) -> list[str] | None:
        if categories is None:
            return None
        return list(dict.fromkeys(_check_profile_category(c.strip()) for c in categories))

    @field_validator("email", "notify", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("notify")
    @classmethod
    def _set_and_once(cls, urls: list[SecretStr]) -> list[SecretStr]:
        # The same URL twice is one destination; an unset ${VAR} (for a command that notifies nobody) none.
        kept = dict.fromkeys(u.get_secret_value() for u in urls if u.get_secret_value())
        return [SecretStr(u) for u in kept]

    @field_validator("email")
    @classmethod
    def _valid_addresses(cls, addresses: list[str]) -> list[str]:
        # The same address twice is one recipient: one message each, never two.
        return list(dict.fromkeys(check_email(a) for a in addresses))

    @field_validator("interests")
    @classmethod
    def _not_blank(cls, interests: str) -> str:
        if not interests.strip():
            raise ValueError("describe your research interests; the LLM judges every paper against them")
        return interests.strip()
