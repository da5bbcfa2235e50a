"""What every delivery channel is: one class per kind (digest/channels/<kind>.py), registered by that kind in
digest/channels/__init__.py, so that one more channel is one more module.

A channel reports each delivery the moment it ends: "sent" the instant the service has accepted it, so the record
is written before anything else can happen; "failed" for a refusal for good, never retried; "pending" for a passing
one; "uncertain" when the service may have it but never said (a request sent and never answered), never sent again
so that it does not arrive twice. What a channel did not report stays pending for the next run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple, Protocol

from digest.config import Config
from digest.models import Delivery

if TYPE_CHECKING:
    from digest.links import Links


STOP_GRACE_SECONDS = 5.0  # after a stop, a message on the wire may still finish this long; then it is abandoned


class Result(NamedTuple):
    status: Literal["sent", "failed", "pending", "uncertain"]
    reason: str = ""
    # What to change, for a refusal for good: the address, unless the server said what else was wrong.
    fix: str = "check the address in config.yaml; a corrected address gets the digest on the next run"
    not_before: dt.datetime | None = None  # of a passing failure: the service asked for nothing before then


OnResult = Callable[[Delivery, Result], None]


class Channel(Protocol):
    kind: ClassVar[str]
    # After this many runs in a row in which a destination took nothing, its pending deliveries fail with the last
    # reason; None: they stay pending for as long as it takes (a mail server's 4xx is passing by definition).
    gives_up_after_runs: ClassVar[int | None]

    @classmethod
    def from_config(cls, config: Config, links: Links | None = None) -> Channel:
        """`links`: the web side's links (rating, archive), for the channels whose messages they go into."""
        ...

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        """Deliver each, reporting each as it ends. Once `stop` is set, start no other. Raise DeliveryError when the
        channel itself fails; the deliveries not reported stay pending."""
        ...

    async def check(self) -> str:
        """Reach the destination without delivering anything; say what was found, or raise DeliveryError."""
        ...
