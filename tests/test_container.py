"""The container and the first five minutes: the Dockerfile, compose.yaml and the README agree; the image installs
exactly what the lock says; `digest run` as a container's PID 1 stops on SIGTERM; a name that does not resolve
fails fast. No Docker engine runs here: the Dockerfile is checked statically, its install steps are replayed in a
fresh virtual environment, and PID 1 and a network without DNS are made with `unshare`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.markers import Marker
from packaging.requirements import Requirement

from digest.config import load_config
from digest.pipeline.run import Pipeline
from digest.state.store import Store
from tests.helpers import base_config, run_cli, stop_process, wait_until

REPO = Path(__file__).parent.parent


def _dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(REPO / "Dockerfile"))


def test_the_dockerfile_is_sound():
    parser = _dockerfile()
    instructions = parser.structure
    images = [i["value"].split()[0] for i in instructions if i["instruction"] == "FROM"]
    assert images and all(":" in image and not image.endswith(":latest") for image in images), images
    user = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert any(
        i["instruction"] == "HEALTHCHECK" and "digest" in i["value"] and "health" in i["value"] for i in instructions
    )
    command = json.loads(next(i["value"] for i in reversed(instructions) if i["instruction"] == "CMD"))
    assert command[:2] == ["digest", "serve"]
    assert "digest" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for instruction in instructions:
        if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
            *sources, _ = instruction["value"].split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    env = parser.envs
    assert env["DIGEST_CONFIG"] == "/config/config.yaml" and env["DIGEST_DATA"] == "/data"
    assert any(i["instruction"] == "VOLUME" and "/data" in i["value"] for i in instructions)


def _readme_container_section() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Container") :]
    return section[: section.index("\n## ", 1)]


def test_the_readme_and_compose_agree_on_the_config_file_and_the_env_file():
    section = _readme_container_section()
    copied = re.search(r"^cp config\.yaml (\S+)", section, re.M)
    assert copied is not None, "the README's container section says which copy of config.yaml to edit"
    env_file = re.search(r'^echo "OPENAI_API_KEY=sk-\.\.\." > (\S+)', section, re.M)
    assert env_file is not None
    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["digest"]
    config_mount = next(v for v in service["volumes"] if isinstance(v, dict) and v["target"] == "/config/config.yaml")
    assert config_mount["source"] == f"./{copied[1]}"
    assert config_mount["read_only"] and config_mount["bind"]["create_host_path"] is False
    assert service["env_file"] == env_file[1]
    services = set(re.findall(r"^docker compose run --rm (\S+)", section, re.M))
    assert services == {"digest"}  # the service compose.yaml defines


@pytest.mark.parametrize("secret", [".env", ".env.production", "my-config.yaml"])
def test_files_that_hold_secrets_are_ignored_by_git_and_docker(secret):
    ignored = subprocess.run(["git", "check-ignore", "-q", secret], cwd=REPO)
    assert ignored.returncode == 0, f"git would commit {secret}"
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert any(Path(secret).match(p) for p in patterns if p and not p.startswith("#")), f"docker build sends {secret}"


def test_every_file_digest_keeps_beside_its_state_is_ignored_by_git(tmp_path):
    with Store(tmp_path / "digest.sqlite3"):
        (tmp_path / "digest.sqlite3.heartbeat").touch()  # what `digest serve` adds
        made = sorted(path.name for path in tmp_path.iterdir())
    assert "digest.sqlite3.migrate.lock" in made, made
    for name in [*made, "digest.sqlite3.lock"]:  # and the lock a run holds
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO)
        assert ignored.returncode == 0, f"git would commit {name}"


def _locked() -> dict[str, tuple[str, int]]:
    """requirements.lock as {name: (version, number of hashes)}."""
    text = (REPO / "requirements.lock").read_text().replace("\\\n", " ")
    locked = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = line.split(" --hash=")
        pin, _, marker = requirement.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue  # a pin for another Python or platform (numpy has one for 3.11 and one for 3.12 on)
        name, version = pin.strip().split("==")
        locked[name.lower().replace("_", "-")] = (version.strip(), len(hashes))
    return locked


def test_the_lock_pins_every_dependency_of_pyproject_with_hashes():
    locked = _locked()
    assert locked and all(count >= 1 for _, count in locked.values()), "every pin carries its hashes"
    for line in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.lock: refresh the lock (README)"
        assert requirement.specifier.contains(locked[name][0]), f"{name}=={locked[name][0]} does not satisfy {line}"


def _build_stage_runs() -> list[str]:
    """The RUN lines of the Dockerfile's build stage, as a shell would run them."""
    runs, stage = [], 0
    for instruction in _dockerfile().structure:
        stage += instruction["instruction"] == "FROM"
        if stage == 1 and instruction["instruction"] == "RUN":
            runs.append(instruction["value"])
    return runs


def _wheelhouse() -> Path | None:
    """The lock's wheels, downloaded once by `bash .ci/wheels` (CI does), so that the replay needs no network."""
    lock = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = Path(os.environ.get("DIGEST_WHEELS_DIR") or cache / "digest" / f"wheels-{lock}")
    return folder if (folder / ".complete").exists() else None


@pytest.mark.long
def test_the_images_install_steps_replayed_from_the_lock_give_a_command_that_starts(
    tmp_path, feed_server, fake_llm, write_config
):
    """The build stage's RUN lines, as written, with its /venv in a temporary folder and this machine's Python,
    and pip told to take the lock's wheels from the folder `.ci/wheels` filled: no index, nothing downloaded."""
    runs = _build_stage_runs()
    assert any("--require-hashes -r requirements.lock" in run for run in runs), runs
    assert any("--no-deps ." in run for run in runs), "digest itself is installed without resolving anything"
    wheels = _wheelhouse()
    if wheels is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs `bash .ci/wheels` before the tests; its folder is missing")
        pytest.skip("the lock's wheels are not downloaded: `bash .ci/wheels` once (needs PyPI), then this runs offline")
    venv = tmp_path / "venv"
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for run in runs:
        command = run.replace("/venv", str(venv)).replace("python -m venv", f"{sys.executable} -m venv")
        done = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True, env=offline)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True)
    installed = {
        name.lower().replace("_", "-"): version
        for name, version in (line.split("==") for line in frozen.stdout.splitlines() if "==" in line)
    }
    locked = {name: version for name, (version, _) in _locked().items()}
    assert {n: v for n, v in installed.items() if n != "digest"} == {n: locked[n] for n in installed if n != "digest"}

    feed_url, _ = feed_server
    llm_url, _ = fake_llm
    data = tmp_path / "data"
    config = write_config(base_config(tmp_path, feed_url, llm_url, schedule={"cron": "0 7 * * *", "timezone": "UTC"}))
    image_env = _dockerfile().envs  # the image's own ENV lines: JSON logs for every command, not only `serve`
    assert image_env["DIGEST_LOG_FORMAT"] == "json"
    env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": "test-key", "DIGEST_CONFIG": str(config)}
    env |= {"DIGEST_DATA": str(data), "DIGEST_LOG_FORMAT": image_env["DIGEST_LOG_FORMAT"]}
    process = subprocess.Popen(
        [str(venv / "bin" / "digest"), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_until(lambda: (data / "outbox" / "me").exists(), timeout=60)  # the first run, its digest in /data
        health = subprocess.run([str(venv / "bin" / "digest"), "health"], env=env, capture_output=True, text=True)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        output = stop_process(process)
    assert (data / "state.sqlite3").exists()
    assert all(json.loads(line) for line in output.splitlines() if line.strip())


def _unshare(*flags: str) -> list[str]:
    """`unshare` with these namespaces, or a skip where this machine does not allow it (CI must)."""
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"unshare {' '.join(flags)} is not allowed here: {probe and probe.stderr!r}")
        pytest.skip(f"unshare {' '.join(flags)} is not allowed here")
    return ["unshare", *flags]


def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DIGEST_CONFIG", "DIGEST_DATA"}}
    return environment | {"OPENAI_API_KEY": "test-key"}


def _pid_1_of(process: subprocess.Popen[str]) -> int:
    """The process `unshare --pid --fork` started: PID 1 of its namespace."""
    children: list[str] = []

    def started() -> bool:
        children[:] = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        return bool(children) or process.poll() is not None

    wait_until(started, timeout=10)
    (pid,) = map(int, children)
    namespace_pids = re.search(r"^NSpid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert namespace_pids is not None and namespace_pids[1].split()[-1] == "1", "digest is PID 1"
    return pid


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum`: the SigCgt mask of /proc/PID/status."""
    caught = re.search(r"^SigCgt:\s+([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    return caught is not None and bool(int(caught[1], 16) >> (signum - 1) & 1)


@pytest.mark.parametrize("after", [0.2, 1.0, 5.0])
@pytest.mark.parametrize("command", ["run", "serve"])
def test_as_pid_1_a_sigterm_at_any_moment_ends_digest_by_itself_with_a_message(
    command, after, tmp_path, feed_server, fake_llm, write_config
):
    """Before the handlers were installed first, a SIGTERM in the first second was ignored by PID 1 (the kernel
    drops what PID 1 does not handle) and `docker stop` killed it after its grace period, with 137."""
    (feed_url, _), (llm_url, llm) = feed_server, fake_llm
    llm.latency = 0.2  # at 5 s, a run (serve's missed one) is still classifying
    config = base_config(tmp_path, feed_url, llm_url, schedule={"cron": "0 7 * * *", "timezone": "UTC"})
    config["llm"]["max_concurrency"] = 2
    process = subprocess.Popen(
        [*_unshare("--pid", "--fork"), sys.executable, "-m", "digest", command, "--config", str(write_config(config))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
    )
    try:
        started = time.monotonic()
        pid = _pid_1_of(process)
        # Until the interpreter has run digest's first line, a SIGTERM to PID 1 is dropped by the kernel, whatever
        # digest does (compose.yaml's `init: true` covers that gap). On a quiet machine that is ~30 ms, so 0.2 s
        # lands in the imports, as intended; on a busy one the signal is sent once the handler is in.
        wait_until(lambda: _catches(pid, signal.SIGTERM), timeout=60)
        time.sleep(max(0.0, after - (time.monotonic() - started)))
        os.kill(pid, signal.SIGTERM)
        code = process.wait(timeout=30)  # `docker stop` waits 10 s; a stop ignored waits out the whole timeout
    finally:
        process.kill()
    output = process.stdout.read() if process.stdout else ""
    assert code in (0, 128 + signal.SIGTERM), output
    assert "Traceback" not in output
    if code:
        assert "stopped by SIGTERM" in output, output


@pytest.mark.long
def test_run_as_pid_1_stops_on_sigterm_and_the_next_run_finishes_with_one_email(loopback_run):
    feed, llm, inbox = loopback_run.feed, loopback_run.llm, loopback_run.inbox
    feed.validators = False  # the next run gets the same feed again, not a 304: nothing stale about it
    loopback_run.config["llm"]["max_concurrency"] = 2
    path = loopback_run.write()
    llm.latency = 0.2  # 137 papers two at a time: still classifying when the signal comes

    process = subprocess.Popen(
        [*_unshare("--pid", "--fork"), sys.executable, "-m", "digest", "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
    )
    try:
        wait_until(lambda: llm.requests >= 6)
        os.kill(_pid_1_of(process), signal.SIGTERM)  # what `docker stop` does
        code = process.wait(timeout=10)
    finally:
        process.kill()
    output = process.stdout.read() if process.stdout else ""
    assert code == 128 + signal.SIGTERM, output
    assert "digest: stopped by SIGTERM at a safe point; the next run finishes what this one left" in output
    assert inbox.messages == []
    asked = llm.requests

    llm.latency = 0
    second = run_cli("run", "--config", str(path))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "stale" not in second.stdout + second.stderr
    resumed = re.search(
        r"resumed +the run started .* was stopped by a signal with (\d+) papers still to classify", second.stdout
    )
    assert resumed is not None, second.stdout
    assert 0 < int(resumed[1]) <= 137 - asked + 2
    assert len(inbox.messages) == 1
    assert llm.requests <= 137 + 2  # verdicts of the stopped run were kept


def test_a_signal_during_a_slow_fetch_stops_the_run_at_once(tmp_path, feed_server, fake_llm, write_config):
    feed_url, feed = feed_server
    feed.failures = [(503, b"busy")] * 20
    feed.retry_after = "5"
    raw = base_config(tmp_path, feed_url, fake_llm[0])
    raw["arxiv"]["max_retry_seconds"] = 300
    config = load_config(write_config(raw), {"OPENAI_API_KEY": "test-key"})

    async def stopped_while_fetching():
        stop = asyncio.Event()
        run = asyncio.create_task(Pipeline(config).run(stop=stop))
        while not feed.requests:  # noqa: ASYNC110 (plain test state)
            await asyncio.sleep(0.02)
        stop.set()
        return await asyncio.wait_for(run, 4)  # a retry waits 5 s: only an abandoned fetch ends before

    summary = asyncio.run(stopped_while_fetching())
    assert summary.stopped and not summary.errors
    assert fake_llm[1].requests == 0


def test_a_name_that_does_not_resolve_fails_fast_and_says_so(tmp_path, write_config):
    """In a network namespace of its own the resolver is unreachable: no query leaves the machine."""
    config = base_config(tmp_path, "http://rss.arxiv.invalid", "http://127.0.0.1:9/v1")
    config["arxiv"]["max_retry_seconds"] = 600  # arXiv's own back-off would retry for minutes
    path = write_config(config)
    for args in (["run"], ["run", "--dry-run"]):
        done = subprocess.run(
            [*_unshare("--net"), sys.executable, "-m", "digest", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=120,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "http://rss.arxiv.invalid/rss/cs.CL" in output
        assert "the name rss.arxiv.invalid does not resolve (DNS" in output
        assert "check this machine's (or container's) network and DNS" in output
        assert "arXiv may be down" not in output
        assert output.count("retrying in") == 2, output  # two quick retries, then the error
