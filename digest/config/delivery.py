"""Delivery: the email section (sender, SMTP server) and the output section (outbox, templates)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digest.config.base import StrictModel, check_email, resolve_path


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
        path = resolve_path(value, info)
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
        return check_email(address)


class OutputConfig(StrictModel):
    format: Literal["html", "markdown"] = "html"
    outbox: Annotated[Path, Field(validate_default=True)] = Path("outbox")
    templates: Path | None = None

    @field_validator("outbox", "templates")
    @classmethod
    def _relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)
