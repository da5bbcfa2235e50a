"""Every message exactly once, to the right people: `digest run` against aiosmtpd servers that refuse, stall, trickle,
lack SMTPUTF8 or answer QUIT badly. Each recipient gets a message of their own; a refusal for good is reported once
and never retried; a stop during delivery records only what the server accepted."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import base_config, run_cli, start_cli, wait_until
from tests.servers import slow_greeting_server, smtp_server


@pytest.fixture
def configure(tmp_path, feed_server, small_day, fake_llm, write_config) -> Callable[..., Path]:
    """A config for the loopback feed (a small day: what matters is delivery) and LLM, mailing `recipients` through
    the SMTP server on `port`."""
    (feed_url, _), (llm_url, _) = feed_server, fake_llm

    def make(port: int, recipients: list[str], **smtp: Any) -> Path:
        email = {"from": "digest@example.org", "smtp": {"host": "127.0.0.1", "port": port, "security": "none", **smtp}}
        config = base_config(tmp_path, feed_url, llm_url, email=email)
        config["profiles"][0]["email"] = recipients
        return write_config(config)

    return make


def digest(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--config", str(config))


def test_each_recipient_gets_a_message_of_their_own_also_at_an_internationalised_address(configure) -> None:
    recipients = ["me@example.org", "müller@example.org", "me@bücher.example", "ME@Example.ORG ", "me@example.org"]
    with smtp_server(smtputf8=True) as (port, inbox):
        run = digest("run", config=configure(port, recipients))
        assert run.returncode == 0, run.stdout + run.stderr
    envelopes = sorted(tuple(m[1]) for m in inbox.messages)
    # The same address twice is one recipient (the domain's case does not make another).
    assert envelopes == [("ME@example.org",), ("me@bücher.example",), ("me@example.org",), ("müller@example.org",)]
    for _, (recipient,), message in inbox.messages:
        assert message["To"] == recipient  # addressed to them alone
    assert len({m[2]["Message-ID"] for m in inbox.messages}) == 4
    assert "delivered    4, still pending 0" in run.stdout


def test_without_smtputf8_an_internationalised_address_fails_alone_and_is_not_retried(configure) -> None:
    recipients = ["me@example.org", "müller@example.org", "me@bücher.example"]
    with smtp_server(smtputf8=False) as (port, inbox):
        config = configure(port, recipients)
        check = digest("check", config=config)
        assert (
            check.returncode == 1 and "does not offer SMTPUTF8" in check.stdout and "müller@example.org" in check.stdout
        )
        first = digest("run", config=config)
        assert first.returncode == 1
        assert "could not be delivered to müller@example.org, for good" in first.stdout
        assert "does not offer SMTPUTF8 (RFC 6531), which the internationalised address müller@example.org needs" in (
            first.stdout
        )
        # The internationalised domain goes in its ASCII (IDNA) form; the other address as it is.
        assert sorted(m[1][0] for m in inbox.messages) == ["me@example.org", "me@xn--bcher-kva.example"]
        second = digest("run", config=config)
        assert second.returncode == 0, second.stdout  # reported once, by the run that met it
        assert len(inbox.messages) == 2
    status = digest("status", config=config)
    assert "müller@example.org" in status.stdout and "failed" in status.stdout


def test_a_recipient_refused_for_good_fails_once_the_others_get_their_own_message(configure) -> None:
    refuse = {"you@example.org": "550 5.1.1 <you@example.org>: Recipient address rejected: User unknown"}
    recipients = ["me@example.org", "you@example.org", "them@example.org"]
    with smtp_server(refuse=refuse) as (port, inbox):
        config = configure(port, recipients)
        first = digest("run", config=config)
        assert first.returncode == 1
        assert first.stdout.count("could not be delivered to you@example.org, for good: ") == 1
        assert first.stdout.count("fix:") <= 1
        assert "delivered    2, still pending 0, failed for good 1" in first.stdout
        assert sorted(m[1] for m in inbox.messages) == [["me@example.org"], ["them@example.org"]]

        second = digest("run", config=config)
        assert second.returncode == 0, second.stdout  # never retried
        assert len(inbox.messages) == 2
        status = digest("status", config=config)
        assert "you@example.org" in status.stdout and "failed  1 tries" in status.stdout
        assert "550 5.1.1" in status.stdout


def test_a_message_refused_for_its_size_fails_once_and_is_not_retried(configure) -> None:
    with smtp_server(data_reply="552 5.3.4 Message size exceeds fixed limit") as (port, inbox):
        config = configure(port, ["me@example.org"])
        first = digest("run", config=config)
        assert first.returncode == 1
        assert "for good: the server refused the message: 552 5.3.4 Message size exceeds fixed limit" in first.stdout
        assert "refused the sender" not in first.stdout
        # The hint is about the size, not the address (it said "check the address").
        assert "larger than the server takes (552): lower the profile's max_papers" in first.stdout
        assert "check the address" not in first.stdout
        assert digest("run", config=config).returncode == 0
    assert inbox.messages == []


def test_a_passing_refusal_stays_pending_and_a_corrected_address_gets_the_digest(configure) -> None:
    with smtp_server(refuse={"typo@example.org": "450 4.2.1 Mailbox busy, try later"}) as (port, inbox):
        first = digest("run", config=configure(port, ["me@example.org", "typo@example.org"]))
        assert first.returncode == 1 and "typo@example.org: the server refused typo@example.org: 450" in first.stdout
        assert "still pending 1" in first.stdout

        corrected = digest("run", config=configure(port, ["me@example.org", "right@example.org"]))
        assert corrected.returncode == 0, corrected.stdout
        assert "dropped the me digest of 2026-06-30 for typo@example.org: no longer in config.yaml" in corrected.stdout
        assert "the me digest of 2026-06-30 goes to right@example.org too" in corrected.stdout
    assert sorted(m[1][0] for m in inbox.messages) == ["me@example.org", "right@example.org"]


def test_a_bad_answer_to_quit_changes_nothing_what_was_accepted_is_recorded(configure) -> None:
    with smtp_server(quit_reply="500 5.5.1 I do not like goodbyes") as (port, inbox):
        config = configure(port, ["me@example.org", "you@example.org"])
        first = digest("run", config=config)
        assert first.returncode == 0, first.stdout + first.stderr
        assert digest("run", config=config).returncode == 0
    assert sorted(m[1][0] for m in inbox.messages) == ["me@example.org", "you@example.org"]  # once each


@pytest.mark.long
def test_sigterm_while_a_slow_server_holds_the_message_stops_in_bounded_time_and_records_only_accepted(
    configure,
) -> None:
    with smtp_server(accept_delay=15) as (port, inbox):
        config = configure(port, ["me@example.org"])
        process = start_cli("run", "--config", str(config))
        try:
            wait_until(lambda: inbox.accepted_at, timeout=60)  # the server holds the message; its 250 is 15 s away
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            code = process.wait(timeout=12)
            took = time.monotonic() - stopped_at
        finally:
            process.kill()
        output = process.stdout.read() if process.stdout else ""
        assert code == 143, output
        assert took < 8, f"took {took:.1f} s to stop"
        assert "Traceback" not in output and "CancelledError" not in output
        status = digest("status", config=config)
        assert "me@example.org" in status.stdout and "pending" in status.stdout  # not recorded: the 250 never came

        inbox._accept_delay = 0
        again = digest("run", config=config)
        assert again.returncode == 0, again.stdout
        assert "delivered    1, still pending 0" in again.stdout
    # The one duplicate is the protocol's own window (the server had the data, its 250 unread), with one Message-ID.
    assert len(inbox.messages) == 2 and inbox.messages[0][2]["Message-ID"] == inbox.messages[1][2]["Message-ID"]


def test_a_server_that_trickles_its_greeting_cannot_hold_the_run(configure) -> None:
    with slow_greeting_server() as port:
        started = time.monotonic()
        run = digest("run", config=configure(port, ["me@example.org"], timeout_seconds=2))
        took = time.monotonic() - started
    assert run.returncode == 1
    assert "did not finish greeting, TLS and login within 2 s" in run.stdout
    assert "still pending 1" in run.stdout
    assert took < 30, f"took {took:.1f} s"


def test_a_missing_ca_file_is_a_configuration_error(configure, tmp_path) -> None:
    done = digest("check", config=configure(1, ["me@example.org"], ca_file="no-such-ca.pem"))
    assert done.returncode == 2
    assert "email.smtp.ca_file" in done.stderr and "does not exist" in done.stderr and "Traceback" not in done.stderr
