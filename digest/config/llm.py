"""The llm section: the server, its limits, its prices, and live or Batch API mode."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
)

from digest.config.base import HttpURL, StrictModel


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
