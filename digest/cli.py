"""The `digest` command. It parses arguments, loads the config and calls the pipeline; nothing else.

Exit codes: 0 ok, 1 the run failed (it says why), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from digest import __version__, ratings, report
from digest.batch import batch_allowance_seconds
from digest.config import Config, default_config_path, load_config
from digest.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DigestError, redact
from digest.evaluate import evaluate
from digest.library import import_library
from digest.pipeline import Pipeline, check
from digest.schedule import cron_trigger, healthy, serve
from digest.stopping import StopOnSignals
from digest.store import Store, describe_state_error
from digest.web.server import serve_web

log = logging.getLogger("digest")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="path to config.yaml (default: $DIGEST_CONFIG, else ./config.yaml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log every step")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print errors only")
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS,
        help="json: one JSON object per log line, for containers and log collectors",
    )

    parser = argparse.ArgumentParser(
        prog="digest",
        description="A daily arXiv digest: an LLM reads the day's abstracts against your interests.",
        epilog="exit codes: 0 ok, 1 the run failed, 2 bad usage or configuration",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"digest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", parents=[common], help="fetch, classify, render and deliver today's digests now, then exit"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="fetch and show what would be classified and what it would cost; call no LLM, send nothing",
    )
    run.add_argument(
        "--since",
        type=_past_date,
        metavar="YYYY-MM-DD",
        help="also catch up on every paper submitted since this date, through the arXiv export API",
    )
    commands.add_parser(
        "serve", parents=[common], help="run on the configured schedule until stopped (and the web side, if set)"
    )
    commands.add_parser(
        "web", parents=[common], help="serve the web side alone: rating links, archive, feed (for cron users)"
    )
    commands.add_parser(
        "check", parents=[common], help="validate the config and reach the feed, the LLM and the mail server"
    )
    preview = commands.add_parser(
        "preview", parents=[common], help="render today's digests to files without sending them"
    )
    preview.add_argument(
        "--min-score",
        type=int,
        choices=range(11),
        metavar="0-10",
        help="show what this threshold would give, from cached verdicts (no LLM request)",
    )
    status = commands.add_parser(
        "status", parents=[common], help="show the last runs: papers, relevance, cost, delivery"
    )
    status.add_argument("--last", type=int, default=10, metavar="N", help="how many runs (default 10)")
    commands.add_parser(
        "health", parents=[common], help="exit 0 if `digest serve` is alive (for a container HEALTHCHECK), else 1"
    )
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--profile", metavar="NAME", help="which profile (may be left out when there is one)")
    rate = commands.add_parser(
        "rate", parents=[common, profile], help="say 'more like this' (up) or 'not for me' (down) about a paper"
    )
    rate.add_argument("paper", metavar="PAPER", help="2606.29563, 2606.29563v2, arXiv:2606.29563, or an arxiv.org link")
    rate.add_argument("rating", metavar="up|down|clear")
    ratings = commands.add_parser("ratings", parents=[common, profile], help="list a profile's ratings, newest first")
    ratings.add_argument("--json", action="store_true", help="print them as a JSON list")
    seeds = commands.add_parser(
        "import", parents=[common, profile], help="rate the arXiv papers of your library (BibTeX, CSL JSON, a list)"
    )
    seeds.add_argument("file", metavar="FILE", type=Path, help=".bib, CSL .json, or text with one id or link a line")
    seeds.add_argument("--as", dest="rating", choices=["up", "down"], default="up", help="rate them so (default up)")
    evaluation = commands.add_parser(
        "eval", parents=[common, profile], help="how well the profile reproduces your ratings: precision, recall, F1"
    )
    evaluation.add_argument("--folds", type=int, default=5, choices=range(2, 21), metavar="K", help="default 5")
    evaluation.add_argument("--model", metavar="M", help="judge with this model instead of llm.model")
    evaluation.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return parser


class Redacting(io.TextIOBase):
    """A text stream that writes through to another, with every secret replaced."""

    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


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


def _past_date(text: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2026-06-30") from None
    if day > dt.date.today():
        raise argparse.ArgumentTypeError(f"{day} is in the future")
    return day


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_format", "text") == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s" if verbose else "%(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO, handlers=[handler]
    )
    # Third-party libraries log every request at INFO; that is noise for a user, and may show URLs with keys.
    for name in ("httpx", "httpx2", "openai", "apscheduler"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        config = load_config(getattr(args, "config", None) or default_config_path(os.environ))
        # Whatever a server echoed (a key in an error page, a password in a URL) is redacted on its way out.
        sys.stdout, sys.stderr = Redacting(sys.stdout, config.secrets), Redacting(sys.stderr, config.secrets)
        handler.setStream(sys.stderr)
        return asyncio.run(_command(args.command, args, config, quiet))
    except sqlite3.Error as error:  # the disk or the file, not digest: say which and what to do
        state_error = describe_state_error(error, config.state)
        print(f"digest: error: {state_error}", file=sys.stderr)
        return state_error.exit_code
    except DigestError as error:
        print(f"digest: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("digest: interrupted; nothing already recorded is lost", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: say so plainly, and show the traceback only when asked
        if verbose:
            log.exception("internal error")
        print(
            f"digest: internal error: {error.__class__.__name__}: {error}\n"
            "  this is a bug in digest; run again with -v for the details and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILED


async def _command(command: str, args: argparse.Namespace, config: Config, quiet: bool) -> int:
    if command == "run" and args.dry_run:
        print(report.dry_run_report(await Pipeline(config).dry_run(args.since)))
        return EXIT_OK
    if command == "run":
        return await _run(config, args.since, quiet)
    if command == "preview":
        for path, note in await Pipeline(config, show_progress=not quiet).preview(args.min_score):
            print(path)
            print(f"  {note}")
        return EXIT_OK
    if command == "check":
        results = await check(config)
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'} {result.what}: {result.detail}")
        return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED
    if command == "status":
        with Store(config.state) as store:
            print(report.status_table(store.recent_runs(args.last)))
            print(report.undone_deliveries(store.undone_deliveries()))
            if batches := store.batches_in_flight():
                print(report.batches_in_flight(batches))
        return EXIT_OK
    if command == "health":
        alive = healthy(heartbeat_path(config), time.time())
        print("healthy: the scheduler is running" if alive else "unhealthy: no heartbeat from `digest serve`")
        return EXIT_OK if alive else EXIT_FAILED
    if command == "serve":
        return await _serve(config)
    if command == "web":
        stop = asyncio.Event()
        with StopOnSignals(stop):
            await serve_web(config, stop)
        return EXIT_OK
    if command in ("rate", "ratings", "import", "eval"):
        with Store(config.state) as store:
            return await _reader_command(command, args, config, store, quiet)
    return EXIT_USAGE


async def _reader_command(command: str, args: argparse.Namespace, config: Config, store: Store, quiet: bool) -> int:
    """The commands by which the reader teaches the digest, and measures how well it learned."""
    if command == "rate":
        print(await ratings.rate(config, store, args.paper, args.rating, args.profile))
    elif command == "ratings":
        profile = ratings.pick_profile(config, args.profile)
        given = store.ratings(profile.name)
        print(json.dumps(report.ratings_json(given), indent=2) if args.json else report.ratings_table(profile, given))
    elif command == "import":
        profile = ratings.pick_profile(config, args.profile)
        rating = ratings.parse_word(args.rating)
        print(report.import_report(args.file, await import_library(config, store, profile, args.file, rating)))
    else:
        profile = ratings.pick_profile(config, args.profile)
        result = await evaluate(
            config, store, profile, folds=args.folds, model=args.model, show_progress=not quiet and not args.json
        )
        print(result.model_dump_json(indent=2) if args.json else report.eval_report(result))
    return EXIT_OK


async def _run(config: Config, since: dt.date | None, quiet: bool) -> int:
    stop = asyncio.Event()
    with StopOnSignals(stop) as signals:
        summary = await Pipeline(config, show_progress=not quiet).run(since=since, stop=stop)
    if not quiet or summary.errors:
        print(report.run_summary(summary))
    if signals.received is not None:
        print(
            f"digest: stopped by {signals.received.name} at a safe point; the next run finishes what this one left",
            file=sys.stderr,
        )
        return 128 + signals.received.value
    return EXIT_FAILED if summary.errors else EXIT_OK


def heartbeat_path(config: Config) -> Path:
    return config.state.with_name(config.state.name + ".heartbeat")


async def _serve(config: Config) -> int:
    async def run_once(stop: asyncio.Event) -> None:
        summary = await Pipeline(config, show_progress=False).run(catch_up=True, stop=stop)
        for line in report.run_summary(summary).splitlines():
            log.info("%s", line)

    with Store(config.state) as store:
        last_good_run = store.last_good_run()
    stop = asyncio.Event()
    heartbeat = heartbeat_path(config)
    try:
        async with asyncio.TaskGroup() as group:
            if config.web is not None:  # bound at once: a taken port stops `serve` before its first run
                group.create_task(serve_web(config, stop, heartbeat=heartbeat))
            # Stuck: past the run's own deadline (with its wait for a batch), and room to stop.
            limit = (config.max_run_minutes + 10) * 60.0 + batch_allowance_seconds(config.llm)
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
