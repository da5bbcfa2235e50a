"""`digest serve`, `status`, `health` and the container, against loopback servers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.cli.serve import previous_fire_time, serve
from digest.config import load_config
from digest.heartbeat import HEALTHY_WITHIN_SECONDS, healthy
from digest.models import RunSummary
from digest.pipeline.run import Pipeline
from digest.state.store import Store
from tests.helpers import base_config, run_cli, stop_process, wait_until

REPO = Path(__file__).parent.parent


async def _serve_for(trigger, run_once, *, last_good_run, heartbeat: Path, until) -> None:
    stop = asyncio.Event()

    async def watch() -> None:
        while not until():  # noqa: ASYNC110 (the condition is plain test state, not an event)
            await asyncio.sleep(0.05)
        stop.set()

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(serve(trigger, run_once, last_good_run=last_good_run, heartbeat=heartbeat, stop=stop), 30)
    await watcher


def test_a_trigger_runs_the_pipeline_again_and_again(tmp_path, feed_server, small_day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    config = load_config(write_config(base_config(tmp_path, feed_url, llm_url)), {"OPENAI_API_KEY": "test-key"})
    summaries: list[RunSummary] = []

    async def run_once(stop: asyncio.Event) -> None:
        summaries.append(await Pipeline(config).run(catch_up=True, stop=stop))

    now = dt.datetime.now(dt.UTC)
    asyncio.run(
        _serve_for(
            IntervalTrigger(seconds=0.5),
            run_once,
            last_good_run=now,
            heartbeat=tmp_path / "hb",
            until=lambda: len(summaries) >= 3,
        )
    )
    assert [s.errors for s in summaries] == [[], [], []]
    assert summaries[0].profiles[0].classified == small_day and summaries[0].deliveries_sent == 1
    assert all(s.not_modified and s.usage.requests == 0 for s in summaries[1:])  # later runs: nothing new
    assert llm.requests == small_day
    assert (tmp_path / "hb").exists()


def test_missed_runs_are_coalesced_into_one_at_start(tmp_path):
    calls: list[float] = []

    async def run_once(stop: asyncio.Event) -> None:
        calls.append(time.monotonic())

    now = dt.datetime.now(dt.UTC)
    # Daily, two hours ago: three days down means three missed runs, and one run makes up for them.
    daily = CronTrigger(hour=(now - dt.timedelta(hours=2)).hour, minute=0, timezone="UTC")
    three_days_ago = now - dt.timedelta(days=3)
    started = time.monotonic()
    asyncio.run(
        _serve_for(
            daily,
            run_once,
            last_good_run=three_days_ago,
            heartbeat=tmp_path / "hb",
            until=lambda: bool(calls) and time.monotonic() - started > 1.5,
        )
    )
    assert len(calls) == 1

    calls.clear()
    started = time.monotonic()
    asyncio.run(
        _serve_for(
            daily,
            run_once,
            last_good_run=now,
            heartbeat=tmp_path / "hb",
            until=lambda: time.monotonic() - started > 1.0,
        )
    )
    assert calls == []  # the last due run happened: nothing to make up


def test_previous_fire_time():
    weekdays = CronTrigger.from_crontab("30 1 * * mon-fri", timezone="America/New_York")
    monday_noon = dt.datetime(2026, 11, 23, 17, 0, tzinfo=dt.UTC)
    assert previous_fire_time(weekdays, monday_noon, dt.timedelta(days=8)) == dt.datetime(
        2026, 11, 23, 6, 30, tzinfo=dt.UTC
    )
    sunday = dt.datetime(2026, 11, 22, 17, 0, tzinfo=dt.UTC)
    assert previous_fire_time(weekdays, sunday, dt.timedelta(days=8)) == dt.datetime(2026, 11, 20, 6, 30, tzinfo=dt.UTC)


def test_no_overlap_when_a_run_outlasts_the_interval(tmp_path):
    running, most, calls = [0], [0], [0]

    async def run_once(stop: asyncio.Event) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        calls[0] += 1
        await asyncio.sleep(0.8)
        running[0] -= 1

    now = dt.datetime.now(dt.UTC)
    asyncio.run(
        _serve_for(
            IntervalTrigger(seconds=0.2),
            run_once,
            last_good_run=now,
            heartbeat=tmp_path / "hb",
            until=lambda: calls[0] >= 2,
        )
    )
    assert most[0] == 1


def _serve_process(config_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DIGEST_CONFIG", "DIGEST_DATA"}} | {
        "OPENAI_API_KEY": "test-key"
    }
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.long
def test_sigterm_mid_run_then_restart_delivers_each_digest_exactly_once(loopback_run):
    llm, inbox, config = loopback_run.llm, loopback_run.inbox, loopback_run.config
    config["schedule"] = {"cron": "0 7 * * *", "timezone": "UTC"}
    config["llm"]["max_concurrency"] = 2
    path = loopback_run.write()
    llm.latency = 0.2  # 137 papers two at a time: the run is still going when the signal comes

    first = _serve_process(path)  # never ran: the due run happens at start
    wait_until(lambda: llm.requests >= 10)
    output = stop_process(first)
    assert "stopped by a signal at a safe point" in output
    assert inbox.messages == []
    asked_before_restart = llm.requests

    llm.latency = 0
    second = _serve_process(path)  # the due run did not end well: it happens again at start
    wait_until(lambda: len(inbox.messages) == 1, timeout=60)
    stop_process(second)
    # Verdicts of the first run were kept: only the rest (and the few abandoned in flight) were asked again.
    assert llm.requests <= 137 + 2
    assert asked_before_restart < llm.requests

    heartbeat = path.parent / "state.sqlite3.heartbeat"
    before = heartbeat.stat().st_mtime
    third = _serve_process(path)  # the due run happened: nothing at start
    # Up (on a busy machine that takes seconds), and it would have started a missed run by now: it did not.
    wait_until(lambda: heartbeat.stat().st_mtime > before, timeout=60)
    time.sleep(1.5)
    stop_process(third)
    assert len(inbox.messages) == 1
    assert llm.requests <= 137 + 2

    status = run_cli("status", "--config", str(path))
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert "started" in lines[0] and "relevant" in lines[0]
    assert "ok" in lines[2] and "me=" in lines[2]
    assert "stopped" in lines[3]


def test_serving_waits_for_its_schedule_after_a_good_run(tmp_path, feed_server, small_day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    path = write_config(base_config(tmp_path, feed_url, llm_url, schedule={"cron": "0 7 * * *", "timezone": "UTC"}))
    assert run_cli("run", "--config", str(path)).returncode == 0
    requests = llm.requests
    process = _serve_process(path)
    wait_until(lambda: (tmp_path / "state.sqlite3.heartbeat").exists())
    health = run_cli("health", "--config", str(path))
    assert health.returncode == 0 and "healthy" in health.stdout
    output = stop_process(process)
    assert "next run at" in output and "07:00:00" in output
    assert llm.requests == requests


def test_health_fails_without_a_fresh_heartbeat(tmp_path):
    heartbeat = tmp_path / "hb"
    assert not healthy(heartbeat, time.time())
    heartbeat.touch()
    assert healthy(heartbeat, time.time())
    old = time.time() - HEALTHY_WITHIN_SECONDS - 1
    os.utime(heartbeat, (old, old))
    assert not healthy(heartbeat, time.time())


def test_json_logs_are_one_object_per_line(tmp_path, feed_server, small_day, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    result = run_cli(
        "run", "--log-format", "json", "--config", str(write_config(base_config(tmp_path, feed_url, llm_url)))
    )
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(r["message"].startswith(f"fetch: {small_day} papers") for r in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])


def test_one_run_at_a_time_per_state_file(tmp_path, feed_server, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, llm = fake_llm
    path = write_config(base_config(tmp_path, feed_url, llm_url))
    config = load_config(path, {"OPENAI_API_KEY": "test-key"})
    store = Store(config.state)
    store.lock_for_run()
    try:
        result = run_cli("run", "--config", str(path))
    finally:
        store.close()
    assert result.returncode == 1
    assert "another digest run is using" in result.stderr
    assert llm.requests == 0


def test_after_days_away_the_run_catches_up_through_the_export_api(
    tmp_path, feed_server, small_day, fake_llm, export_api, write_config
):
    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    api_url, api = export_api
    settings = base_config(tmp_path, feed_url, llm_url)
    settings["arxiv"]["api_url"] = api_url
    config = load_config(write_config(settings), {"OPENAI_API_KEY": "test-key"})
    store = Store(config.state)
    store.record_run(dt.datetime.now(dt.UTC) - dt.timedelta(days=4), RunSummary())
    store.close()
    summary = asyncio.run(Pipeline(config).run(catch_up=True))
    assert not summary.errors
    assert summary.backfilled == 50
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4)).strftime("%Y%m%d")
    assert f"submittedDate:[{since}0000" in api.requests[0]["search_query"]
