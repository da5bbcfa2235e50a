"""Real servers on loopback for the tests: an arXiv feed server, an OpenAI-compatible LLM server (both small ASGI
apps under uvicorn) and an SMTP server (aiosmtpd). They imitate the real services' behaviour as described in
../shared/notes/arxiv-and-openai.md.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import hashlib
import html
import json
import random
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import trustme
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _replay(body: bytes) -> Receive:
    """An ASGI receive that gives `body`, already read, once more."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _respond(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve_asgi(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], *, certificate: Path | None = None
) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port in a thread; yield its base URL. `certificate`: a file with
    the server's key and certificate chain, to serve HTTPS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls = {"ssl_certfile": str(certificate)} if certificate is not None else {}
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, **tls)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if certificate is not None else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


# arXiv


@dataclass
class FeedServer:
    """Serves feed files by path, with ETag/Last-Modified and scripted failures, like rss.arxiv.org."""

    feeds: dict[str, bytes] = field(default_factory=dict)  # path (/rss/cs.CL) -> body
    failures: list[tuple[int, bytes]] = field(default_factory=list)  # answered first, one per request
    retry_after: str = "0"  # sent with each failure
    requests: list[dict[str, str]] = field(default_factory=list)
    last_modified: str = "Tue, 30 Jun 2026 04:00:00 GMT"
    validators: bool = True  # False: no ETag and no Last-Modified, so every request gets the whole feed again
    hostile: str | None = None  # "endless": a body that never ends; "trickle": a byte a second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], **headers})
        if self.failures:
            status, body = self.failures.pop(0)
            await _respond(send, status, body, {"content-type": "text/html", "retry-after": self.retry_after})
            return
        if self.hostile is not None:
            headers_out = [(b"content-type", b"application/rss+xml")]
            await send({"type": "http.response.start", "status": 200, "headers": headers_out})
            for _ in range(100_000 if self.hostile == "endless" else 600):
                chunk = b"<!-- " + b"z" * 65536 + b" -->" if self.hostile == "endless" else b" "
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0 if self.hostile == "endless" else 1.0)
            await send({"type": "http.response.body", "body": b""})
            return
        body = self.feeds.get(scope["path"])
        if body is None:
            await _respond(send, 404, b"<html><body>Not Found</body></html>", {"content-type": "text/html"})
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.validators and headers.get("if-none-match") == etag:
            await _respond(send, 304, b"", {"etag": etag})
            return
        validators = {"etag": etag, "last-modified": self.last_modified} if self.validators else {}
        await _respond(send, 200, body, {"content-type": "application/rss+xml; charset=utf-8", **validators})


@dataclass
class ApiServer:
    """The export API: pages of an Atom result, sliced from a real API page by `start` and `max_results`. As the
    API has since its renewal (ropensci/aRxiv#67), it checks a submittedDate range, `[YYYYMMDDTTTT TO
    YYYYMMDDTTTT]`, and refuses one whose bounds are not real dates and times of this age (reported for an end of
    999912312359 in issue 33; the wording of the real refusal is not known, so this one's is made up)."""

    page: bytes
    clock: Callable[[], float] = time.monotonic
    requests: list[dict[str, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        text = self.page.decode()
        first = text.index("<entry>")
        self._head, self._tail = text[:first], "</feed>\n"
        self.entries = re.findall(r"<entry>.*?</entry>\s*", text[first:], re.S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = dict(parse_qsl(scope["query_string"].decode()))
        self.requests.append(query)
        self.arrivals.append(self.clock())
        if self.failures:
            await _respond(send, self.failures.pop(0), b"busy", {"content-type": "text/plain", "retry-after": "0"})
            return
        if (refused := _refused_dates(query.get("search_query", ""))) is not None:
            error = (
                "<entry><id>http://arxiv.org/api/errors#invalid_submittedDate</id><title>Error</title>"
                f"<summary>{html.escape(refused)}</summary></entry>"
            )
            head = re.sub(r"<opensearch:totalResults>\d+<", "<opensearch:totalResults>1<", self._head)
            await _respond(send, 200, (head + error + self._tail).encode(), {"content-type": "application/atom+xml"})
            return
        start, size = int(query.get("start", 0)), int(query.get("max_results", 10))
        entries = self.entries
        if "id_list" in query:  # as arXiv answers: the newest version of each id it knows; unknown ids are absent
            wanted = query["id_list"].split(",")
            entries = [e for e in entries if re.search(r"<id>http://arxiv.org/abs/(.+?)v\d+</id>", e)[1] in wanted]
        head = re.sub(r"<opensearch:totalResults>\d+<", f"<opensearch:totalResults>{len(entries)}<", self._head)
        head = re.sub(r"<opensearch:startIndex>\d+<", f"<opensearch:startIndex>{start}<", head)
        head = re.sub(r"<opensearch:itemsPerPage>\d+<", f"<opensearch:itemsPerPage>{size}<", head)
        body = head + "".join(entries[start : start + size]) + self._tail
        await _respond(send, 200, body.encode(), {"content-type": "application/atom+xml; charset=utf-8"})


def _refused_dates(search_query: str) -> str | None:
    """What is wrong with the query's submittedDate range, if anything."""
    match = re.search(r"submittedDate:\[(\S+) TO (\S+)\]", search_query)
    if match is None:
        return None
    for bound in match.groups():
        try:
            when = dt.datetime.strptime(bound, "%Y%m%d%H%M")
        except ValueError:
            return f"submittedDate bound {bound} is not YYYYMMDDTTTT"
        if not 1991 <= when.year <= dt.date.today().year + 1:
            return f"submittedDate bound {bound} is out of range"
    return None


# LLM


def keyword_judge(keyword: str) -> Callable[[str, str], tuple[bool, int]]:
    """Relevant, score 8, when the abstract mentions `keyword`; otherwise not, score 2."""

    def judge(title: str, abstract: str) -> tuple[bool, int]:
        found = keyword.lower() in abstract.lower()
        return found, 8 if found else 2

    return judge


@dataclass
class FakeLLM:
    """An OpenAI-compatible /v1/chat/completions and /v1/models, with the behaviours the tests need.

    It counts what a client cannot hide: requests, requests in flight at once, and their arrival times.
    """

    judge: Callable[[str, str], tuple[bool, int]] = field(default_factory=lambda: keyword_judge("language model"))
    latency: float = 0.0
    api_key: str = "test-key"
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini"])
    # Scripted answers for the first requests: "429", "500", "hang", "malformed", "schema", "quota", "401", "busy"
    # (Ollama's 503 when its queue is full, at once).
    script: list[str] = field(default_factory=list)
    random_failures: dict[str, float] = field(default_factory=dict)  # e.g. {"429": 0.2, "500": 0.05}
    invalid_for: set[str] = field(default_factory=set)  # titles always answered with a schema-violating verdict
    # Titles always answered in a hostile way: "html" (a captive portal's page, status 200), "list" (a JSON list),
    # "types" (strings where numbers belong in usage), "negative" (negative token counts), "huge" (a 2 MB body),
    # "endless" (a body that never ends), "trickle" (a byte a second), "refuse" (the model refuses), "bloated" (a
    # verdict with a 10 kB reason and a hundred matched interests), "echo" (a 500 that echoes the Authorization).
    hostile_for: dict[str, str] = field(default_factory=dict)
    reason_suffix: str = ""  # appended to every reason: what a model may write (U+FFFF, escape sequences)
    retry_after: str | None = "0.05"
    retry_after_ms: str | None = None
    # Enforce a requests-per-minute limit as OpenAI does, quantized to one second's worth (6,000 RPM as 100 a
    # second); beyond it: 429 at once, with retry-after(-ms) saying when the next request would pass.
    requests_per_minute: int | None = None
    # Which x-ratelimit-* families it sends: "both" (requests and tokens, as OpenAI), "requests" (as many gateways
    # and proxies), "none" (as vLLM, Ollama and LM Studio behind a limiter).
    limit_headers: str = "both"
    # A gateway like LiteLLM's proxy: at most this many requests per calendar minute, refused already when one is
    # left; successes say limit and remaining (requests only), a 429 says nothing but llm_provider-retry-after: 60.
    gateway_per_minute: int | None = None
    usage_by_length: bool = False  # count prompt tokens from the request's length (about 4 characters a token)
    # Providers' quirks. `structured`: the response_format types taken, others answered 400 as DeepSeek does
    # (an empty set: none, as a server that refuses the parameter). `refuse_params`: request parameters answered
    # 400 with the given message (OpenAI's reasoning models refuse temperature and max_tokens).
    structured: set[str] = field(default_factory=lambda: {"json_schema", "json_object"})
    refuse_params: dict[str, str] = field(default_factory=dict)
    fenced: bool = False  # the verdict wrapped in a Markdown code fence, as models without structured output write
    owned_by: str = "test"  # /v1/models' owned_by: llama-server says "llamacpp"
    # Ollama: beyond this many requests waiting or running, 503 "server busy" at once (OLLAMA_MAX_QUEUE).
    max_pending: int | None = None
    # A local server on a CPU: `slots` requests run at once (llama-server's --parallel), the rest wait in its queue;
    # running ones share `cores`, each needing `service_seconds` of one core. More at once: no more answers.
    slots: int | None = None
    cores: int = 1
    service_seconds: float = 0.1
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every chat completion request, as sent
    batch_api: BatchAPI | None = None  # /v1/files and /v1/batches; without it they are 404, as on vLLM or Ollama
    requests: int = 0  # chat completions asked live
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)
    judged: dict[str, tuple[bool, int]] = field(default_factory=dict)  # title -> verdict answered
    prompts: list[list[dict[str, str]]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    over_limit: int = 0  # 429s answered because the requests-per-minute limit was spent (not scripted ones)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bucket: float | None = None
    _bucket_at: float = 0.0
    _admitted: list[float] = field(default_factory=list)  # when each request passed the limit, for the counters
    _gateway_minute: int = -1
    _gateway_used: int = 0
    _slot_queue: asyncio.Semaphore | None = None
    _running: int = 0

    def _admit(self, now: float) -> float | None:
        """Take one request from the rate bucket; None if admitted, else the seconds until one would be."""
        if self.gateway_per_minute is not None:
            minute = int(time.time() // 60)
            if minute != self._gateway_minute:
                self._gateway_minute, self._gateway_used = minute, 0
            if self.gateway_per_minute - self._gateway_used <= 1:  # LiteLLM refuses when remaining is 1
                return 60.0
            self._gateway_used += 1
            return None
        if self.requests_per_minute is None:
            return None
        per_second = self.requests_per_minute / 60
        if self._bucket is None:
            self._bucket = per_second
        self._bucket = min(per_second, self._bucket + (now - self._bucket_at) * per_second)
        self._bucket_at = now
        if self._bucket >= 1:
            self._bucket -= 1
            self._admitted.append(now)
            return None
        return (1 - self._bucket) / per_second

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "max_in_flight": self.max_in_flight,
            "statuses": self.statuses,
            "over_limit": self.over_limit,
            "arrivals": self.arrivals,
            "batch_calls": self.batch_api.calls if self.batch_api is not None else 0,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = await _read_body(receive)
        if headers.get("authorization") != f"Bearer {self.api_key}":
            await self._error(send, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return
        if scope["path"].endswith("/stats"):
            with self._lock:
                await _respond(send, 200, json.dumps(self.stats()).encode(), _json)
            return
        if scope["path"].endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": self.owned_by} for m in self.models]
            await _respond(send, 200, json.dumps({"object": "list", "data": data}).encode(), _json)
            return
        if self.batch_api is not None and re.match(r"/v1/(files|batches)", scope["path"]):
            self.batch_api.calls += 1
            await self.batch_api.app(scope, _replay(body), send)
            return
        if not scope["path"].endswith("/chat/completions"):
            await self._error(send, 404, f"Unknown path {scope['path']}", "invalid_request_error", None)
            return
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            now = time.monotonic()
            self.arrivals.append(now)
            wait = self._admit(now)
            behaviour = self.script.pop(0) if self.script else self._random_behaviour()
        request = json.loads(body)
        with self._lock:
            self.bodies.append(request)
        try:
            if wait is not None:
                await self._rate_limited(send, wait)
            elif behaviour == "429":  # rate-limit answers come at once, without the model's latency
                await self._error(send, 429, "Rate limit reached for requests", "requests", "rate_limit_exceeded")
            elif behaviour == "busy" or (self.max_pending is not None and self.in_flight > self.max_pending):
                # Ollama's words (server/sched.go, ErrMaxQueue), with its status
                message = "server busy, please try again.  maximum pending requests exceeded"
                await self._error(send, 503, message, "server_error", None)
            elif (refused := self._refused(request)) is not None:
                await self._error(send, 400, refused, "invalid_request_error", None)
            else:
                if self.slots is not None:
                    await self._compute()
                await self._complete(request, behaviour, send)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _refused(self, request: dict[str, Any]) -> str | None:
        """The 400 a server with these quirks answers to this request, if any."""
        kind = request.get("response_format", {}).get("type")
        if kind is not None and kind not in self.structured:
            return "This response_format type is unavailable now"  # DeepSeek's words
        for parameter, message in self.refuse_params.items():
            if parameter in request:
                return message
        return None

    async def _compute(self) -> None:
        """Wait for one of the server's slots, then for `service_seconds` of a core shared by the running ones."""
        if self._slot_queue is None:
            self._slot_queue = asyncio.Semaphore(self.slots or 1)
        async with self._slot_queue:
            self._running += 1
            try:
                done = 0.0
                while done < self.service_seconds:
                    await asyncio.sleep(0.005)
                    done += 0.005 * min(1.0, self.cores / self._running)
            finally:
                self._running -= 1

    def _random_behaviour(self) -> str:
        draw = random.random()
        for behaviour, share in self.random_failures.items():
            if draw < share:
                return behaviour
            draw -= share
        return "ok"

    async def _complete(self, request: dict[str, Any], behaviour: str, send: Send) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "quota":
            await self._error(send, 429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota")
            return
        if behaviour == "500":
            await self._error(send, 500, "The server had an error while processing your request.", "server_error", None)
            return
        if behaviour == "401":
            await self._error(send, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return
        if behaviour == "400":  # what LiteLLM's proxy answers for a model it does not route
            message = f"litellm.BadRequestError: Invalid model name passed in model={request['model']}"
            await self._error(send, 400, message, "invalid_request_error", "400")
            return
        messages = request["messages"]
        self.prompts.append(messages)
        paper = json.loads(messages[-1]["content"])
        hostile = self.hostile_for.get(paper["title"])
        if hostile is not None and await self._hostile(hostile, request, send):
            return
        completion = self.completion(request, behaviour, bloated=hostile == "bloated")
        if hostile == "types":
            completion["usage"] = {"prompt_tokens": "lots", "completion_tokens": None}
        elif hostile == "negative":
            completion["usage"] = {"prompt_tokens": -1_000_000_000, "completion_tokens": -5}
        elif hostile == "refuse":
            completion["choices"][0]["message"].update(content=None, refusal="I cannot help with that.")
        await self._count(200)
        await _respond(send, 200, json.dumps(completion).encode(), self._headers(self._limit_headers()))

    def completion(self, request: dict[str, Any], behaviour: str = "ok", *, bloated: bool = False) -> dict[str, Any]:
        """The chat completion that answers `request`, judged by `judge`; "malformed" or "schema" spoil the verdict."""
        paper = json.loads(request["messages"][-1]["content"])
        relevant, score = self.judge(paper["title"], paper["abstract"])
        with self._lock:
            self.judged[paper["title"]] = (relevant, score)
        answer: dict[str, Any] = {
            "reason": ("It is about language models." if relevant else "It is not about your topics.")
            + self.reason_suffix,
            "score": score,
            "matched_interests": ["language models"] if relevant else [],
        }
        schema = request.get("response_format", {}).get("json_schema", {}).get("schema", {})
        if "tldr" in schema.get("properties", {}):
            answer["tldr"] = f"In short: {paper['title'][:60]}."
        if bloated:
            answer.update(reason="x" * 10_000, matched_interests=[f"interest {i} " + "y" * 1000 for i in range(50)])
        content = json.dumps(answer)
        if self.fenced:
            content = f"Here is my verdict:\n```json\n{json.dumps(answer, indent=2)}\n```"
        if paper["title"] in self.invalid_for:
            behaviour = "schema"
        if behaviour == "malformed":
            content = content[: len(content) // 2]
        elif behaviour == "schema":
            content = json.dumps({**answer, "score": "very high"})
        prompt_tokens, cached_tokens, completion_tokens = 400, 256, 40
        if self.usage_by_length:
            prompt_tokens = sum(len(m["content"]) for m in request["messages"]) // 4
            cached_tokens = len(request["messages"][0]["content"]) // 4 // 128 * 128  # OpenAI caches 128-token steps
            completion_tokens = len(content) // 4
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            },
        }

    async def _hostile(self, behaviour: str, request: dict[str, Any], send: Send) -> bool:
        """Answer in the hostile way named; False for the ways that are a completion with something odd in it."""
        if behaviour == "html":
            await _respond(
                send, 200, b"<html><body>Please log in to the Wi-Fi</body></html>", {"content-type": "text/html"}
            )
        elif behaviour == "list":
            await _respond(send, 200, b"[1, 2, 3]", _json)
        elif behaviour == "huge":
            await _respond(send, 200, b'{"choices": [], "padding": "' + b"z" * 2_000_000 + b'"}', _json)
        elif behaviour in ("endless", "trickle"):
            start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            await send(start)
            for _ in range(100_000 if behaviour == "endless" else 600):
                chunk = b"z" * 65536 if behaviour == "endless" else b" "
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0 if behaviour == "endless" else 1.0)
            await send({"type": "http.response.body", "body": b""})
        elif behaviour == "echo":
            message = f"upstream said: bad request with headers Authorization: Bearer {self.api_key}"
            await self._error(send, 500, message, "server_error", None)
        else:
            return False
        if behaviour != "echo":  # _error counted its own
            await self._count(200)
        return True

    async def _error(self, send: Send, status: int, message: str, kind: str, code: str | None) -> None:
        await self._count(status)
        headers = self._headers(self._limit_headers())
        if status == 429 and code == "rate_limit_exceeded":
            if self.retry_after is not None:
                headers["retry-after"] = self.retry_after
            if self.retry_after_ms is not None:
                headers["retry-after-ms"] = self.retry_after_ms
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        await _respond(send, status, json.dumps(body).encode(), headers)

    async def _rate_limited(self, send: Send, wait: float) -> None:
        await self._count(429)
        with self._lock:
            self.over_limit += 1
        if self.gateway_per_minute is not None:
            message = "litellm.RateLimitError: Max parallel request limit reached for model group."
            body = {"error": {"message": message, "type": "None", "param": "None", "code": "429"}}
            await _respond(send, 429, json.dumps(body).encode(), {**_json, "llm_provider-retry-after": "60"})
            return
        assert self.requests_per_minute is not None
        limits = {
            **_limits,
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait * 1000:.0f}ms",
        }
        headers = {
            **self._headers(limits),
            "retry-after": str(max(1, round(wait))),
            "retry-after-ms": f"{wait * 1000:.0f}",
        }
        message = f"Rate limit reached for requests: Limit {self.requests_per_minute}, Used {self.requests_per_minute}."
        body = {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
        await _respond(send, 429, json.dumps(body).encode(), headers)

    def _headers(self, limits: dict[str, str]) -> dict[str, str]:
        if self.limit_headers == "none":
            return dict(_json)
        if self.limit_headers == "requests":
            return {**_json, **{k: v for k, v in limits.items() if k.endswith("-requests")}}
        return {**_json, **limits}

    def _limit_headers(self) -> dict[str, str]:
        """The counters as they stand: what a success (or a 429 not caused by the limit) reports."""
        if self.gateway_per_minute is not None:
            return {
                "x-ratelimit-limit-requests": str(self.gateway_per_minute),
                "x-ratelimit-remaining-requests": str(self.gateway_per_minute - self._gateway_used),
            }
        if self.requests_per_minute is None:
            return _limits
        # As OpenAI counts: what is left of the minute's limit (the one-second bucket above is how it is enforced).
        in_last_minute = len(self._admitted) - bisect.bisect_left(self._admitted, time.monotonic() - 60)
        return {
            **_limits,
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-remaining-requests": str(max(0, self.requests_per_minute - in_last_minute)),
        }

    async def _count(self, status: int) -> None:
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1


@dataclass
class BatchAPI:
    """OpenAI's Batch API as documented (shared/notes): multipart file upload, batches created, retrieved, listed
    and cancelled, result files as JSONL in no particular order, over `llm`'s judge. A batch moves from validating
    to in_progress when first polled, and ends after `seconds`, unless `hold` keeps it going (answering only
    `done_while_held` of its requests). Lines of titles in `failed_for` go to the error file, those in
    `missing_for` nowhere, those in `invalid_for` get an invalid verdict; `expire_after` answers that many and
    expires the rest. Invalid input fails the batch."""

    llm: FakeLLM
    seconds: float = 0.2
    hold: bool = False
    done_while_held: int = 0
    expire_after: int | None = None
    failed_for: set[str] = field(default_factory=set)
    missing_for: set[str] = field(default_factory=set)
    invalid_for: set[str] = field(default_factory=set)  # answered with a verdict that breaks the schema, here only
    refuse_model: bool = False  # fail every batch in validation, as for a model the Batch API does not serve
    # Hostile or flaky, as a real provider can be: create the batch, then answer this status (a 5xx) or nothing for
    # `create_hangs` seconds; list a batch only `listed_after` seconds after its creation (or never: None); list
    # pages of other batches for ever (`has_more` each time); take a cancel and go on; pad result files to this size.
    create_answers: int | None = None
    create_hangs: float = 0.0
    listed_after: float | None = 0.0
    hidden_from_lists: int = 0  # and leave every batch out of this many list answers first
    endless_list: bool = False
    ignore_cancel: bool = False
    output_padding: int = 0
    lists: int = 0  # list requests
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0  # HTTP requests to /files and /batches
    uploads: int = 0
    cancels: int = 0
    polls: int = 0
    _started: dict[str, float] = field(default_factory=dict)
    _created: dict[str, float] = field(default_factory=dict)
    _lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _answered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/v1/files", self._upload, methods=["POST"]),
                Route("/v1/files/{file_id}/content", self._content),
                Route("/v1/batches", self._create, methods=["POST"]),
                Route("/v1/batches", self._list),
                Route("/v1/batches/{batch_id}", self._retrieve),
                Route("/v1/batches/{batch_id}/cancel", self._cancel, methods=["POST"]),
            ]
        )

    async def _upload(self, request: Request) -> Response:
        form = await request.form()
        upload = form["file"]
        assert isinstance(upload, UploadFile) and form["purpose"] == "batch"
        content = await upload.read()
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = content
        self.uploads += 1
        return JSONResponse(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": upload.filename,
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def _content(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if file_id not in self.files:
            return _not_found(f"No such File object: {file_id}")
        return Response(self.files[file_id], media_type="application/octet-stream")

    async def _create(self, request: Request) -> Response:
        asked = await request.json()
        if asked["input_file_id"] not in self.files:
            return _not_found(f"No such File object: {asked['input_file_id']}")
        assert asked["endpoint"] == "/v1/chat/completions" and asked["completion_window"] == "24h"
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": asked["endpoint"],
            "errors": None,
            "input_file_id": asked["input_file_id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "completed_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": asked.get("metadata"),
        }
        errors, lines = self._validate(self.files[asked["input_file_id"]])
        if self.refuse_model:
            errors.append({"code": "model_not_found", "message": "The model is not supported by the Batch API."})
        if errors:
            batch.update(status="failed", errors={"object": "list", "data": errors}, failed_at=now)
        else:
            self._lines[batch_id] = lines
            batch["request_counts"]["total"] = len(lines)
        self.batches[batch_id] = batch
        self._created[batch_id] = time.monotonic()
        if self.create_hangs:
            await asyncio.sleep(self.create_hangs)
        if self.create_answers is not None:
            error = {"message": "The server had an error while processing your request.", "type": "server_error"}
            return JSONResponse({"error": error}, status_code=self.create_answers)
        return JSONResponse(batch)

    def _validate(self, content: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines, errors, seen = [], [], set()
        for number, raw in enumerate(content.decode().splitlines(), 1):
            line = json.loads(raw)
            if line.get("custom_id") in seen:
                errors.append({"code": "duplicate_custom_id", "message": "custom_id is not unique", "line": number})
            if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
                errors.append({"code": "invalid_url", "message": "url must be the batch's endpoint", "line": number})
            seen.add(line.get("custom_id"))
            lines.append(line)
        return errors, lines

    async def _list(self, request: Request) -> Response:
        self.lists += 1
        if self.endless_list:  # another client's batches, page after page, none of them ours
            limit = int(request.query_params.get("limit", "20"))
            others = [{**next(iter(self.batches.values())), "id": f"batch_{uuid.uuid4().hex[:24]}", "metadata": None}]
            return JSONResponse({"object": "list", "data": others * limit, "has_more": True})
        now = time.monotonic()
        listed = [
            b
            for b in self.batches.values()
            if self.listed_after is not None
            and now - self._created[b["id"]] >= self.listed_after
            and self.lists > self.hidden_from_lists
        ]
        newest = sorted(listed, key=lambda b: b["created_at"], reverse=True)
        return JSONResponse({"object": "list", "data": newest, "has_more": False})

    async def _retrieve(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _not_found("No such Batch object")
        self.polls += 1
        self._advance(batch)
        return JSONResponse(batch)

    async def _cancel(self, request: Request) -> Response:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _not_found("No such Batch object")
        self.cancels += 1
        if batch["status"] in ("validating", "in_progress") and not self.ignore_cancel:
            batch.update(status="cancelling", cancelling_at=int(time.time()))
        return JSONResponse(batch)

    def _advance(self, batch: dict[str, Any]) -> None:
        """Move the batch on as time passes: what the real one does between polls."""
        batch_id, status, now = batch["id"], batch["status"], int(time.time())
        if status == "validating":
            batch.update(status="in_progress", in_progress_at=now)
            self._started[batch_id] = time.monotonic()
            return
        lines = self._lines.get(batch_id, [])
        if status == "in_progress" and self.hold:
            self._answer(batch, lines[: self.done_while_held])
        elif status == "in_progress" and time.monotonic() - self._started[batch_id] >= self.seconds:
            if self.expire_after is not None:
                self._answer(batch, lines[: self.expire_after])
                self._finish(batch, "expired", expired_at=now)
            else:
                self._answer(batch, lines)
                self._finish(batch, "completed", completed_at=now)
        elif status == "cancelling":
            self._finish(batch, "cancelled", cancelled_at=now)

    def _answer(self, batch: dict[str, Any], lines: list[dict[str, Any]]) -> None:
        answered = self._answered.setdefault(batch["id"], [])
        for line in lines[len(answered) :]:
            title = json.loads(line["body"]["messages"][-1]["content"])["title"]
            result: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": line["custom_id"]}
            if title in self.failed_for:
                error = {"message": "The server had an error processing your request.", "type": "server_error"}
                result.update(response={"status_code": 500, "request_id": "req", "body": {"error": error}}, error=None)
            elif title not in self.missing_for:
                body = self.llm.completion(line["body"], "schema" if title in self.invalid_for else "ok")
                result.update(response={"status_code": 200, "request_id": "req", "body": body}, error=None)
            answered.append(result)
        ok = sum(1 for r in answered if r.get("response", {}).get("status_code") == 200)
        batch["request_counts"].update(completed=ok, failed=sum(1 for r in answered if "response" in r) - ok)

    def _finish(self, batch: dict[str, Any], status: str, **when: int) -> None:
        answered = self._answered.get(batch["id"], [])
        random.shuffle(answered)  # in no particular order, as documented
        for kind, results in (
            ("output_file_id", [r for r in answered if r.get("response", {}).get("status_code") == 200]),
            ("error_file_id", [r for r in answered if r.get("response", {}).get("status_code", 200) != 200]),
        ):
            if results:
                file_id = f"file-{uuid.uuid4().hex[:24]}"
                content = "".join(json.dumps(r) + "\n" for r in results).encode()
                self.files[file_id] = content + b" " * max(0, self.output_padding - len(content))
                batch[kind] = file_id
        batch.update(status=status, finalizing_at=batch.get("finalizing_at"), **when)


def _not_found(message: str) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=404)


_json = {"content-type": "application/json"}
_limits = {  # an account with generous limits (OpenAI's tier 5 for gpt-4o-mini), so that only tests that ask meet them
    "x-ratelimit-limit-requests": "30000",
    "x-ratelimit-remaining-requests": "29999",
    "x-ratelimit-reset-requests": "2ms",
    "x-ratelimit-limit-tokens": "150000000",
    "x-ratelimit-remaining-tokens": "149999000",
    "x-ratelimit-reset-tokens": "0s",
}


# bioRxiv and medRxiv


@dataclass
class RxivAPI:
    """api.biorxiv.org's /details: an interval's records page by page (`page_size` a page, the cursor an offset,
    `total` a string, `funder` "all", as the real API), a DOI's versions, "no posts found" for an empty interval;
    `broken` maps cursors to what a page there answers instead ("empty": a 200 with an empty body, "html": a proxy's
    page); `no_records` maps cursors to how many times a page there answers with no records before it has them.
    `lie` is how a misbehaving API lies: "repeats" (a total of "10000" on every page, and the first page's records
    whatever the cursor), "no total" (`total: null`), "cursor" (every answer says it is the page at cursor 0)."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # server -> its records
    page_size: int = 30
    broken: dict[int, str] = field(default_factory=dict)
    no_records: dict[int, int] = field(default_factory=dict)
    lie: str | None = None
    requests: list[tuple[float, str]] = field(default_factory=list)  # (when, path) of every request

    def asked(self, server: str) -> list[str]:
        return [path for _, path in self.requests if path.startswith(f"/details/{server}/")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        self.requests.append((time.monotonic(), path))
        parts = path.strip("/").split("/")
        server = parts[1] if len(parts) > 1 else ""
        records = self.records.get(server, [])
        if len(parts) >= 5 and parts[-2] == "na":  # /details/{server}/{doi}/na/json
            doi = "/".join(parts[2:-2])
            found = [r for r in records if isinstance(r, dict) and r.get("doi") == doi]
            messages = [{"status": "ok", "category": "all"}] if found else [{"status": "no posts found"}]
            await _respond(send, 200, json.dumps({"messages": messages, "collection": found}).encode(), _json)
            return
        start, end, cursor = parts[2], parts[3], int(parts[4])
        if cursor in self.broken:
            kind = self.broken[cursor]
            body = b"" if kind == "empty" else b"<html><body>502 Bad Gateway</body></html>"
            await _respond(send, 200, body, {"content-type": "text/html"})
            return
        if not records:
            body = {"messages": [{"status": "no posts found"}], "collection": []}
            await _respond(send, 200, json.dumps(body).encode(), _json)
            return
        first = 0 if self.lie == "repeats" else cursor
        page = records[first : first + self.page_size]
        if self.no_records.get(cursor, 0) > 0:
            self.no_records[cursor] -= 1
            page = []
        total: str | None = str(len(records))
        if self.lie == "repeats":
            total = "10000"
        elif self.lie == "no total":
            total = None
        message = {
            "status": "ok",
            "category": "all",
            "interval": f"{start}:{end}",
            "funder": "all",
            "cursor": 0 if self.lie == "cursor" else cursor,
            "count": len(page),
            "count_new_papers": str(sum(1 for r in records if isinstance(r, dict) and r.get("version") == "1")),
            "total": total,
        }
        await _respond(send, 200, json.dumps({"messages": [message], "collection": page}).encode(), _json)


# Chat and push services

# Where the hosted services' URLs go, whatever the URL says: Apprise writes these hosts into its requests itself.
SERVICE_HOSTS = (
    "api.telegram.org",
    "discord.com",
    "slack.com",
    "hooks.slack.com",
    "open.larksuite.com",
    "open.feishu.cn",
    "prod-00.westeurope.logic.azure.com",  # a Power Automate workflow's host (Microsoft Teams)
)

# A scripted answer: a status, answered with the service's own body for it; or a status and the body itself (a JSON
# value, bytes as they are, or None for the service's own), and headers to send with it.
ChatAnswer = int | tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class ChatServer:
    """Where Apprise's URLs point in the tests, answering as each service answers (tests/fixtures/real/APPRISE.md):
    ntfy (a POST of JSON to /, the topic inside), Mattermost's incoming webhooks (/hooks/<token>), Telegram's Bot API
    (/bot<token>/<method>), Discord's webhooks, Slack's Web API and webhooks, Lark's and Feishu's bot hooks, Gotify
    (/message), Matrix's client API, a Power Automate workflow, and a JSON webhook (any other path); or with the
    answers scripted for a path (one per request, then the service's own). `echo_headers`: an error's message shows
    the request's headers, as some servers' debugging answers do."""

    script: dict[str, list[ChatAnswer]] = field(default_factory=dict)  # path -> answers given first
    echo_headers: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)  # host, path, headers, JSON body, size of each taken
    refused: list[dict[str, Any]] = field(default_factory=list)  # the same, of each request answered otherwise

    def of(self, path: str) -> list[dict[str, Any]]:
        """The bodies received on `path`."""
        return [r["body"] for r in self.received if r["path"] == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = await _read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        parsed = json.loads(body) if body.strip().startswith((b"{", b"[")) else {}
        host = headers.get("host", "").partition(":")[0]
        record = {"host": host, "path": path, "headers": headers, "body": parsed, "size": len(body)}
        scripted = self.script.get(path)
        answer = scripted.pop(0) if scripted else 200
        status, content, extra = (answer, None, {}) if isinstance(answer, int) else (*answer, {})[:3]
        (self.received if status < 300 and content is None else self.refused).append(record)
        if content is None:
            content = _service_answer(path, status)
        if self.echo_headers and status >= 300:  # the credentials first, as "invalid credentials: ..." has them
            shown = sorted(headers.items(), key=lambda header: header[0] != "authorization")
            said = "; ".join(f"{name}: {value}" for name, value in shown)
            content = {"http": status, "error": f"{HTTPStatus(status).phrase}; the request was {said}"}
        raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        kind = "application/json" if raw.startswith((b"{", b"[")) else "text/plain"
        await _respond(send, status, raw, {"content-type": kind, **extra})


def _service_answer(path: str, status: int) -> Any:
    """What the service at `path` answers with `status`: its acceptance, or its own error object."""
    ok = status < 300
    if path == "/":  # ntfy, its errors as ntfy's errors.go writes them
        if ok:
            return {"id": uuid.uuid4().hex[:12], "time": int(time.time()), "event": "message", "topic": "t"}
        error = "unauthorized" if status == 401 else "error"
        return {"code": status * 100 + 1, "http": status, "error": error, "link": "https://ntfy.sh/docs/publish/"}
    if path.startswith("/hooks/"):  # Mattermost
        return b"ok" if ok else {"id": "web.incoming_webhook.invalid.app_error", "status_code": status}
    if path.startswith("/bot"):  # Telegram: the bot's owner (getUpdates) is the chat when the URL names none
        if not ok:
            return {"ok": False, "error_code": status, "description": HTTPStatus(status).phrase}
        if path.endswith("/getUpdates"):
            chat = {"id": 12315544, "type": "private", "first_name": "Reader"}
            return {"ok": True, "result": [{"update_id": 1, "message": {"message_id": 1, "chat": chat, "from": chat}}]}
        return {"ok": True, "result": {"message_id": 1}}
    if path.startswith("/api/webhooks/"):  # Discord
        return {"id": "1", "type": 0} if ok else {"message": HTTPStatus(status).phrase, "code": 0}
    if path == "/api/chat.postMessage":  # Slack's Web API: its errors as 200s too
        return {"ok": True, "channel": "C1", "ts": "1.1"} if ok else {"ok": False, "error": "invalid_auth"}
    if path.startswith("/services/"):  # Slack's incoming webhooks
        return b"ok" if ok else b"invalid_token"
    if path.startswith("/open-apis/bot/"):  # Lark and Feishu
        return {"code": 0, "msg": "success", "data": {}} if ok else {"code": 9499, "msg": "Bad Request"}
    if path == "/message":  # Gotify
        return {"id": 1, "appid": 1, "priority": 5} if ok else {"error": "Unauthorized", "errorCode": status}
    if path.startswith("/_matrix/"):
        if not ok:
            return {"errcode": "M_FORBIDDEN", "error": HTTPStatus(status).phrase}
        if "/join/" in path:
            return {"room_id": "!papers:example.org"}
        return {"event_id": "$1"} if "/send/" in path else {"user_id": "@digest:example.org"}
    return {}  # a JSON webhook, or a Power Automate workflow (202, by its script)


def chat_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway CA and a certificate of it for the hosted services' names, for `serve_asgi(certificate=...)`.
    Returns (the CA's file, the server's key and certificate chain)."""
    ca = trustme.CA()
    ca_file, server_file = folder / "chat-ca.pem", folder / "chat-server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert(*SERVICE_HOSTS).private_key_and_cert_chain_pem.write_to_path(str(server_file))
    return ca_file, server_file


@contextmanager
def connect_proxy(target_port: int) -> Iterator[int]:
    """An HTTP proxy on loopback that tunnels every CONNECT, whatever host it names, to `target_port` on loopback;
    yields its port. With HTTPS_PROXY pointing at it, a process's requests to api.telegram.org reach the test."""
    loop = asyncio.new_event_loop()

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"CONNECT "):
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = loop.run_until_complete(asyncio.start_server(tunnel, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


@contextmanager
def chat_services(app: ChatServer, folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`app` on loopback twice: as itself (for the URLs that name their host: json://, ntfy://, mmost://, gotify://,
    matrix://, workflow://) and, behind an HTTPS proxy, as the hosted services (tgram://, discord://, slack://,
    lark://, feishu://) with a certificate for their names. Yields app's host:port and the environment that sends a
    process's requests through the proxy and trusts that certificate."""
    ca_file, server_file = chat_certificate(folder)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_asgi(app))
        tls_url = stack.enter_context(serve_asgi(app, certificate=server_file))
        proxy_port = stack.enter_context(connect_proxy(int(tls_url.rpartition(":")[2])))
        yield (
            url.removeprefix("http://"),
            {
                "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
                "NO_PROXY": "127.0.0.1,localhost",
                "REQUESTS_CA_BUNDLE": str(ca_file),
            },
        )


# Embeddings


@dataclass
class EmbeddingsServer:
    """An OpenAI-compatible /v1/embeddings in OpenAI's format and with its limits: at most `max_inputs` texts a
    request (a 400 beyond, as OpenAI answers past 2,048), the data items out of order (each says its `index`), and
    the scripted statuses first (a 429 with `retry-after`). Vectors come from `vector_of`, by text."""

    vector_of: Callable[[str], list[float]]
    max_inputs: int = 2048
    script: list[int] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)  # the inputs of each request answered 200
    statuses: list[int] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http" and scope["path"] == "/v1/embeddings"
        request = json.loads(await _read_body(receive))
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        status = self.script.pop(0) if self.script else 200
        if status == 200 and len(inputs) > self.max_inputs:
            status = 400
        self.statuses.append(status)
        if status != 200:
            message = {
                429: "Rate limit reached for requests",
                400: f"'input' must have at most {self.max_inputs} items",
            }
            error = {"error": {"message": message.get(status, "server error"), "type": "invalid_request_error"}}
            await _respond(send, status, json.dumps(error).encode(), {**_json, "retry-after": "0"})
            return
        self.batches.append(inputs)
        data = [{"object": "embedding", "index": i, "embedding": self.vector_of(text)} for i, text in enumerate(inputs)]
        answer = {
            "object": "list",
            "data": data[::-1],  # out of order: the index is what says which text a vector is of
            "model": request["model"],
            "usage": {
                "prompt_tokens": sum(len(t) // 4 for t in inputs),
                "total_tokens": sum(len(t) // 4 for t in inputs),
            },
        }
        await _respond(send, 200, json.dumps(answer).encode(), _json)


# SMTP


class _Inbox:
    """What the SMTP server received, and how it answers: `refuse` maps addresses to their RCPT reply, `data_reply`
    refuses every message (552, say), `accept_delay` holds each accepted message before its 250 (the message is
    queued first, as a real server queues it: a client that leaves before the 250 may still get it delivered),
    `quit_reply` answers QUIT."""

    def __init__(
        self, refuse: dict[str, str], data_reply: str | None, accept_delay: float, quit_reply: str | None
    ) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[str] = []
        self.accepted_at: list[float] = []  # when each message was queued, before its 250 left
        self._refuse = refuse
        self._data_reply = data_reply
        self._accept_delay = accept_delay
        self._quit_reply = quit_reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self._refuse:
            return self._refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self._data_reply is not None:
            return self._data_reply
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        self.accepted_at.append(time.time())
        if self._accept_delay:
            await asyncio.sleep(self._accept_delay)
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        return self._quit_reply or "221 Bye"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TLS:
    """A throwaway certificate authority and a server certificate for 127.0.0.1, for SMTP over TLS."""

    ca_file: str
    server_context: ssl.SSLContext


def make_tls(folder: str) -> TLS:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    ca_file = f"{folder}/ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    return TLS(ca_file=ca_file, server_context=server_context)


@contextmanager
def smtp_server(
    *,
    tls: TLS | None = None,
    implicit_tls: bool = False,
    login: tuple[str, str] | None = None,
    refuse: dict[str, str] | set[str] | None = None,
    data_reply: str | None = None,
    accept_delay: float = 0.0,
    quit_reply: str | None = None,
    smtputf8: bool = True,
) -> Iterator[tuple[int, _Inbox]]:
    """aiosmtpd on loopback: plain, with STARTTLS (`tls`), or TLS from the first byte (`implicit_tls`); with AUTH
    when `login` is given (accepted over TLS only, as real servers do); with SMTPUTF8 unless told otherwise."""
    refusals = refuse if isinstance(refuse, dict) else dict.fromkeys(refuse or (), "550 5.1.1 No such user here")
    inbox = _Inbox(refusals, data_reply, accept_delay, quit_reply)
    port = free_port()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert login is not None
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == login
        if ok:
            inbox.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    settings: dict[str, Any] = {}
    if tls is not None and implicit_tls:
        settings["ssl_context"] = tls.server_context
    elif tls is not None:
        settings.update(tls_context=tls.server_context, require_starttls=True)
    if login is not None:
        settings.update(authenticator=authenticate, auth_required=True, auth_require_tls=True)
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, server_hostname="127.0.0.1", enable_SMTPUTF8=smtputf8, **settings
    )
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


@contextmanager
def slow_greeting_server(seconds_per_byte: float = 1.0, *, requests: list[bytes] | None = None) -> Iterator[int]:
    """A server that trickles its greeting one byte at a time and never finishes it (slow loris); yields its port.
    With `requests`, it is an HTTP service that takes each request (kept there) and then trickles its answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    done = threading.Event()

    def trickle() -> None:
        clients = []
        while not done.is_set():
            try:
                client, _ = listener.accept()
                if requests is not None:
                    requests.append(_http_request(client))
                clients.append(client)
            except TimeoutError:
                pass
            for client in clients:
                with contextlib.suppress(OSError):
                    client.send(b"2" if requests is None else b"H")
            done.wait(seconds_per_byte)
        for client in clients:
            client.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


def _http_request(client: socket.socket) -> bytes:
    """An HTTP request as it arrives: the head, and a body of its Content-Length."""
    client.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := client.recv(65536)):
        data += chunk
    length = re.search(rb"(?im)^content-length:\s*(\d+)", data)
    while length and len(data.partition(b"\r\n\r\n")[2]) < int(length[1]) and (chunk := client.recv(65536)):
        data += chunk
    return data


def html_titles(message: EmailMessage, *, listed: bool = False) -> list[str]:
    """The titles of the papers shown in full in a digest's HTML part, unescaped; `listed`: with those a long
    digest lists by title alone."""
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    kinds = "title|brief" if listed else "title"
    pattern = rf'<p class="(?:{kinds})"[^>]*>\s*(?:<span[^>]*>[^<]*</span>\s*)?<a href="https://arxiv.org/abs/[^"]+"[^>]*>(.*?)</a>'
    links = re.findall(pattern, part.get_content(), re.S)
    return [html.unescape(t) for t in links]
