"""A request: one (profile, paper) job as a chat completion body, in the form the server takes, and the one way an
OpenAI client is built for it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple, TypedDict

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from digest.config import LLMConfig, Profile
from digest.errors import LLMError
from digest.llm.answers import answer_model, answer_tokens, response_format
from digest.llm.facts import ServerFacts, StructuredOutput
from digest.llm.prices import REASONING_ALLOWANCE, is_reasoning_model
from digest.llm.prompt import paper_message
from digest.models import Paper
from digest.net.http import capped_answer_client

SEED = 20260630  # with temperature 0, the same paper gets the same verdict on a retry, where the server honours it


# 400s that name a request parameter: the server does not take it, so the request is asked again without it.
REFUSED_PARAMETER = re.compile(r"response_format|json_schema|json_object|temperature|seed|max_tokens|max_completion")


STRUCTURED_OUTPUTS: list[StructuredOutput] = ["json_schema", "json_object", "instructions"]


class Job(NamedTuple):
    profile: Profile
    paper: Paper
    instructions: str  # the system prompt: the caller's, so one string serves every job of a profile


class ChatRequest(TypedDict, total=False):
    model: str
    messages: list[ChatCompletionMessageParam]
    response_format: ResponseFormat
    temperature: float
    seed: int
    max_tokens: int
    max_completion_tokens: int


def request_body(config: LLMConfig, job: Job, facts: ServerFacts | None = None) -> ChatRequest:
    """One job's chat completion request, live or in a batch, in the form the server took (`facts`). Built when sent
    rather than held: a day's messages at once would hold every abstract twice over.

    Temperature 0 and a seed: a paper gets the same verdict on a retry. The output is bounded by what the answer's
    schema allows. OpenAI's reasoning models take neither temperature nor max_tokens: they get
    max_completion_tokens with room to think."""
    facts = facts or ServerFacts()
    answer = answer_model(job.profile)
    body: ChatRequest = {
        "model": config.model,
        "messages": [
            {"role": "system", "content": job.instructions},
            {"role": "user", "content": paper_message(job.paper)},
        ],
    }
    structured = facts.structured_output or config.structured_output
    if structured != "instructions":
        body["response_format"] = response_format(structured, answer)
    reasoning = is_reasoning_model(config.model)
    if not reasoning and "temperature" not in facts.refused:
        body["temperature"] = 0
    if "seed" not in facts.refused:
        body["seed"] = SEED
    limit = facts.token_limit or ("max_completion_tokens" if reasoning else "max_tokens")
    if limit not in facts.refused:
        body[limit] = answer_tokens(answer) + (REASONING_ALLOWANCE if reasoning else 0)
    return body


def adjusted_for(facts: ServerFacts, sent: ChatRequest, detail: str) -> ServerFacts | None:
    """The form to ask in after a 400 that names a parameter of `sent`: a weaker structured output (json_schema,
    then json_object, then the instructions alone), or the parameter left out (or its other name); None when
    the 400 names nothing that can be changed."""
    named = detail.lower()
    if "response_format" in sent and re.search(r"response_format|json_schema|json_object|structured", named):
        current = STRUCTURED_OUTPUTS.index(
            "json_object" if sent["response_format"]["type"] == "json_object" else "json_schema"
        )
        weaker = STRUCTURED_OUTPUTS[current + 1]
        return facts.model_copy(update={"structured_output": weaker})
    for parameter in ("temperature", "seed", "max_completion_tokens", "max_tokens"):
        if parameter in sent and parameter in named:
            if parameter in facts.refused:
                return facts  # another request learned it already
            if parameter.startswith("max_") and facts.token_limit is None:
                other = "max_tokens" if parameter == "max_completion_tokens" else "max_completion_tokens"
                return facts.model_copy(update={"token_limit": other})
            return facts.model_copy(update={"refused": [*facts.refused, parameter]})
    return None


def error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])[:300]
    return str(error.message)[:300]


def openai_client(
    config: LLMConfig, *, timeout: float | None = None, max_retries: int = 0, max_answer_bytes: int | None = None
) -> openai.AsyncOpenAI:
    """The OpenAI client for `config`'s server. Retries are the caller's (live classification keeps its own shared
    back-off, counted), and an answer larger than `max_answer_bytes` is cut off, whatever the server sends."""
    seconds = config.timeout_seconds if timeout is None else timeout
    return openai.AsyncOpenAI(
        api_key=config.api_key.get_secret_value(),
        base_url=config.base_url,
        timeout=seconds,
        max_retries=max_retries,
        http_client=None if max_answer_bytes is None else capped_answer_client(max_answer_bytes, timeout=seconds),
    )


def key_refused(status: int, detail: str, *, where: str = "", may: str = "use this model") -> LLMError:
    """The server refused the API key: the run stops at once, since every request would be refused alike."""
    said = f" (HTTP {status}{f' on {where}' if where else ''})" if status else ""
    return LLMError(
        f"the LLM server refused the API key{said}{f': {detail}' if detail else ''}",
        hint=f"check llm.api_key (usually OPENAI_API_KEY) and that the key may {may}",
    )
