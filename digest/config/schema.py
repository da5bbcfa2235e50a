"""config.yaml's schema: one model per section, in the order a run uses them (sources, the LLM, profiles,
delivery, schedule, web), each checking its own values."""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digest.config.base import StrictModel, resolve_path
from digest.config.delivery import EmailConfig, OutputConfig
from digest.config.embeddings import EmbeddingsConfig
from digest.config.llm import LLMConfig
from digest.config.profiles import Profile
from digest.config.sources import ArxivConfig, BiorxivConfig, MedrxivConfig, PreprintServerConfig
from digest.secrets import basic_credential, encoded_forms, smtp_credentials, token_parts
from digest.taxonomy import (
    is_arxiv_category,
)


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


def _off_is_none(value: object) -> object:
    return None if value is False or value == "off" else value


class Config(StrictModel):
    # The sources, each optional, at least one: a config may follow bioRxiv alone.
    arxiv: ArxivConfig | None = None
    biorxiv: BiorxivConfig | None = None
    medrxiv: MedrxivConfig | None = None
    llm: LLMConfig
    # The taste model's vectors; `embeddings: off` (or null) judges every paper by the LLM alone, as before.
    embeddings: Annotated[EmbeddingsConfig | None, BeforeValidator(_off_is_none)] = EmbeddingsConfig()
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
        return resolve_path(value, info)

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
        """Everything that must never be shown: keys, passwords, and what URLs carry in their userinfo or query; each
        also as it may be encoded on its way out or back (a server echoing an Authorization header shows a user and
        password in base64)."""
        found = [self.llm.api_key.get_secret_value()]
        smtp = self.email.smtp
        if smtp is not None and smtp.username is not None and smtp.password is not None:
            password = smtp.password.get_secret_value()
            found += [password, *smtp_credentials(smtp.username, password)]
        if self.web is not None and self.web.secret is not None:
            found.append(self.web.secret.get_secret_value())
        if self.embeddings is not None and self.embeddings.api_key is not None:
            found.append(self.embeddings.api_key.get_secret_value())
        urls = [self.llm.base_url, *(s.api_url for s in self.preprint_servers)]
        urls += [self.embeddings.base_url] if self.embeddings is not None and self.embeddings.base_url else []
        urls += [p.library.zotero.api_url for p in self.profiles if p.library is not None and p.library.zotero]
        urls += [self.arxiv.feed_url, self.arxiv.api_url] if self.arxiv is not None else []
        for url in urls:
            parts = urlsplit(url)
            found += [p for p in (parts.password, parts.username) if p]
            if parts.username is not None and parts.password is not None:
                found.append(basic_credential(unquote(parts.username), unquote(parts.password)))
            found += [value for _, value in parse_qsl(parts.query) if value]
        for profile in self.profiles:
            found += [part for url in profile.notify for part in token_parts(url.get_secret_value())]
            zotero = profile.library.zotero if profile.library is not None else None
            if zotero is not None and zotero.api_key is not None:
                found.append(zotero.api_key.get_secret_value())
        return list(dict.fromkeys(form for secret in found for form in encoded_forms(secret)))

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
