"""The answer: the schema a verdict must follow, and a chat completion checked field by field before it is believed
(a live answer and a Batch API line alike). A server's 200 is untrusted until it validates."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import NamedTuple

from openai.types.chat.completion_create_params import ResponseFormat
from pydantic import BaseModel, NonNegativeInt, ValidationError

from digest.config import Profile
from digest.models import Failure, Judgement, JudgementWithTLDR, Paper, Usage, Verdict

Outcome = Verdict | Failure


class InvalidAnswer(Exception):
    """What came instead of a verdict (a proxy's HTML page, broken JSON, another shape): worth asking again."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def answer_model(profile: Profile) -> type[Judgement]:
    return JudgementWithTLDR if profile.tldr else Judgement


@functools.cache  # built once per kind of answer, not once per request
def response_format(mode: str, answer: type[Judgement] = Judgement) -> ResponseFormat:
    if mode == "json_object":
        return {"type": "json_object"}
    schema = answer.model_json_schema()
    schema["additionalProperties"] = False
    schema["required"] = list(schema["properties"])
    return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}


@functools.cache
def answer_tokens(answer: type[Judgement]) -> int:
    """The most completion tokens a valid answer can take, from its schema's bounds: every string at its longest,
    at two characters a token (JSON and short words; a reason in another script may take one a character), and
    room for the keys and punctuation. The cap stops a model that rambles; a valid answer always fits."""
    characters = 0
    for field in answer.model_json_schema()["properties"].values():
        items = field.get("items", field)
        characters += field.get("maxItems", 1) * (items.get("maxLength", 8) + 8)
    return characters // 2 + 64


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Usage(BaseModel):
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cached_tokens: NonNegativeInt = 0


class Answer(BaseModel):
    """What a chat completion must hold for a verdict: the server's 200 is untrusted until it validates."""

    choices: list[_Choice]
    usage: _Usage | None = None


def answer_of(body: bytes) -> Answer:
    """The answer, or a _Retry naming what came instead (a proxy's HTML page, broken JSON, another shape)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        start = body[:60].decode("utf-8", "replace")
        raise InvalidAnswer(f"the answer was not JSON (it starts with {start!r})") from None
    return answer_from(data)


def answer_from(data: object) -> Answer:
    if not isinstance(data, dict):
        raise InvalidAnswer(f"the answer was a JSON {type(data).__name__}, not a chat completion")
    try:
        answer = Answer.model_validate({"choices": data.get("choices")})
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidAnswer(
            f"the answer was not a chat completion ({'.'.join(map(str, first['loc']))}: {first['msg']})"
        ) from None
    usage = data.get("usage")
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        with contextlib.suppress(ValidationError):  # counts that make no sense are not counted, and cost nothing
            answer.usage = _Usage.model_validate({**usage, "cached_tokens": cached or 0})
    return answer


def outcome_of(answer: Answer, paper: Paper, profile: Profile) -> Outcome:
    """The verdict in a chat completion, the model's refusal, or a _Retry saying why the answer is no verdict."""
    if not answer.choices:
        raise InvalidAnswer("the answer had no choices")
    choice = answer.choices[0]
    if choice.message.refusal:
        return Failure(paper_key=paper.key, reason=f"the model refused: {choice.message.refusal[:200]}")
    if choice.finish_reason == "length":
        raise InvalidAnswer("the answer was cut off (finish_reason=length)")
    content = choice.message.content or ""
    if not content.lstrip().startswith("{") and "{" in content and "}" in content:
        # Without structured output, models wrap the object in prose or a Markdown fence: the object is the answer.
        content = content[content.index("{") : content.rindex("}") + 1]
    try:
        judgement = answer_model(profile).model_validate_json(content)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(map(str, first["loc"])) or "answer"
        raise InvalidAnswer(f"the answer was not a valid verdict ({where}: {first['msg'][:100]})") from None
    return Verdict(paper_key=paper.key, **judgement.model_dump())


class BatchAnswer(NamedTuple):
    outcome: Outcome | None  # None: no verdict in it, so the request is sent again live
    problem: str
    usage: Usage


def batch_answer(body: object, paper: Paper, profile: Profile) -> BatchAnswer:
    """A Batch API response body, validated exactly as a live answer is; its tokens count at batch prices."""
    try:
        answer = answer_from(body)
    except InvalidAnswer as invalid:
        return BatchAnswer(None, invalid.problem, Usage())
    usage = Usage(batch_requests=1)
    if answer.usage is not None:
        usage.batch_prompt_tokens = answer.usage.prompt_tokens
        usage.batch_cached_tokens = answer.usage.cached_tokens
        usage.batch_completion_tokens = answer.usage.completion_tokens
    try:
        return BatchAnswer(outcome_of(answer, paper, profile), "", usage)
    except InvalidAnswer as invalid:
        return BatchAnswer(None, invalid.problem, usage)
