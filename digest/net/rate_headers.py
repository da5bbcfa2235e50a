"""What a server's answer says of its rate limits: the x-ratelimit-* counters of the minute, and the wait it asks
for before a retry."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

# Hosts whose x-ratelimit-*-requests family counts a day, not a minute (Groq's documented RPD): it says nothing of
# the per-minute limit that its 429s come from.
REQUESTS_PER_DAY_HOSTS = ("api.groq.com",)
FAMILIES = ("requests", "tokens")


def minute_counters(headers: Mapping[str, str], base_url: str) -> dict[str, str]:
    """The response's headers as counters of the minute: a family that counts another window, or carries Azure's
    placeholders (a limit of 0 or -1, a negative remaining), is unknown, not zero, and is left out."""
    host = urlsplit(base_url).hostname or ""
    kept = {name.lower(): value for name, value in headers.items()}
    for kind in FAMILIES:
        limit = header_number(kept.get(f"x-ratelimit-limit-{kind}"))
        remaining = header_number(kept.get(f"x-ratelimit-remaining-{kind}"))
        placeholder = (limit is not None and limit <= 0) or (remaining is not None and remaining < 0)
        if placeholder or (kind == "requests" and host.endswith(REQUESTS_PER_DAY_HOSTS)):
            for field in ("limit", "remaining", "reset"):
                kept.pop(f"x-ratelimit-{field}-{kind}", None)
    return kept


def parse_duration(text: str) -> float | None:
    """OpenAI's reset headers: '1s', '6m0s', '20ms', '1h2m3.5s'."""
    text = text.strip()
    parts = DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        try:
            return float(text)
        except ValueError:
            return None
    return sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a server asks for: OpenAI's retry-after-ms, or retry-after in seconds, as a duration, or as an
    HTTP date (RFC 9110); else a gateway's own (LiteLLM's llm_provider-retry-after), else the reset of a counter
    that is spent or not reported. None when there is no usable answer."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or headers.get("llm_provider-retry-after") or "").strip()
    if not value:
        resets = [
            parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            for kind in ("requests", "tokens")
            if header_number(headers.get(f"x-ratelimit-remaining-{kind}")) in (None, 0)
        ]
        return max((reset for reset in resets if reset is not None), default=None)
    seconds = parse_duration(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def reports_counters(headers: Mapping[str, str]) -> bool:
    """Whether the server reports a remaining-requests or remaining-tokens counter: a rate-limited API's."""
    return any(header_number(headers.get(f"x-ratelimit-remaining-{kind}")) is not None for kind in FAMILIES)


def header_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
