"""The `digest` command itself, as a user meets it: what each command needs, what it prints, how fast it starts
(by what it imports, not by the clock), and how it ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import CL_FEED, base_config, run_cli
from tests.servers import FeedServer, serve_asgi

COMMANDS = ["run", "serve", "web", "check", "preview", "status", "health", "rate", "ratings", "import", "eval", "mcp"]


def _without_key(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"OPENAI_API_KEY": ""})


@pytest.fixture(scope="module")
def feed_url() -> Iterator[str]:
    """The loopback feed server, started once for the module: these tests only read its day."""
    with serve_asgi(FeedServer(feeds={"/rss/cs.CL": CL_FEED.read_bytes()})) as url:
        yield url


@pytest.fixture
def config_path(tmp_path, feed_url, write_config):
    return str(write_config(base_config(tmp_path, feed_url, "http://127.0.0.1:9/v1")))


def test_commands_that_call_no_llm_need_no_api_key(config_path):
    for args in (["status"], ["ratings"], ["ratings", "--json"], ["run", "--dry-run"]):
        done = _without_key(*args, "--config", config_path)
        assert done.returncode == 0, (args, done.stderr)
        assert "OPENAI_API_KEY" not in done.stderr
    unhealthy = _without_key("health", "--config", config_path)
    assert unhealthy.returncode == 1 and "no heartbeat" in unhealthy.stdout and "OPENAI_API_KEY" not in unhealthy.stderr
    # A usage error is the one reported, not a key the command does not need.
    wrong = _without_key("rate", "2606.29563", "sideways", "--config", config_path)
    assert wrong.returncode == 2 and "sideways" in wrong.stderr and "OPENAI_API_KEY" not in wrong.stderr


@pytest.mark.parametrize("command", [["run"], ["preview"], ["check"], ["eval"]])
def test_commands_that_call_the_llm_name_the_missing_key(config_path, command):
    done = _without_key(*command, "--config", config_path)
    assert done.returncode == 2 and "llm.api_key: environment variable OPENAI_API_KEY is not set" in done.stderr


def test_help_status_and_health_import_neither_the_llm_client_nor_the_pipeline(config_path):
    """What makes `digest --help` take 0.03 s rather than 0.65 s: the openai client alone is most of a second."""
    probe = (
        "import sys, contextlib, io\n"
        "from digest.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(sys.argv[1:])\n"
        "heavy = {'openai', 'digest.pipeline.run', 'digest.llm.live', 'feedparser', 'uvicorn', 'jinja2',"
        " 'aiosmtplib', 'mcp'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    for args in (["--help"], ["status", "--config", config_path], ["health", "--config", config_path]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert done.stdout.strip().splitlines()[-1] == "[]", (args, done.stdout, done.stderr)


def test_a_sigterm_that_lands_while_a_model_class_is_built_ends_with_the_stop_message(config_path):
    """Python 3.11 wraps what a class's `__set_name__` raises in a RuntimeError. A `docker stop` that landed while
    pydantic built a config model ended with 'internal error: RuntimeError: Error calling __set_name__'."""
    probe = (
        "import os, signal, sys\n"
        "import digest.config\n"
        "class Landing:\n"
        "    def __set_name__(self, owner, name):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "def load_config(*args, **kwargs):\n"
        "    class Model:\n"
        "        field = Landing()\n"
        "digest.config.load_config = load_config\n"
        "from digest.cli.main import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "status", "--config", config_path], capture_output=True, text=True
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr == "digest: stopped by SIGTERM; nothing already recorded is lost\n"


def test_each_command_says_what_it_does_in_its_own_help():
    descriptions = set()
    for command in COMMANDS:
        done = run_cli(command, "--help")
        assert done.returncode == 0
        description = done.stdout.split("\n\n")[1]  # after the usage lines
        assert len(description.split()) >= 12, (command, description)
        descriptions.add(description)
    assert len(descriptions) == len(COMMANDS)


def test_status_into_a_pipe_closed_early_ends_quietly(config_path):
    """`digest status | head -1`: the reader has read enough; no 'internal error: BrokenPipeError'."""
    digest = subprocess.Popen(
        [sys.executable, "-m", "digest", "status", "--last", "1000", "--config", config_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert digest.stdout is not None
    digest.stdout.close()  # as `head` does once it has its line
    _, errors = digest.communicate(timeout=60)
    assert "Error" not in errors and "internal error" not in errors, errors


def test_the_log_format_comes_from_the_environment_for_a_one_off_run(config_path):
    """The image sets DIGEST_LOG_FORMAT=json: a `docker compose run ... digest run` logs JSON lines too."""
    done = run_cli("run", "--dry-run", "-v", "--config", config_path, env={"DIGEST_LOG_FORMAT": "json"})
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records and all({"time", "level", "message"} <= set(r) for r in records)
    wrong = run_cli("status", "--config", config_path, env={"DIGEST_LOG_FORMAT": "yaml"})
    assert wrong.returncode == 2 and "DIGEST_LOG_FORMAT is 'yaml'; it may be text or json" in wrong.stderr
