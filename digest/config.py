"""config.yaml: the models that validate it, and a loader whose errors name the line, the key and the fix."""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import zoneinfo
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digest.errors import ConfigError
from digest.subjects import BIORXIV_SUBJECTS, MEDRXIV_SUBJECTS, normalise_subject

DEFAULT_CONFIG_PATH = Path("config.yaml")
ENV_CONFIG_PATH = "DIGEST_CONFIG"
ENV_DATA_DIR = "DIGEST_DATA"

# arXiv's archives; a category is an archive, optionally followed by a subject class (cs.CL, astro-ph.GA).
ARCHIVES = frozenset(
    [
        "astro-ph",
        "cond-mat",
        "cs",
        "econ",
        "eess",
        "gr-qc",
        "hep-ex",
        "hep-lat",
        "hep-ph",
        "hep-th",
        "math",
        "math-ph",
        "nlin",
        "nucl-ex",
        "nucl-th",
        "physics",
        "q-bio",
        "q-fin",
        "quant-ph",
        "stat",
    ]
)
# Archives whose subject classes are two capital letters (cs.CL, math.AP); the rest use lower-case words.
UPPERCASE_SUBJECT_ARCHIVES = frozenset({"cs", "econ", "eess", "math", "q-bio", "q-fin", "stat"})
AnnounceType = Literal["new", "cross", "replace", "replace-cross"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in config.yaml are relative to the config file, not to wherever digest was started."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return value if value.is_absolute() or base is None else Path(base) / value


def is_arxiv_category(category: str) -> bool:
    """An arXiv category (cs.CL, math, hep-th), not a bioRxiv or medRxiv subject (neuroscience)."""
    return category.partition(".")[0] in ARCHIVES and normalise_subject(category) not in (
        BIORXIV_SUBJECTS + MEDRXIV_SUBJECTS
    )


def _http_url(url: str) -> str:
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(f"'{url}' is not an http(s) URL")
    return url.rstrip("/")


HttpURL = Annotated[str, AfterValidator(_http_url)]


def _check_category(category: str) -> str:
    archive, _, subject = category.partition(".")
    if archive not in ARCHIVES:
        close = difflib.get_close_matches(archive.lower(), ARCHIVES, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}{'.' + subject if subject else ''}?)" if close else ""
        raise ValueError(f"'{category}' is not an arXiv category{hint}")
    if not subject:
        return category
    if archive in UPPERCASE_SUBJECT_ARCHIVES:
        if not re.fullmatch(r"[A-Za-z]{2}", subject):
            raise ValueError(
                f"'{category}' is not an arXiv category: {archive} subjects are two letters, like {archive}.LG"
            )
        if subject != subject.upper():
            raise ValueError(f"'{category}' is not an arXiv category (did you mean {archive}.{subject.upper()}?)")
    elif not re.fullmatch(r"[a-z]+(-[a-z]+)*", subject):
        raise ValueError(
            f"'{category}' is not an arXiv category: {archive} subjects are lower-case, like physics.optics"
        )
    return category


class ArxivConfig(StrictModel):
    categories: Annotated[list[str], Field(min_length=1)]
    announce_types: Annotated[list[AnnounceType], Field(min_length=1)] = ["new", "cross"]
    feed_url: HttpURL = "https://rss.arxiv.org/rss"
    api_url: HttpURL = "http://export.arxiv.org/api/query"
    api_page_size: Annotated[int, Field(ge=1, le=2000)] = 200
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0  # each download as a whole, not just each read
    max_retry_seconds: Annotated[float, Field(ge=0)] = 120.0
    max_feed_mb: Annotated[float, Field(gt=0)] = 50.0  # arXiv's biggest daily feeds are a few MB

    @field_validator("categories")
    @classmethod
    def _valid_categories(cls, categories: list[str]) -> list[str]:
        checked = [_check_category(c.strip()) for c in categories]
        return list(dict.fromkeys(checked))


def _check_subject(name: str, subjects: tuple[str, ...], server: str) -> str:
    """A subject as the server's API spells it, from any spelling of it (Cell-Biology, cell_biology)."""
    found = normalise_subject(name)
    if found in subjects:
        return found
    close = difflib.get_close_matches(found, subjects, n=1, cutoff=0.6)
    said = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"'{name}' is not a {server} subject; {said}its subjects: {', '.join(subjects)}")


class PreprintServerConfig(StrictModel):
    """bioRxiv or medRxiv, through their shared API (api.biorxiv.org): the subjects followed, and the same
    politeness as for arXiv. Paced at one request a second whatever is set: the API publishes no limit."""

    label: ClassVar[str]
    subjects: ClassVar[tuple[str, ...]]

    categories: Annotated[list[str], Field(min_length=1)]
    # new: a paper's first version; replace: a later one (as arXiv's replacements; a reader's liked paper's new
    # version comes whatever this says, as for arXiv).
    announce_types: Annotated[list[Literal["new", "replace"]], Field(min_length=1)] = ["new"]
    api_url: HttpURL = "https://api.biorxiv.org"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0  # each page as a whole
    max_retry_seconds: Annotated[float, Field(ge=0)] = 120.0
    max_page_mb: Annotated[float, Field(gt=0)] = 20.0  # a page is 30 to 100 records, well under 1 MB

    @field_validator("categories")
    @classmethod
    def _valid_subjects(cls, categories: list[str]) -> list[str]:
        return list(dict.fromkeys(_check_subject(c, cls.subjects, cls.label) for c in categories))


class BiorxivConfig(PreprintServerConfig):
    label: ClassVar[str] = "bioRxiv"
    subjects: ClassVar[tuple[str, ...]] = BIORXIV_SUBJECTS


class MedrxivConfig(PreprintServerConfig):
    label: ClassVar[str] = "medRxiv"
    subjects: ClassVar[tuple[str, ...]] = MEDRXIV_SUBJECTS


def _check_profile_category(category: str) -> str:
    """A profile may follow any source's categories: an arXiv category, or a bioRxiv or medRxiv subject."""
    subject = normalise_subject(category)
    if subject in BIORXIV_SUBJECTS or subject in MEDRXIV_SUBJECTS:
        return subject
    if "." in category or category in ARCHIVES:
        return _check_category(category)
    close = difflib.get_close_matches(subject, BIORXIV_SUBJECTS + MEDRXIV_SUBJECTS, n=1, cutoff=0.6)
    said = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(
        f"'{category}' is neither an arXiv category (like cs.CL) nor a bioRxiv or medRxiv subject (like "
        f"neuroscience){said}"
    )


class TokenPrices(StrictModel):
    """US dollars per million tokens."""

    input: Annotated[float, Field(ge=0)]
    cached_input: Annotated[float, Field(ge=0)] | None = None
    output: Annotated[float, Field(ge=0)]


class Prices(TokenPrices):
    """Live prices, and the Batch API's (half of live when not given: OpenAI's and Azure's discount)."""

    batch: TokenPrices | None = None

    def for_batch(self) -> TokenPrices:
        if self.batch is not None:
            return self.batch
        cached = None if self.cached_input is None else self.cached_input / 2
        return TokenPrices(input=self.input / 2, cached_input=cached, output=self.output / 2)


# llm.batch_deadline: a local time ("07:00") or a duration after the run starts ("5h", "90m", "4h30m").
CLOCK_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class BatchDeadline(StrictModel):
    at: dt.time | None = None  # the next time the clock shows this, in schedule.timezone
    after: dt.timedelta | None = None  # this long after the run starts

    def when(self, started: dt.datetime, timezone: str) -> dt.datetime:
        if self.after is not None:
            return started + self.after
        assert self.at is not None
        local = started.astimezone(zoneinfo.ZoneInfo(timezone))
        deadline = local.replace(hour=self.at.hour, minute=self.at.minute, second=0, microsecond=0)
        return deadline if deadline > local else deadline + dt.timedelta(days=1)


def _batch_deadline(value: object) -> object:
    if value is None or isinstance(value, BatchDeadline | dict):
        return value
    if isinstance(value, int):  # YAML 1.1 reads an unquoted 21:30 as the number 1290
        raise ValueError("write the time in quotes, like batch_deadline: '21:30', or a duration like '5h'")
    text = str(value).strip()
    if clock := CLOCK_TIME.fullmatch(text):
        return BatchDeadline(at=dt.time(int(clock[1]), int(clock[2])))
    duration = DURATION.fullmatch(text)
    if text and duration:
        hours, minutes, seconds = (int(part or 0) for part in duration.groups())
        if hours or minutes or seconds:
            return BatchDeadline(after=dt.timedelta(hours=hours, minutes=minutes, seconds=seconds))
    raise ValueError(f"'{text}' is neither a local time like '07:00' nor a duration like '5h', '90m' or '4h30m'")


class LLMConfig(StrictModel):
    model: str = "gpt-4o-mini"
    base_url: HttpURL = "https://api.openai.com/v1"
    api_key: SecretStr
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 16
    requests_per_minute: Annotated[int, Field(ge=1)] = 500
    tokens_per_minute: Annotated[int, Field(ge=100)] = 200_000
    # Gateways may hold a request for a minute before they answer it: a shorter timeout would send it twice.
    timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    stall_seconds: Annotated[float, Field(gt=0)] = 900.0
    structured_output: Literal["json_schema", "json_object"] = "json_schema"
    price: Prices | None = None
    # batch: one request to the Batch API for the whole day, at half the price, answered within 24 h.
    mode: Literal["live", "batch"] = "live"
    # When a batch is not done by then, it is cancelled and the rest is sent live, so the digest is on time.
    batch_deadline: Annotated[BatchDeadline | None, BeforeValidator(_batch_deadline)] = None


def _check_email(address: str) -> str:
    """A valid address, normalised (the domain lower-cased, Unicode in NFC); internationalised ones are welcome."""
    try:
        return str(validate_email(address.strip(), check_deliverability=False, globally_deliverable=False).normalized)
    except EmailNotValidError as error:
        raise ValueError(f"'{address}' is not an email address: {error}") from None


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


class Profile(StrictModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
    email: list[str] = []
    # Chat and push destinations, as Apprise URLs: usually a ${VAR} each, because the URL carries a token.
    notify: list[Annotated[SecretStr, AfterValidator(_check_notify_url)]] = []
    # weekly: one digest a week, on `weekday`, of the week's best; papers are still fetched and judged every day.
    cadence: Literal["daily", "weekly"] = "daily"
    weekday: Weekday = "monday"
    interests: Annotated[str, Field(min_length=1)]
    min_score: Annotated[int, Field(ge=0, le=10)] = 6
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
        return list(dict.fromkeys(_check_email(a) for a in addresses))

    @field_validator("interests")
    @classmethod
    def _not_blank(cls, interests: str) -> str:
        if not interests.strip():
            raise ValueError("describe your research interests; the LLM judges every paper against them")
        return interests.strip()


class SMTPConfig(StrictModel):
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    ca_file: Path | None = None  # a private CA's certificate, for a server whose certificate it signed

    @field_validator("ca_file")
    @classmethod
    def _relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve_path(value, info)
        if not path.is_file():
            raise ValueError(f"the CA certificate file {path} does not exist")
        return path

    @model_validator(mode="after")
    def _login_needs_both(self) -> SMTPConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password to log in, or neither")
        return self


class EmailConfig(StrictModel):
    from_: Annotated[str, Field(alias="from")] = "arxiv-digest@localhost"
    smtp: SMTPConfig | None = None

    @field_validator("from_")
    @classmethod
    def _valid_sender(cls, address: str) -> str:
        # name@localhost (the default) is what a machine without a mail domain sends as; anything else must be valid.
        if re.fullmatch(r"[A-Za-z0-9._+-]+@localhost", address.strip()):
            return address.strip()
        return _check_email(address)


class OutputConfig(StrictModel):
    format: Literal["html", "markdown"] = "html"
    outbox: Annotated[Path, Field(validate_default=True)] = Path("outbox")
    templates: Path | None = None

    @field_validator("outbox", "templates")
    @classmethod
    def _relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve_path(value, info)


class ScheduleConfig(StrictModel):
    # arXiv's RSS feeds are rebuilt at about midnight US Eastern, Monday to Friday: 01:30 there is safely after.
    cron: str = "30 1 * * mon-fri"
    timezone: str = "America/New_York"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{name}' is not a time zone name like Europe/Berlin or UTC") from None
        return name

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleConfig:
        if self.cron == ScheduleConfig.model_fields["cron"].default:
            return self  # known to parse: apscheduler (20 ms) is imported only to check a cron someone wrote
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(self.cron, timezone=self.timezone)
        except ValueError as error:
            raise ValueError(f"cron '{self.cron}' is not a 5-field crontab expression ({error})") from None
        return self


class WebConfig(StrictModel):
    """The small web side: rating links in every digest, an archive, an Atom feed per profile."""

    listen: str = "127.0.0.1:8080"  # host:port; loopback by default, put a reverse proxy with TLS in front
    base_url: str | None = None  # how readers reach it (https://digest.example.org); no links without it
    secret: SecretStr | None = None  # signs links; default: generated once and kept in the state file

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{listen}' is not host:port, like 127.0.0.1:8080")
        return listen

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
            raise ValueError(f"'{url}' is not an http(s) URL like https://digest.example.org")
        return None if url is None else url.rstrip("/")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not secret.get_secret_value():
            return None  # an unset ${VAR} for a command that signs nothing
        if secret is not None and len(secret.get_secret_value()) < 16:
            raise ValueError("the secret must be at least 16 characters; or leave it out to have one generated")
        return secret

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Config(StrictModel):
    # The sources, each optional, at least one: a config may follow bioRxiv alone.
    arxiv: ArxivConfig | None = None
    biorxiv: BiorxivConfig | None = None
    medrxiv: MedrxivConfig | None = None
    llm: LLMConfig
    profiles: Annotated[list[Profile], Field(min_length=1)]
    email: EmailConfig = EmailConfig()
    # Validated when left out too, so that its default outbox is beside the config like one that is written out.
    output: OutputConfig = Field(default_factory=dict, validate_default=True)
    schedule: ScheduleConfig = ScheduleConfig()
    state: Annotated[Path, Field(validate_default=True)] = Path("digest.sqlite3")
    retention_days: Annotated[int, Field(ge=30)] = 365
    # A run still going then stops at a safe point: what was judged goes out, the rest comes in the next digest.
    max_run_minutes: Annotated[float, Field(gt=0)] = 120
    web: WebConfig | None = None

    @field_validator("state")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve_path(value, info)

    @field_validator("profiles")
    @classmethod
    def _unique_names(cls, profiles: list[Profile]) -> list[Profile]:
        names = [p.name for p in profiles]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"profile names must be unique; {', '.join(duplicates)} appears more than once")
        return profiles

    @property
    def preprint_servers(self) -> list[PreprintServerConfig]:
        return [server for server in (self.biorxiv, self.medrxiv) if server is not None]

    @property
    def all_categories(self) -> list[str]:
        """What the fetches ask for: each source's categories and every profile's own."""
        found = list(self.arxiv.categories if self.arxiv is not None else [])
        found += [c for server in self.preprint_servers for c in server.categories if c not in found]
        for profile in self.profiles:
            found += [c for c in profile.categories or [] if c not in found]
        return found

    @property
    def fetched(self) -> ArxivConfig:
        """The arXiv settings with every arXiv category any profile follows: one fetch serves them all."""
        assert self.arxiv is not None
        return self.arxiv.model_copy(update={"categories": [c for c in self.all_categories if is_arxiv_category(c)]})

    def fetched_from(self, server: PreprintServerConfig) -> PreprintServerConfig:
        """The server's settings with every one of its subjects any profile follows."""
        return server.model_copy(update={"categories": [c for c in self.all_categories if c in server.subjects]})

    @property
    def secrets(self) -> list[str]:
        """Everything that must never be shown: keys, passwords, and what URLs carry in their userinfo or query."""
        found = [self.llm.api_key.get_secret_value()]
        if self.email.smtp is not None and self.email.smtp.password is not None:
            found.append(self.email.smtp.password.get_secret_value())
        if self.web is not None and self.web.secret is not None:
            found.append(self.web.secret.get_secret_value())
        urls = [self.llm.base_url, *(s.api_url for s in self.preprint_servers)]
        urls += [self.arxiv.feed_url, self.arxiv.api_url] if self.arxiv is not None else []
        for url in urls:
            parts = urlsplit(url)
            found += [p for p in (parts.password, parts.username) if p]
            found += [value for _, value in parse_qsl(parts.query) if value]
        for profile in self.profiles:
            found += [part for url in profile.notify for part in token_parts(url.get_secret_value())]
        return found

    def categories_of(self, profile: Profile) -> list[str]:
        """The profile's own categories, or every source's."""
        if profile.categories:
            return profile.categories
        found = list(self.arxiv.categories if self.arxiv is not None else [])
        return found + [c for server in self.preprint_servers for c in server.categories if c not in found]

    @model_validator(mode="after")
    def _sources_for_every_category(self) -> Config:
        if self.arxiv is None and not self.preprint_servers:
            raise ValueError(
                "no source to fetch from: add an arxiv: section (categories: [cs.CL], say), a biorxiv: or a "
                "medrxiv: one (categories: [neuroscience])"
            )
        for profile in self.profiles:
            for category in profile.categories or []:
                if is_arxiv_category(category):
                    if self.arxiv is None:
                        raise ValueError(
                            f"profile {profile.name} follows {category}, an arXiv category, but there is no arxiv: "
                            "section; add one, or take the category out"
                        )
                elif not any(category in server.subjects for server in self.preprint_servers):
                    where = " or ".join(s.label for s in (BiorxivConfig, MedrxivConfig) if category in s.subjects)
                    raise ValueError(
                        f"profile {profile.name} follows '{category}', a {where} subject, but there is no "
                        f"{where.lower().replace(' or ', ': or ')}: section; add one, or take the subject out"
                    )
        return self

    @model_validator(mode="after")
    def _recipients_when_sending(self) -> Config:
        if self.email.smtp is not None:
            silent = [p.name for p in self.profiles if not p.email and not p.notify]
            if silent:
                raise ValueError(
                    f"email.smtp is set but profile {', '.join(silent)} has no email addresses (nor notify URLs)"
                )
        return self


def token_parts(url: str) -> list[str]:
    """What in an Apprise URL may be a secret: the URL, its userinfo and query values, and every host or path
    part long enough to be a token (Telegram's bot token is the host; Slack's, Discord's and ntfy's are paths)."""
    parts = urlsplit(url)
    found = [url, *(p for p in (parts.password, parts.username) if p)]
    found += [value for _, value in parse_qsl(parts.query) if len(value) >= 8]
    found += [p for p in (parts.netloc.rpartition("@")[2], *parts.path.split("/")) if len(p) >= 16]
    return found


def default_config_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(ENV_CONFIG_PATH) or DEFAULT_CONFIG_PATH)


# The parts of the config that hold secrets, by what uses them: a command needs the secrets of the parts it uses.
Section = Literal["llm", "smtp", "web", "notify"]
SECTIONS: dict[Section, tuple[str, ...]] = {
    "llm": ("llm",),
    "smtp": ("email", "smtp"),
    "web": ("web",),
    "notify": ("profiles", "*", "notify"),  # every profile's notify URLs
}


def load_config(
    path: Path, environ: Mapping[str, str] | None = None, *, uses: Collection[Section] = tuple(SECTIONS)
) -> Config:
    """Read, expand and validate config.yaml, or raise ConfigError listing every problem with its line.

    A secret (`api_key`, `password`, `secret`) from an unset variable is an error only in a section in `uses`:
    `digest status` needs no API key. Elsewhere it is left empty.
    """
    environ = os.environ if environ is None else environ
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            shown,
            [
                "the file does not exist: copy the example config.yaml from the repository, "
                f"or point --config or ${ENV_CONFIG_PATH} at yours"
            ],
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(shown, [f"cannot be read: {error}"]) from None

    if len(text) > MAX_CONFIG_CHARACTERS:
        raise ConfigError(shown, [f"the file has {len(text):,} characters; a config is a few thousand"])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if not _small_enough(root):
            raise ConfigError(
                shown,
                [
                    f"the file expands to more than {MAX_CONFIG_VALUES:,} values (aliases of aliases?); "
                    "a config is a few hundred"
                ],
            )
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark, context = error.problem_mark, error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        started = f" ({error.context} at line {context.line + 1})" if error.context and context is not None else ""
        raise ConfigError(shown, [f"{where}: YAML syntax error: {error.problem}{started}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError(shown, [f"YAML syntax error: {error}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(shown, ["the file should be a mapping of sections (arxiv:, llm:, profiles:, ...)"])

    lines = _line_numbers(root)
    if isinstance(data.get("llm"), dict):
        data["llm"].setdefault("api_key", "${OPENAI_API_KEY}")
    data, missing = _expand_env(data, environ, ())
    missing = [(loc, name) for loc, name in missing if not _unused_secret(loc, uses)]
    problems = [
        f"{_where(loc, lines)}: environment variable {name} is not set; export it, or put it in the "
        "environment file your container or service reads"
        for loc, name in missing
    ]
    try:
        # In a container the config is mounted read-only; DIGEST_DATA points relative paths at the data volume.
        base_dir = Path(environ[ENV_DATA_DIR]) if environ.get(ENV_DATA_DIR) else path.resolve().parent
        config = Config.model_validate(data, context={"base_dir": base_dir, "uses": uses})
    except ValidationError as error:
        problems += [_describe(e, lines) for e in error.errors() if not _is_missing_env(e["loc"], missing)]
    if problems:
        raise ConfigError(shown, problems)
    return config


MAX_CONFIG_CHARACTERS = 1_000_000
MAX_CONFIG_VALUES = 20_000


def _small_enough(root: yaml.Node | None) -> bool:
    """Whether the document, with its aliases expanded, stays small: every later walk (line numbers, ${VAR},
    validation) expands them, and a few nested aliases make billions of values."""
    stack, seen = [root], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            return False
        if isinstance(node, yaml.MappingNode):
            stack += [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return True


Location = tuple[str | int, ...]


def _line_numbers(node: yaml.Node | None, loc: Location = ()) -> dict[Location, int]:
    """Map every key path in the YAML document to its 1-based line, so errors can point at the line."""
    if node is None:
        return {}
    lines: dict[Location, int] = {loc: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, str(key_node.value))
            lines.update(_line_numbers(value_node, child))
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, (*loc, index)))
    return lines


SECRET_KEYS = frozenset({"api_key", "password", "secret"})
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, environ: Mapping[str, str], loc: Location) -> tuple[Any, list[tuple[Location, str]]]:
    """Replace ${VAR} in every string with the environment's value; collect the variables that are not set."""
    missing: list[tuple[Location, str]] = []
    if isinstance(value, str):
        names = ENV_REFERENCE.findall(value)
        missing = [(loc, n) for n in names if n not in environ or environ[n] == ""]
        return ENV_REFERENCE.sub(lambda m: environ.get(m.group(1), ""), value), missing
    if isinstance(value, dict):
        expanded = {}
        for key, item in value.items():
            expanded[key], found = _expand_env(item, environ, (*loc, str(key)))
            missing += found
        return expanded, missing
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            expanded_item, found = _expand_env(item, environ, (*loc, index))
            items.append(expanded_item)
            missing += found
        return items, missing
    return value, missing


def _unused_secret(loc: Location, uses: Collection[Section]) -> bool:
    secret = str(loc[-1]) in SECRET_KEYS or _is_notify_url(loc)
    return secret and not any(_within(loc, SECTIONS[s]) for s in uses)


def _within(loc: Location, section: tuple[str, ...]) -> bool:
    return len(loc) >= len(section) and all(part in ("*", found) for part, found in zip(section, loc, strict=False))


def _is_notify_url(loc: Location) -> bool:
    """A notify URL is a secret as a whole: it carries the service's token."""
    return _within(loc, SECTIONS["notify"])


def _is_missing_env(loc: Location, missing: list[tuple[Location, str]]) -> bool:
    return any(tuple(loc[: len(m)]) == m for m, _ in missing)


def _key_path(loc: Location) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _where(loc: Location, lines: dict[Location, int]) -> str:
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in lines:
            return f"line {lines[loc[:depth]]}: {_key_path(loc)}"
    return _key_path(loc)


def _model_at(loc: Location) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc`, to suggest its keys."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        model = _nested_model(field.annotation)
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _describe(error: Any, lines: dict[Location, int]) -> str:
    # Pydantic puts the model name of a `X | None` field into the location; it means nothing to a user.
    loc: Location = tuple(p for p in error["loc"] if p not in {"SMTPConfig", "Prices", "WebConfig"})
    where = _where(loc, lines)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = [f.alias or name for name, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        suggestion = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(known)}"
        return f"{where}: unknown key; {suggestion}"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    secret = bool(set(map(str, loc)) & SECRET_KEYS) or _is_notify_url(loc)
    if kind not in {"value_error", "assertion_error"} and not secret and not isinstance(value, dict | list):
        message += f" (found {value!r})"
    fix = TYPE_FIXES.get(kind)
    return f"{where}: {message}" + (f"; {fix}" if fix else "")


# What to write instead, for pydantic's words about a value of the wrong kind.
TYPE_FIXES = {
    "int_parsing": "write a whole number, like 6",
    "int_type": "write a whole number, like 6",
    "int_from_float": "write a whole number, like 6",
    "float_parsing": "write a number, like 2.5",
    "float_type": "write a number, like 2.5",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write text; put it in quotes if it looks like a number, a date or true/false",
    "list_type": "write a list: [a, b] on one line, or one '- item' a line below the key",
    "dict_type": "write a section: its keys indented on the lines below",
    "model_type": "write a section: its keys indented on the lines below",
    "model_attributes_type": "write a section: its keys indented on the lines below",
}
