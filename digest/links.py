"""The links a digest carries to the web side, and their checks.

A rating link is a token that names the profile, the paper and the rating, signed with HMAC-SHA256 under the web
secret (itsdangerous compares signatures in constant time); a token that does not verify names nothing, and neither
does one that verifies but is not spelled exactly as digest writes it (base64's spare bits let several spellings
decode alike). An archive and its feed are reached through a capability key derived from the same secret and the
profile's name. A "Save to Zotero" link is a token of its own kind (its own salt: a rating token is never one),
made only for the profiles that save to Zotero.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from typing import TypeVar

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, ConfigDict, ValidationError

from digest.config import Config
from digest.models import Paper
from digest.state.store import Store

SECRET_SETTING = "web_secret"
RATE_SALT = "digest.rate"
SAVE_SALT = "digest.save"
Token = TypeVar("Token", bound=BaseModel)


class RateToken(BaseModel):
    """What a rating link says: this profile rates this paper so (0: takes the rating back, for undo)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p: str  # profile
    a: str  # arXiv id without version
    v: int  # the version the digest showed
    r: int  # 1, -1 or 0


class SaveToken(BaseModel):
    """What a "Save to Zotero" link says: this profile saves this paper (at the version the digest showed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p: str  # profile
    a: str  # the paper's id without version
    v: int


def web_secret(config: Config, store: Store) -> str:
    """The configured secret, or the one generated once and kept in the state file."""
    if config.web is not None and config.web.secret is not None:
        return config.web.secret.get_secret_value()
    return store.setting(SECRET_SETTING, lambda: secrets.token_urlsafe(32))


def saving_profiles(config: Config) -> frozenset[str]:
    """The profiles whose digests carry "Save to Zotero": those with a Zotero library and a collection to save to."""
    return frozenset(
        p.name for p in config.profiles if p.library and p.library.zotero and p.library.zotero.save_to is not None
    )


class Links:
    def __init__(self, base_url: str, secret: str, saving: Collection[str] = ()) -> None:
        self.base_url = base_url
        self._secret = secret.encode()
        self._signer = URLSafeSerializer(secret, salt=RATE_SALT, signer_kwargs={"digest_method": hashlib.sha256})
        # Digests sent by earlier versions carry links signed with itsdangerous' default, HMAC-SHA1: read, never made.
        self._legacy = URLSafeSerializer(secret, salt=RATE_SALT)
        self._saver = URLSafeSerializer(secret, salt=SAVE_SALT, signer_kwargs={"digest_method": hashlib.sha256})
        self._saving = frozenset(saving)

    @classmethod
    def of(cls, config: Config, store: Store) -> Links | None:
        """The links for this config's digests; None when the web side has no base_url to link to."""
        if config.web is None or config.web.base_url is None:
            return None
        return cls(config.web.base_url, web_secret(config, store), saving_profiles(config))

    def sign(self, token: RateToken) -> str:
        return str(self._signer.dumps(token.model_dump()))

    def read(self, token: str) -> RateToken | None:
        for signer in (self._signer, self._legacy):
            said = _verified(signer, RateToken, token)
            if said is not None:
                return said
        return None

    def save(self, profile: str, paper: Paper) -> str | None:
        """The "Save to Zotero" link of a paper; None where the profile does not save to Zotero."""
        if profile not in self._saving:
            return None
        return self.save_url(SaveToken(p=profile, a=paper.id, v=paper.version))

    def save_url(self, token: SaveToken) -> str:
        return f"{self.base_url}/z/{self._saver.dumps(token.model_dump())}"

    def read_save(self, token: str) -> SaveToken | None:
        return _verified(self._saver, SaveToken, token)

    def rate(self, profile: str, paper: Paper, rating: int) -> str:
        return self.rate_url(RateToken(p=profile, a=paper.id, v=paper.version, r=rating))

    def rate_url(self, token: RateToken) -> str:
        return f"{self.base_url}/r/{self.sign(token)}"

    def key(self, profile: str) -> str:
        return hmac.new(self._secret, f"archive/{profile}".encode(), hashlib.sha256).hexdigest()[:32]

    def key_matches(self, profile: str, key: str) -> bool:
        return hmac.compare_digest(self.key(profile), key)

    def archive(self, profile: str) -> str:
        return f"{self.base_url}/a/{profile}/{self.key(profile)}/"

    def feed(self, profile: str) -> str:
        return f"{self.archive(profile)}feed.atom"


def _verified(signer: URLSafeSerializer, kind: type[Token], token: str) -> Token | None:
    """What a token says, if it verifies and is spelled exactly as digest writes it."""
    try:
        said = kind.model_validate(signer.loads(token))
    except (BadSignature, ValidationError):
        return None
    return said if hmac.compare_digest(str(signer.dumps(said.model_dump())), token) else None
