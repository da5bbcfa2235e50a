"""The outbox channel: the digest written to a folder, no server needed (the default, without email.smtp)."""

from __future__ import annotations

import asyncio
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from digest.channels.base import OnResult, Result
from digest.channels.message import addressed
from digest.config import Config
from digest.errors import DeliveryError
from digest.models import Delivery

if TYPE_CHECKING:
    from digest.links import Links


class OutboxChannel:
    """Writes `<outbox>/<profile>/<date>.html` (or `.md`) and the `.eml` of the message: no server needed."""

    kind: ClassVar[str] = "outbox"
    gives_up_after_runs: ClassVar[int | None] = None

    def __init__(self, folder: Path, sender: str, recipients: dict[str, list[str]]) -> None:
        self._folder = folder
        self._sender = sender
        self._recipients = recipients  # by profile: the .eml is addressed as the email would be

    @classmethod
    def from_config(cls, config: Config, links: Links | None = None) -> OutboxChannel:
        return cls(config.output.outbox, config.email.from_, {p.name: p.email for p in config.profiles})

    async def deliver(self, deliveries: list[Delivery], on_result: OnResult, stop: asyncio.Event) -> None:
        for delivery in deliveries:
            to = ", ".join(self._recipients.get(delivery.profile, [])) or self._sender
            message = addressed(delivery.message, to, delivery.message_id)
            parsed = email.message_from_bytes(message, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            html = parsed.get_body(preferencelist=("html",))
            body = (html or parsed.get_body(preferencelist=("plain",)) or parsed).get_content()
            folder = self._folder / delivery.profile
            day = delivery.announced.isoformat()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{day}.{'html' if html is not None else 'md'}").write_text(body, "utf-8")
                (folder / f"{day}.eml").write_bytes(message)
            except OSError as error:
                raise DeliveryError(
                    f"cannot write to the outbox {folder}: {error}",
                    hint="check output.outbox in config.yaml and the folder's permissions",
                ) from None
            on_result(delivery, Result("sent"))

    async def check(self) -> str:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            probe = self._folder / ".digest-check"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise DeliveryError(f"the outbox {self._folder} is not writable: {error}") from None
        return f"outbox {self._folder} is writable"
