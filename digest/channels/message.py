"""The digest as an email message: built once, then addressed to each recipient alone (a Message-ID of their own,
kept across retries, dated when it is sent). The SMTP channel sends it; the outbox keeps it as an .eml file."""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage

from email_validator import EmailNotValidError, validate_email

from digest.models import Rendered


def build_message(rendered: Rendered, sender: str) -> EmailMessage:
    """multipart/alternative: the plain text first, then the HTML (or the Markdown as the only part). To, Date and
    Message-ID are set for each recipient when it is sent (`addressed`)."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = rendered.subject
    message["From"] = sender
    if rendered.html is not None:
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
    else:
        message.set_content(rendered.markdown or rendered.text)
    return message


def new_message_id(sender: str) -> str:
    domain = sender.rpartition("@")[2] or "localhost"
    return email.utils.make_msgid(domain=domain.encode("idna").decode() if not domain.isascii() else domain)


def addressed(message: bytes, recipient: str, message_id: str | None, *, sender: str | None = None) -> bytes:
    """The digest's message for one recipient, dated now. Internationalised addresses need SMTPUTF8 (RFC 6532)."""
    parsed = email.message_from_bytes(message, policy=email.policy.SMTP)
    for header, value in (("To", recipient), ("Date", email.utils.formatdate(localtime=True))):
        del parsed[header]
        parsed[header] = value
    if sender is not None:
        del parsed["From"]
        parsed["From"] = sender
    if message_id is not None:
        del parsed["Message-ID"]
        parsed["Message-ID"] = message_id
    utf8 = not (recipient.isascii() and str(parsed["From"]).isascii())
    return parsed.as_bytes(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)


def ascii_form(address: str) -> str | None:
    """The address as a server without SMTPUTF8 takes it (an internationalised domain in its IDNA form), if any."""
    if address.isascii():
        return address
    try:
        found = validate_email(address, check_deliverability=False, globally_deliverable=False).ascii_email
    except EmailNotValidError:
        return None
    return str(found) if found else None
