"""Delivery channels, registered by kind: email through SMTP when `email.smtp` is set (otherwise into the outbox
folder), and each of a profile's `notify` URLs through Apprise. One more channel is one more module and one more
entry here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.channels.base import Channel, OnResult, Result
from digest.channels.notify import NotifyChannel, destination_name, is_notify_destination
from digest.channels.outbox import OutboxChannel
from digest.channels.smtp import SMTPChannel
from digest.config import Config, Profile

if TYPE_CHECKING:
    from digest.links import Links

__all__ = [
    "CHANNELS",
    "OUTBOX",
    "Channel",
    "NotifyChannel",
    "OnResult",
    "OutboxChannel",
    "Result",
    "SMTPChannel",
    "channel",
    "configured_channel",
    "destinations",
    "kind_of",
]

OUTBOX = "outbox"  # the destination name of a digest written to the outbox folder rather than mailed
CHANNELS: dict[str, type[Channel]] = {c.kind: c for c in (OutboxChannel, SMTPChannel, NotifyChannel)}


def configured_channel(config: Config) -> Channel:
    """The email channel: SMTP when email.smtp is set, otherwise the outbox folder."""
    return channel("smtp" if config.email.smtp is not None else "outbox", config)


def channel(kind: str, config: Config, links: Links | None = None) -> Channel:
    return CHANNELS[kind].from_config(config, links)


def kind_of(destination: str, config: Config) -> str:
    if destination == OUTBOX:
        return "outbox"
    if is_notify_destination(destination):
        return "notify"
    return "smtp" if config.email.smtp is not None else "outbox"


def destinations(profile: Profile, config: Config) -> list[str]:
    """Where the profile's digests go: each address (or the outbox, without SMTP, unless the profile only
    notifies), then each notify URL by its name."""
    if config.email.smtp is not None:
        mail = list(profile.email)
    else:
        mail = [OUTBOX] if profile.email or not profile.notify else []
    named = [destination_name(url.get_secret_value()) for url in profile.notify]
    return mail + list(dict.fromkeys(named))
