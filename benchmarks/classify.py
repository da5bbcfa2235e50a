"""The bounded async classifier against an OpenAI-compatible server on loopback that answers after 500 ms and
enforces 6,000 requests per minute (as OpenAI does, quantized to 100 a second; 429 with retry-after beyond).
The server runs in its own process, so that it does not share a CPU with the client under test. Prints figures;
asserts nothing.

    .venv/bin/python benchmarks/classify.py                       # every scenario (about three minutes)
    .venv/bin/python benchmarks/classify.py --quick               # 300 papers, no 10,000-paper memory run
    .venv/bin/python benchmarks/classify.py --only 3 --repeat 5   # one scenario's spread, every header mode
    .venv/bin/python benchmarks/classify.py --only 4              # the gateway: 60 a minute, over two minutes
    .venv/bin/python benchmarks/classify.py --only 5 --repeat 3   # a server that charges nothing: medians
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

sys.path.insert(0, str(Path(__file__).parent.parent))

from digest.config import LLMConfig, Profile
from digest.llm.answers import Outcome, response_format
from digest.llm.live import Classifier
from digest.llm.prompt import paper_message, system_prompt
from digest.llm.requests import Job
from digest.models import Paper, Verdict
from digest.sources.arxiv_parse import parse_feed

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
PROFILE = Profile(name="bench", interests="Language models: training, inference, evaluation.")
LATENCY = 0.5
SERVER_RPM = 6000
CONCURRENCY = 64
PRICED, UNPRICED = "gpt-4o-mini", "fake-model"  # on loopback, the second is "local, no charge"


def _serve(port: int, settings: dict[str, Any]) -> None:
    import uvicorn

    from tests.servers import BatchAPI, FakeLLM

    batch = settings.pop("batch", False)  # with the Batch API, finishing a batch 3 s after it is first polled
    llm = FakeLLM(**settings)
    llm.batch_api = BatchAPI(llm, seconds=3.0) if batch else None
    uvicorn.run(llm, host="127.0.0.1", port=port, log_level="error", lifespan="off")


class Server:
    """A FakeLLM in a child process; its counters come from GET /v1/stats."""

    def __init__(self, **settings: Any) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(self.port, settings), daemon=True
        )

    def __enter__(self) -> Server:
        self._process.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/stats", headers={"Authorization": "Bearer test-key"}, timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("benchmark server did not start")

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(5)

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/stats", headers={"Authorization": "Bearer test-key"}, timeout=10)
        return dict(response.json())


def papers(count: int) -> list[Paper]:
    real = [
        p
        for name in ("cs.CV_2026-06-23_rss.xml", "cs.CL_2026-06-30_rss.xml", "cs.CL+cs.AI_2026-07-01_rss.xml")
        for p in parse_feed(
            (FIXTURES / name).read_bytes(),
            url=name,
            categories=name.split("_")[0].split("+"),
            announce_types=["new", "cross", "replace", "replace-cross"],
        ).papers
    ]
    return [
        real[n % len(real)].model_copy(update={"id": f"9{n // 100000:03d}.{n % 100000:05d}", "version": 1})
        for n in range(count)
    ]


def config(url: str, *, told: bool = True, **overrides: Any) -> LLMConfig:
    """The client's settings; `told`: with the reader's rate limits (else the defaults, as config.yaml leaves them)."""
    settings: dict[str, Any] = {
        "base_url": url,
        "api_key": "test-key",
        "max_concurrency": CONCURRENCY,
        "timeout_seconds": 30,
        "max_attempts": 10,
    }
    if told:
        settings |= {"requests_per_minute": SERVER_RPM, "tokens_per_minute": 1_000_000_000}
    return LLMConfig.model_validate(settings | overrides)


class Run(NamedTuple):
    startup: float  # from the call to the first request sent: building prompts, the first connection
    elapsed: float  # from the first request sent to the last answer: the measured time, as the issue defines it
    done: int  # papers answered (with a verdict, for digest)


def client(url: str, sent: list[float], **options: Any) -> openai.AsyncOpenAI:
    """An AsyncOpenAI with the SDK's own HTTP client, plus a hook noting when each request leaves."""

    async def note(request: Any) -> None:
        sent.append(time.monotonic())

    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [note]})
    return openai.AsyncOpenAI(api_key="test-key", base_url=url, http_client=http_client, **options)


async def classify(llm: LLMConfig, batch: list[Paper]) -> Run:
    sent: list[float] = []
    # The options Classifier uses when it builds the client itself.
    openai_client = client(llm.base_url, sent, timeout=llm.timeout_seconds, max_retries=0)
    outcomes: dict[str, Outcome] = {}
    classifier = Classifier(llm, client=openai_client)
    start = time.monotonic()
    await classifier.classify(
        [Job(PROFILE, p, system_prompt(PROFILE)) for p in batch], lambda job, o: outcomes.__setitem__(job.paper.key, o)
    )
    end = time.monotonic()
    await classifier.close()
    return Run(sent[0] - start, end - sent[0], sum(isinstance(o, Verdict) for o in outcomes.values()))


def max_in_window(arrivals: list[float], window: float) -> int:
    arrivals = sorted(arrivals)
    best, left = 0, 0
    for right, t in enumerate(arrivals):
        while t - arrivals[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best


def report(name: str, run: Run, bound: float, stats: dict[str, Any], total: int) -> None:
    statuses = {int(k): v for k, v in stats["statuses"].items()}
    requests = stats["requests"]
    share_429 = statuses.get(429, 0) / max(requests, 1)
    print(
        f"{name:<44} {run.elapsed:6.2f} s = {run.elapsed / bound:4.2f} x bound  {requests:>5} requests  "
        f"429: {statuses.get(429, 0):>4} ({share_429:5.1%}, {stats['over_limit']} over the limit)  "
        f"500: {statuses.get(500, 0):>3}  classified {run.done}/{total}  in flight max {stats['max_in_flight']}  "
        f"busiest second {max_in_window(stats['arrivals'], 1.0)}  (startup {run.startup:.2f} s)",
        flush=True,
    )


def messages(paper: Paper) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": system_prompt(PROFILE)},
        {"role": "user", "content": paper_message(paper)},
    ]


async def sequential(url: str, batch: list[Paper]) -> Run:
    sent: list[float] = []
    openai_client = client(url, sent)
    done = 0
    start = time.monotonic()
    for paper in batch:
        try:
            await openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=messages(paper), response_format=response_format("json_schema")
            )
            done += 1
        except openai.APIError:
            pass
    end = time.monotonic()
    await openai_client.close()
    return Run(sent[0] - start, end - sent[0], done)


async def naive_gather(url: str, batch: list[Paper]) -> Run:
    """What the template this product descends from does: gather under a bare semaphore, SDK retries only."""
    sent: list[float] = []
    openai_client = client(url, sent)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(paper: Paper) -> bool:
        async with semaphore:
            try:
                completion = await openai_client.chat.completions.create(
                    model="gpt-4o-mini", messages=messages(paper), response_format=response_format("json_schema")
                )
                return completion.choices[0].message.content is not None
            except openai.APIError:
                return False

    start = time.monotonic()
    results = await asyncio.gather(*(one(p) for p in batch))
    end = time.monotonic()
    await openai_client.close()
    return Run(sent[0] - start, end - sent[0], sum(results))


def memory(count: int) -> None:
    batch = papers(count)
    with Server() as server:
        tracemalloc.start()
        run = asyncio.run(classify(config(server.url, requests_per_minute=10**7, max_concurrency=64), batch))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(
        f"peak memory, {count:>6} papers (no latency, no limit): {peak / 1e6:6.1f} MB traced "
        f"({peak / count / 1e3:.1f} kB a paper), {run.done} verdicts in {run.elapsed:.1f} s"
    )


def gateway(repeat: int) -> None:
    """4. A gateway like LiteLLM's proxy: 60 requests per calendar minute, refused already when one is left, a 429
    that says nothing but llm_provider-retry-after: 60; the client told 600 RPM; 137 papers."""
    count = 137
    bound = count / 60 * 60  # the time the server's window allows: 137 requests at 60 a minute
    ratios = []
    for _ in range(repeat):
        with Server(latency=LATENCY, gateway_per_minute=60, limit_headers="requests") as server:
            run = asyncio.run(classify(config(server.url, requests_per_minute=600), papers(count)))
            report("4. gateway, 60 a calendar minute, told 600 RPM", run, bound, server.stats(), count)
            ratios.append(run.elapsed / bound)
    if repeat > 1:
        print(
            f"{'':<44} over {repeat} runs: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
            f"max {max(ratios):.2f} x (137 requests at 60 a minute)"
        )


def free_server(count: int, repeat: int, mode: str) -> None:
    """5. A server that charges nothing (issue 33): the same server under an unpriced model name is paced as under a
    priced one, by the rates the reader set and by what its 429s teach. Last, the unpriced model told no rate at all
    (a paid account's defaults are not a free server's): paced by its 429s alone."""
    batch = papers(count)
    bound = max(count / (SERVER_RPM / 60), count * LATENCY / CONCURRENCY)
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("told 12,000 RPM, 5% random 500", {"random_failures": {"500": 0.05}}, {"requests_per_minute": 2 * SERVER_RPM}),
        ("20% random 429 and 5% random 500", {"random_failures": {"429": 0.2, "500": 0.05}}, {}),
    ]
    print(f"5. a server that charges nothing, headers: {mode}; medians of {repeat}, the models' runs taken in turn")
    print("| case | model | requests | over the limit | 429s | time | classified |")
    print("|---|---|---:|---:|---:|---:|---:|")
    variants = ((PRICED, True), (UNPRICED, True), (UNPRICED, False))
    for name, server_settings, client_settings in cases:
        figures: dict[tuple[str, bool], list[tuple[int, int, int, float, int]]] = {v: [] for v in variants}
        for _ in range(repeat):  # in turn, so that the machine's load weighs on every model alike
            for model, told in variants:
                settings = {"latency": LATENCY, "requests_per_minute": SERVER_RPM, "limit_headers": mode}
                with Server(**settings, **server_settings) as server:
                    llm = config(server.url, told=told, model=model, **(client_settings if told else {}))
                    run = asyncio.run(classify(llm, batch))
                    stats = server.stats()
                    limited = int(stats["statuses"].get("429", 0))
                    figures[model, told].append(
                        (stats["requests"], stats["over_limit"], limited, run.elapsed, run.done)
                    )
        for (model, told), runs in figures.items():
            requests, over, refused, elapsed, done = (statistics.median(c) for c in zip(*runs, strict=True))
            label = model if told else f"{model}, told no rate"
            print(
                f"| {name} | {label} | {requests:,.0f} | {over:,.0f} | {refused:,.0f} | "
                f"{elapsed:.1f} s ({elapsed / bound:.2f} x bound) | {done:,.0f}/{count} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run each digest scenario N times")
    parser.add_argument("--only", type=int, choices=(1, 2, 3, 4, 5), help="run only this digest scenario")
    parser.add_argument("--mode", choices=("both", "requests", "none"), help="only this family of limit headers")
    args = parser.parse_args()
    count = 300 if args.quick else 1000
    batch = papers(count)
    bound = max(count / (SERVER_RPM / 60), count * LATENCY / CONCURRENCY)
    print(
        f"{count} papers, server: {LATENCY * 1000:.0f} ms latency, {SERVER_RPM} RPM enforced as "
        f"{SERVER_RPM // 60}/s; max_concurrency {CONCURRENCY}; bound max(N/RPM, N x latency / concurrency) "
        f"= {bound:.1f} s; time measured from the first request sent to the last answer"
    )

    scenarios: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("told the real limit (6,000 RPM)", {}, {}),
        ("told twice the limit (12,000 RPM)", {}, {"requests_per_minute": 2 * SERVER_RPM}),
        ("20% random 429 and 5% random 500", {"random_failures": {"429": 0.2, "500": 0.05}}, {}),
    ]
    # Every scenario under each family of x-ratelimit-* headers: OpenAI sends both, gateways often only the
    # requests family, vLLM, Ollama and LM Studio behind a limiter none.
    modes = ["both", "requests", "none"] if args.mode is None else [args.mode]
    for number, (name, server_settings, client_settings) in enumerate(scenarios, 1):
        if args.only not in (None, number):
            continue
        for mode in modes:
            ratios = []
            for _ in range(args.repeat):
                settings = {"latency": LATENCY, "requests_per_minute": SERVER_RPM, "limit_headers": mode}
                with Server(**settings, **server_settings) as server:
                    run = asyncio.run(classify(config(server.url, **client_settings), batch))
                    report(f"{number}. {name}, headers: {mode}", run, bound, server.stats(), count)
                    ratios.append(run.elapsed / bound)
            if args.repeat > 1:
                print(
                    f"{'':<44} over {args.repeat} runs: min {min(ratios):.2f}, "
                    f"median {statistics.median(ratios):.2f}, max {max(ratios):.2f} x bound"
                )
    if args.only in (None, 4):
        gateway(args.repeat)
    if args.only in (None, 5):
        free_server(count, args.repeat, args.mode or "none")
    if args.only is not None:
        return

    with Server(latency=LATENCY, requests_per_minute=SERVER_RPM) as server:
        run = asyncio.run(naive_gather(server.url, batch))
        report("asyncio.gather + Semaphore(64), SDK retries", run, bound, server.stats(), count)

    sample = 40
    with Server(latency=LATENCY, requests_per_minute=SERVER_RPM) as server:
        run = asyncio.run(sequential(server.url, batch[:sample]))
        report(f"sequential loop, first {sample} papers", run, bound * sample / count, server.stats(), sample)
        print(f"{'':<44} -> {count} papers sequentially: about {run.elapsed / sample * count:.0f} s (extrapolated)")

    memory(1000)
    if not args.quick:
        memory(10_000)


if __name__ == "__main__":
    main()
