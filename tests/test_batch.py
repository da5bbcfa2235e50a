"""`llm.mode: batch`: the day's requests through OpenAI's Batch API, on the loopback LLM server's implementation of
it, with the real openai client; resumed after a crash, cut short by a deadline, replaced by live requests where
the server has no Batch API."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from digest.config import BatchDeadline, load_config
from digest.errors import ConfigError
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, SMALL_DAY, LoopbackRun, base_config, run_cli, start_cli, stop_process, wait_until
from tests.servers import BatchAPI, FakeLLM, html_titles

PAPERS = SMALL_DAY  # the small_day fixture's papers: what these tests are about is the batch, not the day


@pytest.fixture
def batch_llm(fake_llm: tuple[str, FakeLLM]) -> tuple[str, FakeLLM, BatchAPI]:
    """The loopback LLM server with OpenAI's Batch API beside its chat completions."""
    llm_url, llm = fake_llm
    llm.batch_api = BatchAPI(llm)
    return llm_url, llm, llm.batch_api


@pytest.fixture
def batch_mode(loopback_run: LoopbackRun, small_day: int) -> LoopbackRun:
    """The configured run (see conftest) in llm.mode batch, of a small day."""
    loopback_run.config["llm"]["mode"] = "batch"
    loopback_run.write()
    return loopback_run


def _batch_file_lines(batch_api: BatchAPI) -> list[dict[str, Any]]:
    (content,) = [c for c in batch_api.files.values() if b'"method": "POST"' in c]
    return [json.loads(line) for line in content.decode().splitlines()]


def test_a_batch_gives_the_same_digest_as_live_with_no_chat_request(tmp_path, loopback_run, small_day, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, loopback_run.inbox
    live_dir, batch_dir = tmp_path / "live", tmp_path / "batch"
    live_dir.mkdir(), batch_dir.mkdir()
    live = run_cli("run", "--config", str(loopback_run.write(folder=live_dir)))
    assert live.returncode == 0, live.stdout + live.stderr
    assert llm.requests == PAPERS
    live_prompts = {json.loads(m[-1]["content"])["title"]: m for m in llm.prompts}

    loopback_run.config["llm"]["mode"] = "batch"
    batched = run_cli("run", "--config", str(loopback_run.write(folder=batch_dir)))
    assert batched.returncode == 0, batched.stdout + batched.stderr
    assert llm.requests == PAPERS  # not one chat completion more
    assert batch_api.uploads == 1 and len(batch_api.batches) == 1
    (batch,) = batch_api.batches.values()
    assert batch["status"] == "completed" and batch["request_counts"]["total"] == PAPERS
    # Each line is the request live mode sends, and its custom_id names profile and paper.
    lines = _batch_file_lines(batch_api)
    assert len(lines) == PAPERS == len({line["custom_id"] for line in lines})
    for line in lines:
        assert line["url"] == "/v1/chat/completions" and line["custom_id"].startswith("me/")
        assert line["body"]["model"] == "gpt-4o-mini"
        assert line["body"]["response_format"]["type"] == "json_schema"
        title = json.loads(line["body"]["messages"][-1]["content"])["title"]
        assert line["body"]["messages"] == live_prompts[title]
    # The same digest, to the letter of its papers.
    assert len(inbox.messages) == 2
    live_message, batch_message = (m for _, _, m in inbox.messages)
    assert live_message["Subject"] == batch_message["Subject"]
    assert html_titles(live_message) == html_titles(batch_message)
    text = batch_message.get_body(preferencelist=("plain",)).get_content()
    assert f"{PAPERS} LLM requests ({PAPERS} in a batch, at batch prices)" in " ".join(text.split())
    # The summary prices the batch at half, and says what live would have cost.
    assert f"llm          {PAPERS} answered in a batch, 0 live requests" in batched.stdout
    assert "with batch prices (live would have cost" in batched.stdout
    assert f"batch        {batch['id']} completed: {PAPERS} of {PAPERS} answered" in batched.stdout
    status = run_cli("status", "--config", str(batch_dir / "config.yaml"))
    assert "(batch; live: $" in status.stdout, status.stdout


def _kill_run_once(path: Path, ready: Callable[[], bool]) -> None:
    """`digest run`, killed with SIGKILL (no handler, no clean-up) once `ready()` holds: a crash while waiting."""
    process = start_cli("run", "--config", str(path))
    try:
        wait_until(ready)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()


def test_a_run_killed_while_its_batch_runs_resumes_that_batch(tmp_path, batch_mode, batch_llm):
    (_, llm, batch_api), inbox, path = batch_llm, batch_mode.inbox, batch_mode.path
    batch_api.hold = True
    state = tmp_path / "state.sqlite3"

    def recorded() -> bool:
        with sqlite3.connect(state) as db:
            return bool(db.execute("SELECT count(*) FROM batches WHERE batch_id IS NOT NULL").fetchone()[0])

    _kill_run_once(path, lambda: batch_api.polls >= 2 and recorded())
    assert len(batch_api.batches) == 1 and not inbox.messages

    # As if the kill had come after the batch was created and before its id was recorded: found by its metadata.
    with sqlite3.connect(state) as db:
        db.execute("UPDATE batches SET batch_id = NULL")
    batch_api.hold = False
    rerun = run_cli("run", "--config", str(path))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(batch_api.batches) == 1 and batch_api.uploads == 1  # never a second batch, never paid twice
    assert llm.requests == 0
    assert "batch: resuming batch_" in rerun.stderr
    assert len(inbox.messages) == 1
    assert f"{PAPERS} classified" in rerun.stdout
    # A third run has nothing left to ask, in a batch or live.
    third = run_cli("run", "--config", str(path))
    assert third.returncode == 0 and len(batch_api.batches) == 1 and llm.requests == 0
    assert len(inbox.messages) == 1


def test_at_the_deadline_the_batch_is_cancelled_and_the_rest_goes_live(batch_mode, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, batch_mode.inbox
    batch_api.hold, batch_api.done_while_held = True, 4
    batch_mode.config["llm"]["batch_deadline"] = "3s"
    path = batch_mode.write()
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    (batch,) = batch_api.batches.values()
    assert batch_api.cancels == 1 and batch["status"] == "cancelled"
    assert llm.requests == PAPERS - 4  # what the batch finished is kept, and only the rest is asked live
    assert len(inbox.messages) == 1
    assert f"{PAPERS} classified" in result.stdout
    assert f"cancelled: 4 of {PAPERS} answered; {PAPERS - 4} asked live" in result.stdout


def test_without_a_batch_api_one_warning_and_live_requests(tmp_path, batch_mode):
    llm = batch_mode.llm  # answers 404 on /files and /batches, as vLLM, Ollama and LM Studio do
    inbox = batch_mode.inbox
    result = batch_mode.digest("run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert llm.requests == PAPERS
    assert len(inbox.messages) == 1
    warnings = [line for line in result.stdout.splitlines() if "has no Batch API" in line]
    assert len(warnings) == 1 and "HTTP 404 on /files" in warnings[0]
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    # Back in live mode, the dry run offers no batch to a server whose Batch API answered 404.
    batch_mode.config["llm"]["mode"] = "live"
    live = batch_mode.write()
    dry = run_cli("run", "--dry-run", "--config", str(live))
    assert dry.returncode == 0 and "would cost" in dry.stdout and "as a batch" not in dry.stdout, dry.stdout
    check = run_cli("check", "--config", str(live))
    assert "no Batch API" in check.stdout, check.stdout


def test_lines_that_failed_are_missing_or_invalid_are_asked_live(batch_mode, batch_llm):
    (_, llm, batch_api), inbox, path = batch_llm, batch_mode.inbox, batch_mode.path
    feed = parse_feed(CL_FEED.read_bytes(), url="", categories=["cs.CL"], announce_types=["new", "cross"])
    titles = [p.title for p in feed.papers]
    batch_api.failed_for, batch_api.missing_for, batch_api.invalid_for = {titles[0]}, {titles[1]}, {titles[2]}
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert llm.requests == 3
    assert {json.loads(m[-1]["content"])["title"] for m in llm.prompts} == set(titles[:3])
    assert f"{PAPERS} classified" in result.stdout and "0 failed" in result.stdout
    assert f"completed: {PAPERS - 3} of {PAPERS} answered; 3 asked live" in result.stdout
    assert "1 failed in the batch (HTTP 500)" in result.stdout
    assert "1 not in the batch's output" in result.stdout
    assert "1 the answer was not a valid verdict" in result.stdout
    assert len(inbox.messages) == 1


def test_an_expired_batch_keeps_what_it_finished(batch_mode, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, batch_mode.inbox
    batch_api.expire_after = 8
    result = batch_mode.digest("run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert llm.requests == PAPERS - 8
    assert f"expired: 8 of {PAPERS} answered" in result.stdout
    assert len(inbox.messages) == 1


def test_dry_run_shows_live_and_batch_cost(tmp_path, feed_server, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    config = base_config(tmp_path, feed_url, llm_url)
    config["llm"]["mode"] = "batch"
    result = run_cli("run", "--dry-run", "--config", str(write_config(config)))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "would cost" in line)
    live = float(line.split("live ~$")[1].split(",")[0])
    batch = float(line.split("as a batch ~$")[1].split(",")[0])
    assert batch == pytest.approx(live / 2, rel=0.01) and "(llm.mode: batch)" in line
    assert llm.requests == 0


def test_batch_deadline_is_a_local_time_or_a_duration(tmp_path, write_config):
    started = dt.datetime(2026, 11, 30, 6, 30, tzinfo=dt.UTC)  # 01:30 in New York
    at_seven = BatchDeadline(at=dt.time(7, 0))
    assert at_seven.when(started, "America/New_York") == dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    assert at_seven.when(started.replace(hour=13), "America/New_York").date() == dt.date(2026, 12, 1)
    assert BatchDeadline(after=dt.timedelta(hours=5)).when(started, "UTC") == started + dt.timedelta(hours=5)

    def load(value: str) -> Any:
        path = tmp_path / "config.yaml"
        path.write_text(
            "arxiv: {categories: [cs.CL]}\nllm:\n  api_key: k\n  mode: batch\n"
            f"  batch_deadline: {value}\nprofiles: [{{name: me, interests: x}}]\n"
        )
        return load_config(path, environ={})

    assert load("'07:00'").llm.batch_deadline == at_seven
    assert load("07:00").llm.batch_deadline == at_seven
    assert load("4h30m").llm.batch_deadline == BatchDeadline(after=dt.timedelta(hours=4, minutes=30))
    with pytest.raises(ConfigError, match=r"line 5.*llm.batch_deadline.*in quotes"):
        load("21:30")  # YAML 1.1 reads this as the number 1290
    with pytest.raises(ConfigError, match="neither a local time"):
        load("tomorrow")


def test_serve_submits_at_the_scheduled_time_and_delivers_when_the_verdicts_are_in(batch_mode, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, batch_mode.inbox
    batch_mode.config["schedule"] = {"cron": "0 7 * * *", "timezone": "UTC"}
    path = batch_mode.write()
    batch_api.hold = True

    first = start_cli("serve", "--config", str(path))  # never ran: the due run happens at start, and waits
    wait_until(lambda: batch_api.polls >= 2)
    output = stop_process(first)  # SIGTERM while waiting: the batch is recorded, nothing is cancelled
    assert "stopped by a signal at a safe point" in output
    assert batch_api.cancels == 0 and not inbox.messages

    batch_api.hold = False
    second = start_cli("serve", "--config", str(path))
    wait_until(lambda: len(inbox.messages) == 1, timeout=60)
    output = stop_process(second)
    assert len(batch_api.batches) == 1 and llm.requests == 0
    assert "batch: resuming batch_" in output


def test_a_failed_batch_sends_everything_live_and_says_why(batch_mode, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, batch_mode.inbox
    batch_api.refuse_model = True
    result = batch_mode.digest("run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert llm.requests == PAPERS and len(inbox.messages) == 1
    assert f"failed: 0 of {PAPERS} answered; {PAPERS} asked live" in result.stdout
    assert "the server said: The model is not supported by the Batch API." in result.stdout


def test_back_in_live_mode_a_batch_left_open_is_cancelled_and_what_it_finished_is_kept(batch_mode, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, batch_mode.inbox
    batch_api.hold, batch_api.done_while_held = True, 4
    config, path = batch_mode.config, batch_mode.path
    _kill_run_once(path, lambda: batch_api.polls >= 3)

    config["llm"]["mode"] = "live"  # the reader switched back while the batch was open
    result = run_cli("run", "--config", str(batch_mode.write()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(batch_api.batches) == 1 and batch_api.cancels == 1  # none submitted, the open one stopped
    assert llm.requests == PAPERS - 4  # what it had finished was paid for, and is kept
    assert f"cancelled: 4 of {PAPERS} answered" in result.stdout
    assert len(inbox.messages) == 1


@pytest.fixture
def batch_run(batch_mode, batch_llm) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`digest run` in batch mode (with these llm settings) against the loopback servers; it must succeed."""

    def run(**llm: Any) -> subprocess.CompletedProcess[str]:
        batch_mode.config["llm"].update(llm)
        result = run_cli("run", "--config", str(batch_mode.write()), timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


def _open_batches(state: Path) -> list[tuple[str | None, str]]:
    with sqlite3.connect(state) as db:
        return list(db.execute("SELECT batch_id, status FROM batches WHERE closed_at IS NULL").fetchall())


@pytest.mark.parametrize("failure", ["a 500 after creating it", "no answer, and a listing that lags"])
def test_an_uncertain_create_is_resolved_by_its_metadata_and_never_paid_twice(
    failure, tmp_path, batch_llm, smtp, batch_run
):
    """A 5xx on create after the server made the batch, or a timeout while the listing did not show it yet: the
    requests went live and the batch ran on, paid twice."""
    (_, llm, batch_api), (_, inbox) = batch_llm, smtp
    if failure.startswith("a 500"):
        batch_api.create_answers = 500
    else:
        batch_api.create_hangs, batch_api.listed_after = 6.0, 8.0  # the client gives up after timeout_seconds (5)
    result = batch_run()
    assert len(batch_api.batches) == 1 and llm.requests == 0  # the one batch answered all; nothing went live
    assert f"{PAPERS} classified" in result.stdout and len(inbox.messages) == 1
    assert "created although the server answered" in result.stdout
    assert _open_batches(tmp_path / "state.sqlite3") == []


@pytest.mark.long
def test_a_batch_never_listed_goes_live_once_and_an_endless_listing_is_bounded(tmp_path, batch_llm, smtp, batch_run):
    """`batches.list` answering has_more for ever: 1,815 list requests in 120 s."""
    (_, llm, batch_api), (_, inbox) = batch_llm, smtp
    batch_api.create_answers, batch_api.endless_list = 503, True
    result = batch_run()
    assert batch_api.lists <= 6 * 10  # five searches, and one once its requests were answered, of ten pages at most
    assert llm.requests == PAPERS and len(inbox.messages) == 1
    assert "the batch may not have been created (the server answered HTTP 503)" in result.stdout
    # Kept open: should the batch appear, the next run cancels it.
    assert _open_batches(tmp_path / "state.sqlite3") == [(None, "uncertain")]


@pytest.mark.long
def test_a_batch_listed_only_after_its_requests_went_live_is_cancelled_at_once(tmp_path, batch_llm, smtp, batch_run):
    (_, llm, batch_api), (_, inbox) = batch_llm, smtp
    batch_api.create_answers, batch_api.hidden_from_lists, batch_api.hold = 502, 5, True  # not in the 5 searches
    result = batch_run()
    assert llm.requests == PAPERS and len(inbox.messages) == 1
    ((batch_id, batch),) = batch_api.batches.items()
    assert batch["status"] == "cancelling" and batch_api.cancels == 1  # stopped as soon as it was seen
    assert f"batch {batch_id} was listed after its requests went live, and was cancelled" in result.stdout
    assert _open_batches(tmp_path / "state.sqlite3") == []


@pytest.mark.long
def test_a_batch_that_ignores_cancel_does_not_hold_the_digest_past_the_deadline(tmp_path, batch_llm, smtp, batch_run):
    """The digest waited up to 10 minutes past batch_deadline for a batch that would not stop."""
    (_, llm, batch_api), (_, inbox) = batch_llm, smtp
    batch_api.hold, batch_api.done_while_held, batch_api.ignore_cancel = True, 4, True
    result = batch_run(batch_deadline="3s")
    assert llm.requests == PAPERS and len(inbox.messages) == 1  # its answers are not out: every paper went live
    assert f"may still bill for up to {PAPERS} of them (paid twice if it does)" in result.stdout
    ((batch_id, status),) = _open_batches(tmp_path / "state.sqlite3")  # open, so that the next run cancels again
    assert batch_id in batch_api.batches and status == "in_progress"


def test_a_batch_of_a_model_since_replaced_is_cancelled_not_left_open(tmp_path, batch_mode, batch_llm):
    (_, llm, batch_api), inbox = batch_llm, batch_mode.inbox
    batch_api.hold = True
    config, path = batch_mode.config, batch_mode.path
    _kill_run_once(path, lambda: batch_api.polls >= 2 and bool(_open_batches(tmp_path / "state.sqlite3")))
    (first,) = batch_api.batches

    config["llm"]["model"] = "gpt-4.1-mini"  # changed while the batch was open
    batch_api.hold = False
    result = run_cli("run", "--config", str(batch_mode.write()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert batch_api.batches[first]["status"] == "cancelling" and batch_api.cancels == 1
    assert f"{first} cancelled: asked of gpt-4o-mini; llm.model is now gpt-4.1-mini" in result.stdout
    assert len(batch_api.batches) == 2 and llm.requests == 0  # the new model's one batch
    assert _open_batches(tmp_path / "state.sqlite3") == [] and len(inbox.messages) == 1


def test_a_result_file_over_the_limit_is_asked_live_and_said_to_be_paid_twice(
    tmp_path, feed_server, small_day, batch_llm, write_config, monkeypatch
):
    """A 300 MB output file was cut at 200 MB, and its papers asked live without a word about the cost."""
    import asyncio

    import digest.llm.batch
    from digest.pipeline.run import Pipeline

    feed_url, _ = feed_server
    llm_url, llm, batch_api = batch_llm
    monkeypatch.setattr(digest.llm.batch, "MAX_OUTPUT_BYTES", 100_000)  # as 200 MB is to a 300 MB file
    batch_api.output_padding = 150_000
    config = base_config(tmp_path, feed_url, llm_url)
    config["llm"]["mode"] = "batch"
    loaded = load_config(write_config(config), {"OPENAI_API_KEY": "test-key"})
    summary = asyncio.run(Pipeline(loaded).run(catch_up=True))
    assert summary.profiles[0].classified == PAPERS and llm.requests == PAPERS
    (warning,) = [w for w in summary.warnings if "larger than 100,000 bytes" in w]
    assert "paid for, and are asked live again (paid twice)" in warning
