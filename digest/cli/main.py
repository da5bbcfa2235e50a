"""The `digest` command. It parses arguments, loads the config and calls the pipeline; nothing else.

Exit codes: 0 ok, 1 the run failed (it says why), 2 bad usage or configuration.

Each command imports only what it uses, inside its branch: `digest --help`, `status` and `health` answer at once,
and the SIGTERM handler is in place before the slow imports (the openai client alone takes most of a second).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from digest import __version__
from digest.cli.about import ABOUT
from digest.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DigestError
from digest.logs import setup_logging

if TYPE_CHECKING:
    from digest.config import Config, Profile, Section
    from digest.pipeline.run import Pipeline
    from digest.state.store import Store

log = logging.getLogger("digest")
ENV_LOG_FORMAT = "DIGEST_LOG_FORMAT"
# The secrets each command needs, by the part of the config that holds them; the others need none.
USES: dict[str, tuple[Section, ...]] = {
    "run": ("llm", "embeddings", "smtp", "web", "notify", "zotero"),
    "serve": ("llm", "embeddings", "smtp", "web", "notify", "zotero"),
    "check": ("llm", "embeddings", "smtp", "web", "notify", "zotero"),
    "preview": ("llm", "embeddings", "web"),
    "eval": ("llm", "embeddings"),
    "web": ("web", "zotero"),
    "import": ("zotero",),  # with no FILE: the profile's library
}


class Terminated(KeyboardInterrupt):
    """SIGTERM before a command took the signals over: it ends the command as Ctrl-C does, with a message."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


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
        help=f"json: one JSON object per log line, for containers and log collectors (default: ${ENV_LOG_FORMAT})",
    )
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--profile", metavar="NAME", help="which profile (may be left out when there is one)")

    parser = argparse.ArgumentParser(
        prog="digest",
        description="A daily arXiv digest: an LLM reads the day's abstracts against your interests.",
        epilog="exit codes: 0 ok, 1 the run failed, 2 bad usage or configuration",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"digest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        line, more = ABOUT[name]
        return commands.add_parser(
            name, parents=[common, *parents], help=line, description=f"{line[0].upper()}{line[1:]}. {more}"
        )

    run = command("run")
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
    command("serve")
    command("web")
    command("check")
    command("preview").add_argument(
        "--min-score",
        type=int,
        choices=range(11),
        metavar="0-10",
        help="show what this threshold would give, from cached verdicts (no LLM request)",
    )
    command("status").add_argument("--last", type=int, default=10, metavar="N", help="how many runs (default 10)")
    command("health")
    rate = command("rate", profile)
    rate.add_argument("paper", metavar="PAPER", help="2606.29563, 2606.29563v2, arXiv:2606.29563, or an arxiv.org link")
    rate.add_argument("rating", metavar="up|down|clear")
    command("ratings", profile).add_argument("--json", action="store_true", help="print them as a JSON list")
    seeds = command("import", profile)
    seeds.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        nargs="?",
        help=".bib, CSL .json, or text with one id or link a line; left out: the profile's library",
    )
    seeds.add_argument("--as", dest="rating", choices=["up", "down"], help="rate a FILE's papers so (default up)")
    evaluation = command("eval", profile)
    evaluation.add_argument("--folds", type=int, default=5, choices=range(2, 21), metavar="K", help="default 5")
    evaluation.add_argument("--model", metavar="M", help="judge with this model instead of llm.model")
    evaluation.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    command("mcp").add_argument(
        "--allow-rating",
        action="store_true",
        help="let the assistant rate papers for you (the rate_paper tool); without it, it only reads",
    )
    return parser


def _pipeline(config: Config, quiet: bool) -> Pipeline:
    """The pipeline of a command a person watches: the classification's line and a batch's progress on stderr."""
    from digest.cli.progress import ProgressLine
    from digest.pipeline.run import Pipeline

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return Pipeline(
        config, on_progress=ProgressLine(sys.stderr, enabled=not quiet), on_note=log.info if quiet else note
    )


def _past_date(text: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date like 2026-06-30") from None
    if day > dt.date.today():
        raise argparse.ArgumentTypeError(f"{day} is in the future")
    return day


def main(argv: Sequence[str] | None = None) -> int:
    # First of all: a SIGTERM (`docker stop`) in the first second ends digest with a message, not silently by the
    # signal, and as a container's PID 1 it is not ignored. `run`, `serve` and `web` take the signals over later.
    signal.signal(signal.SIGTERM, _terminate)
    config: Config | None = None
    verbose = False
    try:
        args = _parser().parse_args(argv)
        verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
        log_format = getattr(args, "log_format", None) or os.environ.get(ENV_LOG_FORMAT) or "text"
        if log_format not in ("text", "json"):
            print(f"digest: error: ${ENV_LOG_FORMAT} is '{log_format}'; it may be text or json", file=sys.stderr)
            return EXIT_USAGE
        handler = setup_logging(verbose=verbose, quiet=quiet, json_lines=log_format == "json")
        from digest.config import default_config_path, load_config

        # A dry run and the import of a file read no secret.
        unkeyed = (args.command == "run" and args.dry_run) or (args.command == "import" and args.file is not None)
        uses = () if unkeyed else USES.get(args.command, ())
        config = load_config(getattr(args, "config", None) or default_config_path(os.environ), uses=uses)
        # Whatever a server echoed (a key in an error page, a password in a URL) is redacted on its way out.
        from digest.secrets import Redacting

        sys.stdout, sys.stderr = Redacting(sys.stdout, config.secrets), Redacting(sys.stderr, config.secrets)
        handler.setStream(sys.stderr)
        import asyncio

        return asyncio.run(_command(args.command, args, config, quiet))
    except DigestError as error:
        print(f"digest: error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # `digest status | head -1`: the reader has read enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as interrupt:
        return _stopped(interrupt)
    except Exception as error:
        behind = _interrupt_behind(error)
        if behind is not None:
            return _stopped(behind)
        import sqlite3

        if isinstance(error, sqlite3.Error) and config is not None:  # the disk or the file: say which, and what to do
            from digest.state.store import describe_state_error

            state_error = describe_state_error(error, config.state)
            print(f"digest: error: {state_error}", file=sys.stderr)
            return state_error.exit_code
        # A bug: say so plainly, and show the traceback only when asked.
        if verbose:
            log.exception("internal error")
        print(
            f"digest: internal error: {error.__class__.__name__}: {error}\n"
            "  this is a bug in digest; run again with -v for the details and please report it",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _stopped(interrupt: KeyboardInterrupt) -> int:
    signum = interrupt.signum if isinstance(interrupt, Terminated) else signal.SIGINT
    said = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    print(f"digest: {said}; nothing already recorded is lost", file=sys.stderr)
    return 128 + signum


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The signal an error stands for. Python 3.11 wraps what a class's `__set_name__` raises in a RuntimeError, so
    a SIGTERM that lands while pydantic builds a config model (during the imports) arrives as that RuntimeError."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


async def _command(command: str, args: argparse.Namespace, config: Config, quiet: bool) -> int:
    if command == "run":
        return await _run(config, args, quiet)
    if command == "preview":
        for path, note in await _pipeline(config, quiet).preview(args.min_score):
            print(path)
            print(f"  {note}")
        return EXIT_OK
    if command == "check":
        from digest.cli.check import check

        results = await check(config)
        for result in results:
            print(f"{'ok  ' if result.ok else 'FAIL'} {result.what}: {result.detail}")
        return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED
    if command == "status":
        from digest.cli import report
        from digest.state.store import Store

        with Store(config.state) as store:
            print(report.status_table(store.recent_runs(args.last)))
            print(report.undone_deliveries(store.undone_deliveries()))
            if batches := store.batches_in_flight():
                print(report.batches_in_flight(batches))
        return EXIT_OK
    if command == "health":
        import time

        from digest.heartbeat import healthy, heartbeat_path

        alive = healthy(heartbeat_path(config.state), time.time())
        print("healthy: the scheduler is running" if alive else "unhealthy: no heartbeat from `digest serve`")
        return EXIT_OK if alive else EXIT_FAILED
    if command == "serve":
        from digest.cli.serve import serve_command

        return await serve_command(config)
    if command == "web":
        import asyncio

        from digest.stopping import StopOnSignals
        from digest.web.server import serve_web

        stop = asyncio.Event()
        with StopOnSignals(stop):
            await serve_web(config, stop)
        return EXIT_OK
    if command == "mcp":
        from digest.agents.mcp import serve_stdio

        # The protocol goes out on the process's own stdout, as the SDK writes it (which also keeps any stray
        # output off it): not through the redacting wrapper, which is for what people read.
        sys.stdout = sys.__stdout__
        await serve_stdio(config, allow_rating=args.allow_rating)
        return EXIT_OK
    return await _reader_command(command, args, config, quiet)


async def _reader_command(command: str, args: argparse.Namespace, config: Config, quiet: bool) -> int:
    """The commands by which the reader teaches the digest, and measures how well it learned."""
    from digest.cli import report
    from digest.state.store import Store
    from digest.taste import ratings

    with Store(config.state) as store:
        if command == "rate":
            print(await ratings.rate(config, store, args.paper, args.rating, args.profile))
            return EXIT_OK
        profile = ratings.pick_profile(config, args.profile)
        if command == "ratings":
            given = store.ratings(profile.name)
            print(
                json.dumps(report.ratings_json(given), indent=2) if args.json else report.ratings_table(profile, given)
            )
        elif command == "import" and args.file is None:
            return await _read_library(config, store, profile, args.rating)
        elif command == "import":
            from digest.cli.progress import Count
            from digest.taste.library import import_library

            rating = ratings.parse_word(args.rating or "up")
            count = Count("reading the library, entries", sys.stderr)
            try:
                imported = await import_library(config, store, profile, args.file, rating, count)
            finally:
                count.close()
            print(report.import_report(args.file, imported))
        else:
            from digest.cli.eval_report import eval_report
            from digest.cli.progress import ProgressLine
            from digest.taste.evaluate import evaluate

            result = await evaluate(
                config,
                store,
                profile,
                folds=args.folds,
                model=args.model,
                on_progress=ProgressLine(sys.stderr, enabled=not quiet and not args.json),
            )
            print(result.model_dump_json(indent=2) if args.json else eval_report(result))
    return EXIT_OK


async def _read_library(config: Config, store: Store, profile: Profile, rating: str | None) -> int:
    """`digest import` with no file: the profile's library as it is now, and what was read of it."""
    from digest.cli import report
    from digest.cli.progress import Count
    from digest.errors import UsageError
    from digest.taste.zotero import LibraryReader, import_budget

    if profile.library is None:
        raise UsageError(
            f"profile {profile.name} has no library to read",
            hint="give a FILE, or add a library: section to the profile (its Zotero library, or a library file)",
        )
    if rating is not None:
        raise UsageError(
            "--as is for a FILE: the library's collections say what each of its items means",
            hint="name the collections that mean 'not for me' in library.zotero.not_for_me",
        )
    count = Count("reading the library, items", sys.stderr)
    try:
        outcomes = await LibraryReader(config, store, import_budget(), count).read(profile, every_time=True)
    finally:
        count.close()
    if lines := report.library_lines(outcomes):
        print("\n".join(lines))
    failures = [failure for outcome in outcomes if (failure := outcome.failure) is not None]
    for failure in failures:
        print(f"digest: error: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


async def _run(config: Config, args: argparse.Namespace, quiet: bool) -> int:
    import asyncio

    from digest.cli import report
    from digest.stopping import StopOnSignals

    if args.dry_run:
        from digest.pipeline.dry_run import dry_run

        print(report.dry_run_report(await dry_run(config, args.since)))
        return EXIT_OK
    stop = asyncio.Event()
    with StopOnSignals(stop) as signals:
        summary = await _pipeline(config, quiet).run(since=args.since, stop=stop)
    if not quiet or summary.errors:
        print(report.run_summary(summary))
    if signals.received is not None:
        print(
            f"digest: stopped by {signals.received.name} at a safe point; the next run finishes what this one left",
            file=sys.stderr,
        )
        return 128 + signals.received.value
    return EXIT_FAILED if summary.errors else EXIT_OK
