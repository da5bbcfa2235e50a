"""The links a digest carries to the web side, and their checks.

A rating link is a token that names the profile, the paper and the rating, signed with HMAC-SHA256 under the web
secret (itsdangerous compares signatures in constant time); a token that does not verify names nothing, and neither
does one that verifies but is not spelled exactly as digest writes it (base64's spare bits let several spellings
decode alike). An archive and its feed are reached through a capability key derived from the same secret and the
profile's name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, ConfigDict, ValidationError

from digest.config import Config
from digest.models import Paper
from digest.state.store import Store

SECRET_SETTING = "web_secret"
RATE_SALT = "digest.rate"


class RateToken(BaseModel):
    """What a rating link says: this profile rates this paper so (0: takes the rating back, for undo)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p: str  # profile
    a: str  # arXiv id without version
    v: int  # the version the digest showed
    r: int  # 1, -1 or 0


def web_secret(config: Config, store: Store) -> str:
    """The configured secret, or the one generated once and kept in the state file."""
    if config.web is not None and config.web.secret is not None:
        return config.web.secret.get_secret_value()
    return store.setting(SECRET_SETTING, lambda: secrets.token_urlsafe(32))


class Links:
    def __init__(self, base_url: str, secret: str) -> None:
        self.base_url = base_url
        self._secret = secret.encode()
        self._signer = URLSafeSerializer(secret, salt=RATE_SALT, signer_kwargs={"digest_method": hashlib.sha256})
        # Digests sent by earlier versions carry links signed with itsdangerous' default, HMAC-SHA1: read, never made.
        self._legacy = URLSafeSerializer(secret, salt=RATE_SALT)

    @classmethod
    def of(cls, config: Config, store: Store) -> Links | None:
        """The links for this config's digests; None when the web side has no base_url to link to."""
        if config.web is None or config.web.base_url is None:
            return None
        return cls(config.web.base_url, web_secret(config, store))

    def sign(self, token: RateToken) -> str:
        return str(self._signer.dumps(token.model_dump()))

    def read(self, token: str) -> RateToken | None:
        for signer in (self._signer, self._legacy):
            try:
                said = RateToken.model_validate(signer.loads(token))
            except (BadSignature, ValidationError):
                continue
            return said if hmac.compare_digest(str(signer.dumps(said.model_dump())), token) else None
        return None

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
