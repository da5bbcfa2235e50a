"""A profile's library: the reader's Zotero library, read where it lives (the Web API or Zotero desktop's local API),
and a library file that Better BibTeX keeps exported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from digest.config.base import HttpURL, StrictModel, resolve_path

CollectionName = Annotated[str, Field(min_length=1, max_length=400)]


class ZoteroConfig(StrictModel):
    user_id: Annotated[int, Field(ge=0)] | None = None  # 0 is the local API's own user
    group_id: Annotated[int, Field(ge=1)] | None = None
    # A key from https://www.zotero.org/settings/keys; none for Zotero desktop's local API, which takes none.
    api_key: SecretStr | None = None
    api_url: HttpURL = "https://api.zotero.org"  # or http://localhost:23119/api, Zotero desktop's local API
    # The collections read (with their subcollections), by name; the whole library when left out.
    collections: Annotated[list[CollectionName], Field(min_length=1)] | None = None
    not_for_me: list[CollectionName] = []  # collections that mean "less like this"
    save_to: CollectionName | None = None  # where "Save to Zotero" puts papers; no such link without it

    @model_validator(mode="after")
    def _one_library(self) -> ZoteroConfig:
        if (self.user_id is None) == (self.group_id is None):
            raise ValueError(
                "say whose library: user_id (your userID, on https://www.zotero.org/settings/keys; 0 for Zotero "
                "desktop's local API) or group_id (the number in the group's address), one of the two"
            )
        # An unset ${VAR} leaves "" for a command that does not use the library: only a key left out is none.
        if self.save_to is not None and self.api_key is None:
            raise ValueError(
                "save_to needs an api_key with write access (Zotero desktop's local API is read-only); make one "
                "at https://www.zotero.org/settings/keys/new, or leave save_to out"
            )
        return self

    @property
    def path(self) -> str:
        """The library's path in the API: /users/ID or /groups/ID."""
        return f"/users/{self.user_id}" if self.group_id is None else f"/groups/{self.group_id}"

    @property
    def library(self) -> str:
        """The library's name in the state and in messages: the API's address of it (never the key)."""
        return f"{self.api_url}{self.path}"

    @property
    def local(self) -> bool:
        """Zotero desktop's local API: no key, on this computer."""
        return self.api_key is None and urlsplit(self.api_url).hostname in ("localhost", "127.0.0.1", "::1")

    @property
    def label(self) -> str:
        whose = f"user {self.user_id}" if self.group_id is None else f"group {self.group_id}"
        return f"the Zotero library of {whose}" + (" (Zotero desktop's local API)" if self.local else "")


class LibraryConfig(StrictModel):
    zotero: ZoteroConfig | None = None
    # A library file (BibTeX, CSL JSON, a list of ids), as Better BibTeX keeps it exported: re-read when it changes.
    file: Path | None = None

    @field_validator("file")
    @classmethod
    def _relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _something(self) -> LibraryConfig:
        if self.zotero is None and self.file is None:
            raise ValueError("say where the library is: a zotero: section, a file:, or both")
        return self
