"""The `digest` command. It parses arguments, loads the config and calls the pipeline; nothing else.

Exit codes: 0 ok, 1 the run failed (it says why), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from digest import __version__, report
from digest.config import Config, default_config_path, load_config
from digest.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DigestError
from digest.pipeline import Pipeline, check, dry_run
from digest.schedule import serve

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
    commands.add_parser("serve", parents=[common], help="run on the configured schedule until stopped")
    commands.add_parser(
        "check", parents=[common], help="validate the config and reach the feed, the LLM and the mail server"
    )
    commands.add_parser("preview", parents=[common], help="render today's digests to files without sending them")
    return parser


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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    # Third-party libraries log every request at INFO; that is noise for a user, and may show URLs with keys.
    for name in ("httpx", "httpx2", "openai", "apscheduler"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        config = load_config(getattr(args, "config", None) or default_config_path(os.environ))
        return asyncio.run(_command(args.command, args, config, quiet))
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
        print(report.dry_run_report(await dry_run(config, args.since)))
        return EXIT_OK
    if command == "run":
        summary = await Pipeline(config, show_progress=not quiet).run(since=args.since)
        if not quiet or summary.errors:
            print(report.run_summary(summary))
        return EXIT_FAILED if summary.errors else EXIT_OK
    if command == "preview":
        for path in await Pipeline(config, show_progress=not quiet).preview():
            print(path)
        return EXIT_OK
    if command == "check":
        results = await check(config)
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'} {result.what}: {result.detail}")
        return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED
    if command == "serve":

        async def run_once() -> None:
            summary = await Pipeline(config, show_progress=False).run()
            print(report.run_summary(summary), flush=True)

        await serve(config.schedule, run_once)
        return EXIT_OK
    return EXIT_USAGE
