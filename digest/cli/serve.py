"""`digest serve`: run the pipeline on the configured cron schedule until SIGTERM or SIGINT.

A run missed while the machine slept or the service was down happens once at start; a run still going when
the next is due is not started twice; a signal stops the run in progress at a safe point. A heartbeat file,
touched by the scheduler itself, tells a container's HEALTHCHECK whether the scheduler loop is alive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import Config, ScheduleConfig
from digest.errors import EXIT_OK, DigestError
from digest.heartbeat import HEARTBEAT_SECONDS, heartbeat_path
from digest.stopping import StopOnSignals

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 8.0  # container runtimes kill 10 s after SIGTERM; leave room to exit cleanly
STUCK_MARGIN_SECONDS = 600.0  # past its deadline, a run has this long to stop at a safe point
RunOnce = Callable[[asyncio.Event], Awaitable[None]]


def cron_trigger(schedule: ScheduleConfig) -> CronTrigger:
    return CronTrigger.from_crontab(schedule.cron, timezone=schedule.timezone)


def previous_fire_time(trigger: BaseTrigger, now: dt.datetime, lookback: dt.timedelta) -> dt.datetime | None:
    """The last time at or before `now` that the trigger named (within `lookback`)."""
    fire = trigger.get_next_fire_time(None, now - lookback)
    last = None
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(microseconds=1))
    return last


async def serve(
    trigger: BaseTrigger,
    run_once: RunOnce,
    *,
    last_good_run: dt.datetime | None,
    heartbeat: Path,
    stop: asyncio.Event | None = None,
    stuck_after: float = 3 * 3600.0,
) -> None:
    """Call `run_once(stop)` whenever `trigger` fires, one at a time, until a signal (or `stop`)."""
    stop = stop or asyncio.Event()
    running = asyncio.Lock()
    started_at: float | None = None  # of the run in progress
    current: set[asyncio.Task[None]] = set()

    async def job() -> None:
        if running.locked():
            log.warning("serve: the previous run is still going; this one is skipped")
            return
        task = asyncio.current_task()
        assert task is not None
        async with running:
            current.add(task)
            nonlocal started_at
            started_at = time.monotonic()
            try:
                await run_once(stop)
            except DigestError as error:  # another run holds the state (cron beside serve, say): one line, no traceback
                log.warning("serve: the run did not happen: %s", error.message)
            except asyncio.CancelledError:
                # Past the grace period at a stop: what the run had not recorded is done by the next one.
                log.warning(
                    "serve: the run was cut short %.0f s after the stop; the next run finishes it", STOP_GRACE_SECONDS
                )
            except Exception:
                log.exception("serve: the run failed; the next one runs as scheduled")
            finally:
                current.discard(task)
                started_at = None

    def beat() -> None:
        # A run going well past its own deadline is stuck: then the heartbeat stops, and `digest health` says so.
        if started_at is not None and time.monotonic() - started_at > stuck_after:
            log.warning("serve: the run started %.0f minutes ago is stuck", (time.monotonic() - started_at) / 60)
            return
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.touch()

    with StopOnSignals(stop):
        scheduler = AsyncIOScheduler()
        scheduler.add_job(job, trigger, id="digest", coalesce=True, max_instances=1, misfire_grace_time=3600)
        scheduler.add_job(beat, IntervalTrigger(seconds=HEARTBEAT_SECONDS), id="heartbeat")
        scheduler.start()
        beat()
        now = dt.datetime.now(dt.UTC)
        missed = previous_fire_time(trigger, now, dt.timedelta(days=8))
        if missed is not None and (last_good_run is None or last_good_run < missed):
            log.info("serve: the run due at %s has not happened; running it now", missed)
            scheduler.add_job(job, id="missed")
        log.info("serve: next run at %s", scheduler.get_job("digest").next_run_time)
        try:
            await stop.wait()
        finally:
            log.info("serve: stopping")
            scheduler.pause()  # no new runs; the one in progress sees `stop` and ends at its next safe point
            if current:
                _, still_running = await asyncio.wait(current, timeout=STOP_GRACE_SECONDS)
                for task in still_running:
                    task.cancel()
            scheduler.shutdown(wait=False)


async def serve_command(config: Config) -> int:
    """`digest serve`: the scheduler, and the web side beside it when configured, until stopped."""
    from digest.cli import report
    from digest.cli.serve import cron_trigger, serve
    from digest.pipeline.run import Pipeline, run_allowance_seconds
    from digest.state.store import Store
    from digest.web.server import serve_web

    async def run_once(stop: asyncio.Event) -> None:
        summary = await Pipeline(config).run(catch_up=True, stop=stop)
        log.info("%s", report.run_summary(summary))  # one record: a log collector keeps the summary together

    with Store(config.state) as store:
        last_good_run = store.last_good_run()
    stop = asyncio.Event()
    heartbeat = heartbeat_path(config.state)
    try:
        async with asyncio.TaskGroup() as group:
            if config.web is not None:  # bound at once: a taken port stops `serve` before its first run
                group.create_task(serve_web(config, stop, heartbeat=heartbeat))
            # Stuck: past the run's own deadline (with its wait for a batch), and room to stop.
            limit = run_allowance_seconds(config) + STUCK_MARGIN_SECONDS
            trigger = cron_trigger(config.schedule)
            group.create_task(
                serve(
                    trigger,
                    run_once,
                    last_good_run=last_good_run,
                    heartbeat=heartbeat,
                    stop=stop,
                    stuck_after=limit,
                )
            )
    except* DigestError as errors:
        raise errors.exceptions[0] from None
    return EXIT_OK
