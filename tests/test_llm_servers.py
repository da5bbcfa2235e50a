"""The servers people really run, beside OpenAI: a local model's compute-bound queue, Ollama's 503, DeepSeek's
JSON mode only, reasoning models' parameters, Groq's and Azure's headers; each through the real openai client
against a loopback server that behaves as that server does (see ../shared/notes/llm-servers.md)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from digest.config import LLMConfig, Profile
from digest.errors import LLMError
from digest.llm.answers import Outcome, answer_tokens
from digest.llm.live import Classifier
from digest.llm.prices import REASONING_ALLOWANCE
from digest.llm.prompt import system_prompt
from digest.llm.requests import Job
from digest.models import Judgement, Paper, Verdict
from digest.net.pacing import RateLimiter, Slot
from digest.net.rate_headers import minute_counters
from digest.sources.arxiv_parse import parse_feed
from tests.helpers import CL_FEED, FakeClock, base_config, run_cli
from tests.servers import html_titles

PROFILE = Profile(name="me", interests="Language models and how to evaluate them.")
PAPERS = parse_feed(CL_FEED.read_bytes(), url="t", categories=["cs.CL"], announce_types=["new", "cross"]).papers


def _config(url: str, **overrides: Any) -> LLMConfig:
    return LLMConfig.model_validate(
        {"base_url": url, "api_key": "test-key", "timeout_seconds": 5, "requests_per_minute": 30_000, **overrides}
    )


def _local_config(url: str, **overrides: Any) -> LLMConfig:
    """A local model as its reader sets it up: a model name no price table knows, and no rate limits set."""
    return LLMConfig.model_validate(
        {"base_url": url, "api_key": "test-key", "timeout_seconds": 5, "model": "smollm2", **overrides}
    )


def _classify(config: LLMConfig, papers: list[Paper]) -> tuple[dict[str, Outcome], Classifier]:
    outcomes: dict[str, Outcome] = {}
    classifier = Classifier(config)

    async def main() -> None:
        try:
            jobs = [Job(PROFILE, p, system_prompt(PROFILE)) for p in papers]
            await classifier.classify(jobs, lambda job, o: outcomes.__setitem__(job.paper.key, o))
        finally:
            await classifier.close()

    asyncio.run(main())
    return outcomes, classifier


def _all_verdicts(outcomes: dict[str, Outcome], papers: list[Paper]) -> bool:
    return set(outcomes) == {p.key for p in papers} and all(isinstance(o, Verdict) for o in outcomes.values())


# Requests in flight, found by measuring


def test_the_wait_for_the_rate_limiter_is_not_taken_for_a_slow_server(fake_llm) -> None:
    url, app = fake_llm
    app.latency, app.limit_headers = 0.05, "none"  # fast, and no counters: the limit is measured
    papers = PAPERS[:30]
    # Paced at 10 a second with 8 in flight: each request waits most of a second for its slot, then takes 0.05 s.
    outcomes, classifier = _classify(_config(url, max_concurrency=8, requests_per_minute=605), papers)
    assert _all_verdicts(outcomes, papers)
    assert classifier.capacity.limit == 8


def test_a_cpu_bound_local_server_is_never_queued_into_timeouts(fake_llm) -> None:
    url, app = fake_llm
    # Four slots on one core: at most 20 answers a second, however many are sent. At the 64 in flight the
    # configuration allows, each would wait 3.2 s for its answer, past the 2 s timeout.
    app.slots, app.cores, app.service_seconds, app.limit_headers = 4, 1, 0.05, "none"
    papers = PAPERS[:120]
    outcomes, classifier = _classify(_local_config(url, max_concurrency=64, timeout_seconds=2), papers)
    assert _all_verdicts(outcomes, papers)
    assert classifier.usage.timed_out == 0
    assert app.max_in_flight <= 16  # a growth that ends within a service time of the first queued request
    # Settled near the four slots, far from 64: most requests went at 8 or fewer at once. Where the limit stands at
    # the very end moves with the machine's noise (9 was seen on a busy CI machine), so it is held to 16 only.
    assert classifier.capacity.sent_at.most_common(1)[0][0] <= 8
    assert classifier.capacity.limit <= 16
    assert "found by measuring the server" in (classifier.capacity.describe() or "")


# Each server's own signals


def test_ollamas_busy_503_is_back_pressure_not_a_failed_attempt(fake_llm) -> None:
    url, app = fake_llm
    # Two requests run at once; two more may wait; beyond that, 503 at once.
    app.slots, app.cores, app.service_seconds, app.max_pending, app.limit_headers = 2, 2, 0.05, 4, "none"
    papers = PAPERS[:60]
    # A local model: no pacing, four in flight to start with; the 503s start at five.
    outcomes, classifier = _classify(
        _local_config(url, model="qwen2.5:0.5b", max_concurrency=16, max_attempts=2), papers
    )
    assert _all_verdicts(outcomes, papers)  # two attempts each would not do if a 503 were a failed attempt
    assert classifier.usage.busy > 0
    assert classifier.capacity.sent_at.most_common(1)[0][0] <= 4


def test_after_a_busy_spell_the_limit_grows_again_once_the_server_answers_fast(fake_llm) -> None:
    """Ollama busy for two minutes left a run at one request in flight, though it answered in 0.02 s again."""
    url, app = fake_llm
    app.latency, app.limit_headers = 0.1, "none"
    app.script = ["busy"] * 12  # the first requests all 503 "server busy": the limit halves, down to one
    papers = PAPERS[:20]
    outcomes, classifier = _classify(_local_config(url, model="qwen2.5:0.5b", max_concurrency=16), papers)
    assert _all_verdicts(outcomes, papers) and classifier.usage.busy == 12
    capacity = classifier.capacity
    assert capacity.sent_at[1] >= 4  # a round of answers at one in flight: as fast as the fastest
    # and the growth resumed: more in flight than the four it started with (before the 503s, none went beyond)
    assert max(capacity.sent_at) > 4


def test_a_server_without_json_schema_is_asked_in_json_mode_and_that_is_remembered(fake_llm) -> None:
    url, app = fake_llm
    app.structured = {"json_object"}  # DeepSeek: text and json_object only
    papers = PAPERS[:30]
    outcomes, classifier = _classify(_config(url, max_concurrency=4), papers)
    assert _all_verdicts(outcomes, papers)
    assert classifier.facts.structured_output == "json_object"
    refused = sum(1 for body in app.bodies if body["response_format"]["type"] == "json_schema")
    assert refused <= 4  # only the first requests in flight, never one per paper
    assert app.statuses.get(400, 0) == refused


def test_a_server_without_structured_output_gets_the_instructions_alone_and_fenced_answers_count(fake_llm) -> None:
    url, app = fake_llm
    app.structured, app.fenced = set(), True
    papers = PAPERS[:10]
    outcomes, classifier = _classify(_config(url, max_concurrency=1), papers)
    assert _all_verdicts(outcomes, papers)
    assert classifier.facts.structured_output == "instructions"
    assert "response_format" not in app.bodies[-1]


def test_requests_are_reproducible_and_bounded_by_the_answers_schema(fake_llm) -> None:
    url, app = fake_llm
    _classify(_config(url), PAPERS[:3])
    body = app.bodies[0]
    assert body["temperature"] == 0 and isinstance(body["seed"], int)
    assert body["max_tokens"] == answer_tokens(Judgement)
    # The bound leaves room for the longest valid answer the schema allows.
    longest = {"reason": "r" * 400, "score": 10, "matched_interests": ["i" * 120] * 8}
    assert len(json.dumps(longest)) / 4 < body["max_tokens"]
    assert "relevant" not in body["response_format"]["json_schema"]["schema"]["properties"]


def test_reasoning_models_get_no_temperature_and_max_completion_tokens(fake_llm) -> None:
    url, app = fake_llm
    app.models = ["gpt-5-mini"]
    # OpenAI's own words to a reasoning model's request with these parameters.
    app.refuse_params = {
        "temperature": "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) "
        "value is supported.",
        "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
        "'max_completion_tokens' instead.",
    }
    papers = PAPERS[:5]
    outcomes, _ = _classify(_config(url, model="gpt-5-mini"), papers)
    assert _all_verdicts(outcomes, papers)
    assert app.statuses.get(400, 0) == 0  # known by name: asked right the first time
    assert all("temperature" not in b and "max_tokens" not in b for b in app.bodies)
    assert app.bodies[0]["max_completion_tokens"] == answer_tokens(Judgement) + REASONING_ALLOWANCE


def test_a_parameter_the_server_refuses_is_left_out_from_then_on(fake_llm) -> None:
    url, app = fake_llm
    app.refuse_params = {"seed": "Unrecognized request argument supplied: seed"}
    papers = PAPERS[:12]
    outcomes, classifier = _classify(_config(url, max_concurrency=2), papers)
    assert _all_verdicts(outcomes, papers)
    assert classifier.facts.refused == ["seed"]
    assert app.statuses.get(400, 0) <= 2 and "seed" not in app.bodies[-1]


def test_groqs_requests_counter_counts_a_day_so_its_429s_are_weighed_as_unreported_limits() -> None:
    groq = {  # as Groq documents them: requests per day, tokens per minute
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-limit-tokens": "18000",
        "x-ratelimit-remaining-tokens": "17997",
        "x-ratelimit-reset-tokens": "7.66s",
        "retry-after": "2",
    }
    minute = minute_counters(groq, "https://api.groq.com/openai/v1")
    assert "x-ratelimit-limit-requests" not in minute and minute["x-ratelimit-limit-tokens"] == "18000"
    assert minute_counters(groq, "https://api.openai.com/v1") == groq
    clock = FakeClock(advance=False)
    limiter = RateLimiter(600, 10**6, burst_seconds=0, opening_seconds=0, clock=clock, sleep=clock.sleep)
    for n in range(30):  # answers at the configured rate, then the per-minute 429s Groq answers
        clock.now = n * 0.1
        limiter.succeeded(minute, Slot(clock.now - 1, 10.0))
    clock.now = 10.0
    for n in range(3):
        limiter.rate_limited(2.0, minute, Slot(9.0 + n * 0.1, 10.0))
    assert limiter.rate < 600 / 60.5  # slowed down: a 429 that no reported counter explains is not transient


def test_azures_placeholder_counters_mean_unknown_not_spent() -> None:
    azure = {
        "x-ratelimit-limit-requests": "0",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "60s",
    }
    azure |= {"x-ratelimit-remaining-tokens": "-1"}
    minute = minute_counters(azure, "https://example.openai.azure.com/openai/v1")
    assert not any(name.startswith("x-ratelimit") for name in minute)
    clock = FakeClock(advance=False)
    limiter = RateLimiter(600, 10**6, burst_seconds=0, opening_seconds=0, clock=clock, sleep=clock.sleep)
    limiter.observe(minute)
    asyncio.run(limiter.acquire(10))
    assert clock.slept == []  # no pause for a window said to be spent by a placeholder


def test_a_server_that_answers_almost_nothing_in_time_stops_the_run_with_the_fix(fake_llm) -> None:
    url, app = fake_llm
    app.random_failures = {"hang": 1.0}
    with pytest.raises(LLMError, match=r"answered 0 of the last \d+ requests") as raised:
        _classify(_config(url, timeout_seconds=0.2, stall_seconds=1.5, max_attempts=20), PAPERS[:20])
    assert "llm.max_concurrency" in str(raised.value.hint) and "timeout_seconds" in str(raised.value.hint)


# The whole run, as a user with a local model sees it


def _local(tmp_path: Path, feed_url: str, llm_url: str, **llm: Any) -> dict[str, Any]:
    config = base_config(tmp_path, feed_url, llm_url)
    config["llm"] = {"model": "smollm2", "base_url": llm_url, **llm}
    return config


def test_a_local_server_is_local_no_charge_and_its_speed_is_remembered(tmp_path, feed_server, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, app = fake_llm
    app.models, app.limit_headers = ["smollm2"], "none"
    path = write_config(_local(tmp_path, feed_url, llm_url))
    first = run_cli("run", "--dry-run", "--config", str(path))
    assert first.returncode == 0, first.stderr
    assert "local, no charge" in first.stdout and "as a batch" not in first.stdout
    assert "cost unknown" not in first.stdout and "rate limits" not in first.stdout
    assert "the first run measures this server" in first.stdout
    run = run_cli("run", "--config", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "local, no charge" in run.stdout and "in flight" in run.stdout and "rate-limited" not in run.stdout
    (tmp_path / "state.sqlite3").rename(tmp_path / "kept.sqlite3")
    kept = _local(tmp_path, feed_url, llm_url)
    kept["state"] = "kept.sqlite3"
    # The state has no pending papers now: a fresh feed state shows the day's figure from the measured speed.
    again = run_cli("run", "--dry-run", "--config", str(write_config(kept)))
    assert "answers a second this server gave in the last run" in again.stdout, again.stdout
    check = run_cli("check", "--config", str(path))
    assert "learned in earlier runs: structured output with a JSON schema" in check.stdout, check.stdout


def test_check_takes_llama_servers_one_model_under_its_path(tmp_path, feed_server, fake_llm, write_config):
    feed_url, _ = feed_server
    llm_url, app = fake_llm
    app.models, app.owned_by = ["/models/SmolLM2-135M-Instruct.Q4_1.gguf"], "llamacpp"
    check = run_cli("check", "--config", str(write_config(_local(tmp_path, feed_url, llm_url))))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "answers any model name" in check.stdout and "--alias smollm2" in check.stdout


def test_a_day_that_outlasts_max_run_minutes_delivers_what_was_judged_and_carries_the_rest(loopback_run):
    app, inbox, config = loopback_run.llm, loopback_run.inbox, loopback_run.config
    app.latency, app.limit_headers = 0.5, "none"
    config["max_run_minutes"] = 0.05  # 3 s
    config["llm"]["max_concurrency"] = 2
    slow = run_cli("run", "--config", str(loopback_run.write()))
    assert slow.returncode == 0, slow.stdout + slow.stderr
    assert "still to judge come in the next digest" in slow.stdout
    assert len(inbox.messages) == 1
    first = inbox.messages[0][2]
    assert "still to be read by the model come in your next digest" in first.get_body(("plain",)).get_content()
    judged_first = set(app.judged)
    assert 0 < len(judged_first) < 137

    # The next day: everything left from the first, and the new day's papers, in the next digest; none twice.
    config["arxiv"]["categories"] = ["cs.CL", "cs.AI"]  # the fixture of 2026-07-01
    app.latency = 0.0
    config["max_run_minutes"], config["llm"]["max_concurrency"] = 120, 16
    fast = run_cli("run", "--config", str(loopback_run.write()))
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert len(inbox.messages) == 2
    in_first, in_second = (set(html_titles(m, listed=True)) for _, _, m in inbox.messages)
    assert not in_first & in_second
    left_over = {p.title for p in PAPERS} - judged_first
    relevant_left = {t for t in left_over if app.judged.get(t, (False, 0))[1] >= 6}
    assert relevant_left and relevant_left <= in_second


def test_an_answer_in_prose_is_unwrapped_and_a_broken_one_is_retried_not_a_crash() -> None:
    from digest.llm.answers import Answer, InvalidAnswer, outcome_of

    def answer(content: str) -> Answer:
        return Answer.model_validate({"choices": [{"message": {"content": content}, "finish_reason": "stop"}]})

    verdict = outcome_of(
        answer('Sure:\n```json\n{"reason": "r", "score": 7, "matched_interests": []}\n```'), PAPERS[0], PROFILE
    )
    assert isinstance(verdict, Verdict) and verdict.score == 7
    with pytest.raises(InvalidAnswer, match="not a valid verdict"):
        outcome_of(answer("Sure, here it is: {"), PAPERS[0], PROFILE)


def test_an_accounts_default_limits_do_not_pace_a_free_server_and_the_readers_own_limits_pace_any() -> None:
    local = {"base_url": "http://127.0.0.1:8080/v1", "model": "smollm2", "api_key": "k"}
    free = Classifier(LLMConfig.model_validate(local))
    assert free._limiter.rate == math.inf and free.capacity.limit == 4  # unpaced; four in flight to start with
    # A gateway or a shared GPU behind a free address: the rate the reader set is honoured, whatever the price.
    gateway = Classifier(LLMConfig.model_validate({**local, "requests_per_minute": 600}))
    assert gateway._limiter.rate == pytest.approx(600 / 60.5) and gateway.capacity.limit == 4
    cloud = Classifier(LLMConfig.model_validate({"api_key": "k"}))  # gpt-4o-mini at OpenAI, 500 a minute
    assert cloud._limiter.rate == pytest.approx(500 / 60.5) and cloud.capacity.limit == 4
    for classifier in (free, gateway, cloud):
        asyncio.run(classifier.close())


@pytest.mark.parametrize("headers", ["none", "both"])
def test_a_free_server_told_no_rate_learns_its_limit_from_its_answers(fake_llm, headers: str) -> None:
    """LiteLLM on localhost in front of a cloud API, under an alias no price table knows: free, and rate-limited.
    What its headers say, or else its 429s, is learned as from any server's (it used to be a storm)."""
    url, app = fake_llm
    app.limit_headers, app.requests_per_minute, app.latency = headers, 3000, 0.02
    outcomes, _ = _classify(_local_config(url, model="claude-via-gateway", max_concurrency=16), PAPERS)
    assert _all_verdicts(outcomes, PAPERS)
    assert app.over_limit < 0.25 * app.requests  # as when told the limit (test_classify), not one in two
