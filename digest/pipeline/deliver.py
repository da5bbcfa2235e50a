"""Hand each pending digest to its channel, oldest first, and record what each destination said.

Every destination (an address, a notify URL) gets a message of its own. A refusal for good (an SMTP 5xx, an HTTP
401 or 404) fails the run once and is never retried; any other problem leaves the delivery pending for the next
run. One channel failing does not keep the others from delivering. Destinations taken out of config.yaml are
dropped, new ones get the pending digests too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from digest.channels import Result, channel, destinations, kind_of
from digest.channels.message import new_message_id
from digest.config import Config
from digest.errors import DeliveryError
from digest.links import Links
from digest.models import Delivery
from digest.state.store import Store
from digest.wording import counted

log = logging.getLogger(__name__)


@dataclass
class Delivered:
    """What each destination took in a run, and what it did not, for the run's summary."""

    sent: int = 0
    pending: int = 0  # left for the next run, this run's and earlier ones'
    failed: int = 0  # refused for good: reported by this run once, never retried
    uncertain: int = 0  # may have arrived (a request never answered): reported once, never sent again
    # By destination (its name, never a token): how many digests it took, refused, left pending, or may have.
    destinations: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # What was not delivered and why, with the fix: the caller raises it once it has taken in what was done.
    problem: DeliveryError | None = None


async def deliver_pending(config: Config, store: Store, stop: asyncio.Event) -> Delivered:
    """Send every pending delivery, oldest digest first, each recipient a message of their own, each recorded
    the moment the server accepts it. A refusal for good (5xx) fails this run once and is never retried; any
    other problem leaves the delivery pending for the next run and fails this one."""
    clock = time.monotonic()
    delivered = Delivered(warnings=_reconcile_recipients(config, store))
    problems: list[str] = []
    hints: list[str] = []
    outcomes: dict[str, list[Result]] = {}  # by destination, what each of this run's attempts came to

    def record(delivery: Delivery, result: Result) -> None:
        outcomes.setdefault(delivery.recipient, []).append(result)
        said = delivered.destinations.setdefault(delivery.recipient, {})
        said[result.status] = said.get(result.status, 0) + 1
        if result.status == "sent":
            store.mark_delivered(delivery.digest_id, delivery.recipient)
            delivered.sent += 1
            log.info("deliver: %s digest of %s to %s", delivery.profile, delivery.announced, delivery.recipient)
            return
        store.mark_attempt(delivery.digest_id, delivery.recipient, result.reason, status=result.status)
        if result.status == "failed":
            delivered.failed += 1
            delivered.errors.append(
                f"the {delivery.profile} digest of {delivery.announced} could not be delivered to "
                f"{delivery.recipient}, for good: {result.reason}; it is not tried again ({result.fix})"
            )
        elif result.status == "uncertain":
            delivered.uncertain += 1
            delivered.errors.append(
                f"the {delivery.profile} digest of {delivery.announced} may or may not have reached "
                f"{delivery.recipient}: it {result.reason}; it is not sent again, so that it does not arrive twice"
            )

    waits = store.destination_waits()
    waiting: dict[str, dt.datetime] = {}
    by_kind: dict[str, list[Delivery]] = {}
    for delivery in store.pending_deliveries():
        if delivery.recipient in waits:
            waiting[delivery.recipient] = waits[delivery.recipient]
            continue
        by_kind.setdefault(kind_of(delivery.recipient, config), []).append(delivery)
    delivered.warnings += [
        f"{name} asked to be sent nothing before {until:%Y-%m-%d %H:%M} UTC (Retry-After): its digests wait for a "
        "run after that"
        for name, until in waiting.items()
    ]
    links = Links.of(config, store) if "notify" in by_kind else None
    given_up: set[str] = set()
    for kind, deliveries in by_kind.items():
        if stop.is_set():
            break
        handler = channel(kind, config, links)
        try:
            await handler.deliver(deliveries, record, stop)
        except DeliveryError as error:
            problems.append(error.message)
            hints += [error.hint] if error.hint else []
        if handler.gives_up_after_runs is not None:
            tried = {d.recipient: outcomes[d.recipient] for d in deliveries if d.recipient in outcomes}
            given_up |= _count_runs(store, delivered, tried, handler.gives_up_after_runs)
    problems += [
        f"{name}: {result.reason}"
        for name, results in outcomes.items()
        if name not in given_up
        for result in results
        if result.status == "pending"
    ]
    delivered.pending = len(store.pending_deliveries())
    if delivered.sent or delivered.pending or delivered.failed:
        log.info(
            "deliver: %d sent, %d failed, %d still pending, in %.2f s",
            delivered.sent,
            delivered.failed,
            delivered.pending,
            time.monotonic() - clock,
        )
    if problems:
        unique = list(dict.fromkeys(problems))
        hint = "; ".join(dict.fromkeys(hints)) if hints else None
        delivered.problem = DeliveryError(
            "could not deliver: " + "; ".join(unique),
            hint=(hint + ". " if hint else "") + "what was not delivered stays pending and goes out first on the "
            "next run",
        )
    return delivered


def _count_runs(store: Store, delivered: Delivered, outcomes: dict[str, list[Result]], gives_up_after: int) -> set[str]:
    """Each destination's runs in a row that took nothing, and the wait its service asked for (Retry-After). On the
    `gives_up_after`th such run its pending digests fail with the last reason: a refusal that no answer names as
    one (a 200 that says no in a form digest does not know) is not retried for ever. Returns the destinations
    given up on."""
    given_up: set[str] = set()
    for name, results in outcomes.items():
        took = any(r.status == "sent" for r in results)
        passing = [r for r in results if r.status == "pending"]
        if not took and not passing:  # refused for good, or uncertain: already settled, never tried again
            continue
        not_before = max((r.not_before for r in passing if r.not_before is not None), default=None)
        runs = store.count_run(name, took=took, not_before=None if took else not_before)
        if took or runs < gives_up_after:
            continue
        last = passing[-1]
        failed = store.fail_pending(name, f"{last.reason} ({runs} runs in a row)")
        said = delivered.destinations[name]
        said["failed"] = said.get("failed", 0) + said.pop("pending", 0)
        delivered.failed += failed
        delivered.errors.append(
            f"{name} has taken no digest on {runs} runs in a row, the last time: {last.reason}; "
            f"{counted(failed, 'digest')} waiting for it are not tried again ({last.fix})"
        )
        given_up.add(name)
    return given_up


def _reconcile_recipients(config: Config, store: Store) -> list[str]:
    """Pending deliveries follow config.yaml: to an address removed from a profile (or of a removed profile)
    they are dropped, and an address added in its place gets that digest. Returns what changed, in words."""
    said: list[str] = []
    current = {p.name: destinations(p, config) for p in config.profiles}
    for name in store.profiles_with_pending_deliveries() | set(current):
        dropped, added = store.reconcile_recipients(
            name, current.get(name, []), lambda: new_message_id(config.email.from_)
        )
        said += [
            f"dropped the {name} digest of {day} for {recipient}: no longer in config.yaml"
            for day, recipient in dropped
        ]
        said += [f"the {name} digest of {day} goes to {recipient} too" for day, recipient in added]
    return said
