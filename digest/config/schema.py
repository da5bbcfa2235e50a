"""config.yaml's schema: one model per section, in the order a run uses them (sources, the LLM, profiles,
delivery, schedule, web), each checking its own values."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digest.models import AnnounceType
from digest.secrets import token_parts
from digest.taxonomy import (
    ARCHIVES,
    BIORXIV_SUBJECTS,
    MEDRXIV_SUBJECTS,
    check_arxiv_category,
    is_arxiv_category,
    normalise_subject,
)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in config.yaml are relative to the config file, not to wherever digest was started."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return value if value.is_absolute() or base is None else Path(base) / value


def _http_url(url: str) -> str:
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(f"'{url}' is not an http(s) URL")
    return url.rstrip("/")


HttpURL = Annotated[str, AfterValidator(_http_url)]


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
        checked = [check_arxiv_category(c.strip()) for c in categories]
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
        return check_arxiv_category(category)
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
