"""The scheduler's heartbeat: a file that `digest serve` touches while its loop is alive, beside the state file,
read by `digest health` (a container's HEALTHCHECK) and by the web side's /health."""

from __future__ import annotations

from pathlib import Path

HEARTBEAT_SECONDS = 15.0
HEALTHY_WITHIN_SECONDS = 4 * HEARTBEAT_SECONDS


def heartbeat_path(state: Path) -> Path:
    return state.with_name(state.name + ".heartbeat")


def healthy(heartbeat: Path, now: float) -> bool:
    try:
        return now - heartbeat.stat().st_mtime < HEALTHY_WITHIN_SECONDS
    except FileNotFoundError:
        return False
