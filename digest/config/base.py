"""What every section of the config shares: strict models (an unknown key is an error), paths relative to the
config file, http(s) URLs, email addresses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in config.yaml are relative to the config file, not to wherever digest was started."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return value if value.is_absolute() or base is None else Path(base) / value


def http_url(url: str) -> str:
    if not re.match(r"https?://[^/\s]+", url):
        raise ValueError(f"'{url}' is not an http(s) URL")
    return url.rstrip("/")


HttpURL = Annotated[str, AfterValidator(http_url)]


def check_email(address: str) -> str:
    """A valid address, normalised (the domain lower-cased, Unicode in NFC); internationalised ones are welcome."""
    try:
        return str(validate_email(address.strip(), check_deliverability=False, globally_deliverable=False).normalized)
    except EmailNotValidError as error:
        raise ValueError(f"'{address}' is not an email address: {error}") from None
