"""`digest` in a process of its own, forked from one that has imported it already.

Most of a `digest` command's CPU time in the suite was Python starting and importing (about 0.8 s of a typical
run's 1.1 s, over some 470 commands); a fork of a process that imported digest once starts in milliseconds. The
child is a process of its own, as a user's is: its own environment, working directory, output and exit code, with
nothing shared back, and its random numbers seeded afresh. Commands a test signals, or that need a terminal, still
start from scratch (`start_cli`, `run_on_terminal`); so do those given a PYTHON* variable, which only an
interpreter's start reads; and the test that `--help`, `status` and `health` import neither the LLM client nor the
pipeline starts its own interpreter.
"""

from __future__ import annotations

import io
import os
import random
import sys

# Imported once in the fork server; each command's process starts with them in place.
PRELOAD = [
    "tests.forked",
    "digest.cli.main",
    "digest.cli.report",
    "digest.cli.progress",
    "digest.cli.check",
    "digest.pipeline.run",
    "digest.taste.evaluate",
    "digest.taste.ratings",
    "digest.taste.library",
    "digest.taste.zotero",
]


def digest_main(args: list[str], environment: dict[str, str], cwd: str, stdout: str, stderr: str) -> None:
    """The child's whole life: `python -m digest ARGS` with this environment, in this folder, its output to files."""
    from digest.cli.main import main

    random.seed()  # as a new interpreter's: not the fork server's sequence, the same in every child
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    for descriptor, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(opened, descriptor)
        os.close(opened)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True)
    sys.argv = ["digest", *args]
    raise SystemExit(main(args))
