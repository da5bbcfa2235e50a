"""Hand each pending digest to its channel, oldest first, and record what each destination said.

Every destination (an address, a notify URL) gets a message of its own. A refusal for good (an SMTP 5xx, an HTTP
401 or 404) fails the run once and is never retried; any other problem leaves the delivery pending for the next
run. One channel failing does not keep the others from delivering. Destinations taken out of config.yaml are
dropped, new ones get the pending digests too.
"""

from __future__ import annotations

import asyncio
import logging
import time

from digest.channels import Result, channel, destinations, kind_of
from digest.channels.message import new_message_id
from digest.config import Config
from digest.errors import DeliveryError
from digest.links import Links
from digest.models import Delivery, RunSummary
from digest.state.store import Store

log = logging.getLogger(__name__)


async def deliver_pending(config: Config, store: Store, summary: RunSummary, stop: asyncio.Event) -> None:
    """Send every pending delivery, oldest digest first, each recipient a message of their own, each recorded
    the moment the server accepts it. A refusal for good (5xx) fails this run once and is never retried; any
    other problem leaves the delivery pending for the next run and fails this one."""
    clock = time.monotonic()
    _reconcile_recipients(config, store, summary)
    problems: list[str] = []
    hints: list[str] = []

    def record(delivery: Delivery, result: Result) -> None:
        said = summary.destinations.setdefault(delivery.recipient, {})
        said[result.status] = said.get(result.status, 0) + 1
        if result.status == "sent":
            store.mark_delivered(delivery.digest_id, delivery.recipient)
            summary.deliveries_sent += 1
            log.info("deliver: %s digest of %s to %s", delivery.profile, delivery.announced, delivery.recipient)
            return
        store.mark_attempt(delivery.digest_id, delivery.recipient, result.reason, status=result.status)
        if result.status == "failed":
            summary.deliveries_failed += 1
            summary.errors.append(
                f"the {delivery.profile} digest of {delivery.announced} could not be delivered to "
                f"{delivery.recipient}, for good: {result.reason}; it is not tried again ({result.fix})"
            )
        elif result.status == "uncertain":
            summary.deliveries_uncertain += 1
            summary.errors.append(
                f"the {delivery.profile} digest of {delivery.announced} may or may not have reached "
                f"{delivery.recipient}: it {result.reason}; it is not sent again, so that it does not arrive twice"
            )
        else:
            problems.append(f"{delivery.recipient}: {result.reason}")

    by_kind: dict[str, list[Delivery]] = {}
    for delivery in store.pending_deliveries():
        by_kind.setdefault(kind_of(delivery.recipient, config), []).append(delivery)
    links = Links.of(config, store) if "notify" in by_kind else None
    for kind, deliveries in by_kind.items():
        if stop.is_set():
            break
        try:
            await channel(kind, config, links).deliver(deliveries, record, stop)
        except DeliveryError as error:
            problems.append(error.message)
            hints += [error.hint] if error.hint else []
    summary.deliveries_pending = len(store.pending_deliveries())
    if summary.deliveries_sent or summary.deliveries_pending or summary.deliveries_failed:
        log.info(
            "deliver: %d sent, %d failed, %d still pending, in %.2f s",
            summary.deliveries_sent,
            summary.deliveries_failed,
            summary.deliveries_pending,
            time.monotonic() - clock,
        )
    if problems:
        unique = list(dict.fromkeys(problems))
        hint = "; ".join(dict.fromkeys(hints)) if hints else None
        raise DeliveryError(
            "could not deliver: " + "; ".join(unique),
            hint=(hint + ". " if hint else "") + "what was not delivered stays pending and goes out first on the "
            "next run",
        )


def _reconcile_recipients(config: Config, store: Store, summary: RunSummary) -> None:
    """Pending deliveries follow config.yaml: to an address removed from a profile (or of a removed profile)
    they are dropped, and an address added in its place gets that digest."""
    current = {p.name: destinations(p, config) for p in config.profiles}
    for name in store.profiles_with_pending_deliveries() | set(current):
        dropped, added = store.reconcile_recipients(
            name, current.get(name, []), lambda: new_message_id(config.email.from_)
        )
        summary.warnings += [
            f"dropped the {name} digest of {day} for {recipient}: no longer in config.yaml"
            for day, recipient in dropped
        ]
        summary.warnings += [f"the {name} digest of {day} goes to {recipient} too" for day, recipient in added]
