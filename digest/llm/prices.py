"""What a model costs and how it is asked: one table of prices per model family, and the traits that change a
request (reasoning models think before they answer and take other parameters)."""

from __future__ import annotations

import re

from digest.config import LLMConfig, Prices, TokenPrices
from digest.llm.facts import is_local
from digest.models import Usage

REASONING_ALLOWANCE = 8192  # completion tokens a reasoning model may think in before it answers


# OpenAI's reasoning models refuse `temperature` and `max_tokens`; "openai/o3" through a gateway is one too.
REASONING_MODEL = re.compile(r"(^|/)(o\d|gpt-5)(?!-chat)", re.IGNORECASE)


# US dollars per million tokens: input, cached input, output. config's llm.price overrides.
PRICES: dict[str, Prices] = {
    "gpt-4o-mini": Prices(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4o": Prices(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4.1": Prices(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": Prices(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": Prices(input=0.10, cached_input=0.025, output=0.40),
    "gpt-5": Prices(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5-mini": Prices(input=0.25, cached_input=0.025, output=2.00),
    "gpt-5-nano": Prices(input=0.05, cached_input=0.005, output=0.40),
}


def price_of(config: LLMConfig) -> Prices | None:
    if config.price is not None:
        return config.price
    # Dated snapshots ("gpt-4o-mini-2024-07-18") cost what their family costs. A priced model on a local address
    # is a gateway on the reader's machine (LiteLLM's proxy, say) in front of the paid API: still priced.
    family = max((name for name in PRICES if config.model.startswith(name)), key=len, default=None)
    if family is not None:
        return PRICES[family]
    if is_local(config.base_url):
        return Prices(input=0, output=0)  # another model on the reader's own hardware: nothing is charged
    return None


def charges_nothing(config: LLMConfig) -> bool:
    """A local server with no price set, or a price of 0: its runs are "local, no charge", not "cost unknown"."""
    price = price_of(config)
    return price is not None and price.input == 0 and price.output == 0


def estimate_cost(usage: Usage, config: LLMConfig) -> float | None:
    """What the run's tokens cost: live ones at live prices, those answered by the Batch API at batch prices."""
    price = price_of(config)
    if price is None:
        return 0.0 if usage.tokens == 0 else None  # nothing asked (a failed fetch, all cached) costs nothing
    live = _tokens_cost(usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, price)
    batch = (usage.batch_prompt_tokens, usage.batch_cached_tokens, usage.batch_completion_tokens)
    return live + _tokens_cost(*batch, price.for_batch())


def live_cost(usage: Usage, config: LLMConfig) -> float | None:
    """What the same tokens would have cost with every request sent live."""
    price = price_of(config)
    if price is None:
        return None
    return _tokens_cost(
        usage.prompt_tokens + usage.batch_prompt_tokens,
        usage.cached_tokens + usage.batch_cached_tokens,
        usage.completion_tokens + usage.batch_completion_tokens,
        price,
    )


def _tokens_cost(prompt: int, cached: int, completion: int, price: TokenPrices) -> float:
    cached_price = price.input if price.cached_input is None else price.cached_input
    return ((prompt - cached) * price.input + cached * cached_price + completion * price.output) / 1e6


def is_reasoning_model(model: str) -> bool:
    return REASONING_MODEL.search(model) is not None
