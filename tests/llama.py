"""llama.cpp's llama-server with SmolLM2-135M-Instruct, as `.ci/llama-server` builds it into a cache outside the
checkout: found, started on a free loopback port, and stopped. The tests that need it are skipped where it is not
built, with a line saying how to build it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

LLAMA_VERSION = "0.3.36"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_HINT = "build it with `bash .ci/llama-server` (about 5 minutes; cached under ~/.cache/digest)"


def llama_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("DIGEST_LLAMA_DIR") or cache / "digest" / f"llama-server-{LLAMA_VERSION}")


def llama_missing() -> str | None:
    """Why llama-server cannot be started here, or None when it can."""
    folder = llama_dir()
    if not (folder / "bin" / "llama-server").is_file():
        return f"llama-server is not built in {folder}: {BUILD_HINT}"
    if not (folder / MODEL_FILE).is_file():
        return f"the model {MODEL_FILE} is not in {folder}: {BUILD_HINT}"
    return None


@contextmanager
def llama_server(*, parallel: int = 4, threads: int | None = None, context: int = 16384) -> Iterator[str]:
    """llama-server on a free loopback port, as the README starts it; yields its /v1 base URL. Its log goes to a
    file beside nothing the tests read, so that a full pipe never stalls it."""
    folder = llama_dir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(folder / "bin" / "llama-server"),
        "-m",
        str(folder / MODEL_FILE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "-c",
        str(context),
        "-t",
        str(threads or os.cpu_count() or 1),
        "--alias",
        "smollm2",
    ]
    log = open(f"/tmp/llama-server-{port}.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not become ready in 120 s; see {log.name}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
