"""`digest serve`: run the pipeline on the configured cron schedule until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from digest.config import ScheduleConfig

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 8.0  # a container runtime kills after 10 s; leave room to exit cleanly


async def serve(schedule: ScheduleConfig, run_once: Callable[[], Awaitable[None]]) -> None:
    """Call `run_once` at every time the cron expression names; never two at once; stop on a signal."""
    stop = asyncio.Event()
    current: set[asyncio.Task[None]] = set()

    async def job() -> None:
        task = asyncio.current_task()
        assert task is not None
        current.add(task)
        try:
            await run_once()
        except Exception:
            log.exception("the scheduled run failed; the next one runs as scheduled")
        finally:
            current.discard(task)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    trigger = CronTrigger.from_crontab(schedule.cron, timezone=schedule.timezone)
    scheduler = AsyncIOScheduler(timezone=schedule.timezone)
    scheduler.add_job(job, trigger, id="digest", coalesce=True, max_instances=1, misfire_grace_time=3600)
    scheduler.start()
    log.info(
        "serve: next run at %s (%s in %s)",
        scheduler.get_job("digest").next_run_time,
        schedule.cron,
        schedule.timezone,
    )
    try:
        await stop.wait()
    finally:
        log.info("serve: stopping")
        scheduler.shutdown(wait=False)
        if current:
            _, still_running = await asyncio.wait(current, timeout=STOP_GRACE_SECONDS)
            for task in still_running:
                task.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
