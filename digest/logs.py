"""How digest logs: plain lines for a terminal or JSON lines for a collector, and a warning that repeats (a flood
of refused connections, a server failing every request) once a minute with a count, not once per occurrence."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

REPEAT_SECONDS = 60.0
KINDS_REMEMBERED = 256  # distinct repeating messages kept track of; the oldest is forgotten first

Clock = Callable[[], float]


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class OncePerMinute(logging.Filter):
    """Lets a warning or error through once per REPEAT_SECONDS: the same logger, level, message and exception
    kind again within that time is counted, and the next one let through says how many were left out."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._seen: OrderedDict[tuple[str, int, str, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, record.getMessage(), kind)
        now = self._clock()
        shown_at, left_out = self._seen.pop(key, (-REPEAT_SECONDS, 0))
        if now - shown_at < REPEAT_SECONDS:
            self._seen[key] = (shown_at, left_out + 1)
            return False
        self._seen[key] = (now, 0)
        while len(self._seen) > KINDS_REMEMBERED:
            self._seen.popitem(last=False)
        if left_out:
            record.msg = f"{record.getMessage()} ({left_out} more like it in the last minute were not logged)"
            record.args = None
        return True


def setup_logging(*, verbose: bool, quiet: bool, json_lines: bool) -> logging.StreamHandler[SupportsWrite[str]]:
    """The one handler, on stderr; the caller may point it at a redacting stream once the secrets are known."""
    handler: logging.StreamHandler[SupportsWrite[str]] = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s" if verbose else "%(message)s"))
    handler.addFilter(OncePerMinute())
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, handlers=[handler])
    # Third-party libraries log every request at INFO; that is noise for a user, and may show URLs with keys.
    for name in ("httpx", "httpx2", "openai", "apscheduler"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    return handler
