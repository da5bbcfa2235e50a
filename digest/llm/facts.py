"""What digest has learned about the LLM server it talks to, kept in the state between runs.

Servers differ in what they take (structured output, temperature, seed, which output-bound parameter), how fast
they answer, and whether they have the Batch API. Each is found by trying, once, and remembered per server and
model: the next run asks in the form the server took at once, `digest run --dry-run` estimates a day's time from
the answers a second measured, and `digest check` says what was found.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from digest.config import LLMConfig
from digest.state.store import Store

StructuredOutput = Literal["json_schema", "json_object", "instructions"]
TokenLimitParameter = Literal["max_tokens", "max_completion_tokens"]


class ServerFacts(BaseModel):
    structured_output: StructuredOutput | None = None  # the strictest form the server took; None: not tried yet
    refused: list[str] = []  # request parameters it answered 400 for, left out from then on ("seed", ...)
    token_limit: TokenLimitParameter | None = None  # the output-bound parameter it took, when one was refused
    answers_per_second: float | None = None  # measured in the last run of at least MEASURED_AFTER requests
    concurrency: int | None = None  # requests in flight that run settled on
    batch_api: bool | None = None  # False once /files or /batches answered 404


MEASURED_AFTER = 10  # requests in a run before its speed is worth remembering


def _key(llm: LLMConfig) -> str:
    return f"server:{llm.base_url}|{llm.model}"


def load_facts(store: Store | None, llm: LLMConfig) -> ServerFacts:
    if store is None:
        return ServerFacts()
    raw = store.get_setting(_key(llm))
    try:
        return ServerFacts.model_validate_json(raw) if raw else ServerFacts()
    except ValidationError:  # written by another release: learned again
        return ServerFacts()


def save_facts(store: Store, llm: LLMConfig, facts: ServerFacts) -> None:
    store.put_setting(_key(llm), facts.model_dump_json())


def is_local(base_url: str) -> bool:
    """Whether the server is on this machine or the local network (loopback, private, link-local): the reader's
    own hardware, which charges nothing per token. Names are not resolved (a slow resolver would stall the summary):
    one without a dot is a container's or a LAN host's, never a public API's."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith((".local", ".localhost", ".internal", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host and bool(host)
    return address.is_loopback or address.is_private or address.is_link_local
