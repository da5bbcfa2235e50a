"""Delivery channels, registered by kind: the config switches one on (`email.smtp` set: SMTP; otherwise the
outbox folder). One more channel is one more module and one more entry here."""

from __future__ import annotations

from digest.channels.base import Channel, OnResult, Result
from digest.channels.outbox import OutboxChannel
from digest.channels.smtp import SMTPChannel
from digest.config import Config

__all__ = [
    "CHANNELS",
    "OUTBOX",
    "Channel",
    "OnResult",
    "OutboxChannel",
    "Result",
    "SMTPChannel",
    "channel_for",
    "configured_channel",
    "destinations",
]

OUTBOX = "outbox"  # the destination name of a digest written to the outbox folder rather than mailed
CHANNELS: dict[str, type[Channel]] = {c.kind: c for c in (OutboxChannel, SMTPChannel)}


def configured_channel(config: Config) -> Channel:
    """SMTP when email.smtp is set, otherwise the outbox folder."""
    return CHANNELS["smtp" if config.email.smtp is not None else "outbox"].from_config(config)


def channel_for(destination: str, config: Config) -> Channel:
    return OutboxChannel.from_config(config) if destination == OUTBOX else configured_channel(config)


def destinations(recipients: list[str], config: Config) -> list[str]:
    return list(recipients) if config.email.smtp is not None else [OUTBOX]
