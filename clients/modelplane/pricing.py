"""Pricing shared by the server and its clients: token counts, a version's prices, and the exact cost of
one call in integer micro-units. LLMClient prices every call with it, and the log collector prices every
inference event that arrives without a cost, so a client-side and a server-side price of one call never
differ. Part of the base install (no server dependency).

Prices are micro-units per million tokens. A call's token counts split into four parts, each priced
at its own rate:

- input tokens not served from the prompt cache (input_tokens - cached_input_tokens) at the input price;
- cached input tokens at the cached-input price, or at the input price when that is unset;
- output tokens that are not reasoning (output_tokens - reasoning_tokens) at the output price;
- reasoning tokens at the reasoning price, or at the output price when that is unset.

The four products are summed as integers and divided by one million once, rounding to the nearest
micro-unit with halves rounded up, so the cost of a call is never off by more than half a micro-unit
and no float is ever involved.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.v1 import common_pb2, registry_pb2


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one call, as providers bill them.

    `input_tokens` includes `cached_input_tokens` and `output_tokens` includes `reasoning_tokens`
    (OpenAI's usage block counts them the same way), so neither part may exceed its whole.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens must not exceed input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens must not exceed output_tokens")


TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True)
class Cost:
    """An amount of money in integer micro-units (1.25 USD is 1_250_000 micros)."""

    currency_code: str
    micros: int

    def to_money(self) -> common_pb2.Money:
        """The amount as the contract's Money message."""
        return common_pb2.Money(currency_code=self.currency_code, micros=self.micros)


@dataclass(frozen=True)
class Prices:
    """A version's prices per million tokens in micro-units of `currency_code`, as plain values.

    None: cached input tokens cost the input price, reasoning tokens the output price.
    """

    currency_code: str
    input: int
    output: int
    cached_input: int | None = None
    reasoning: int | None = None

    @classmethod
    def of(cls, pricing: registry_pb2.TokenPricing) -> Prices:
        return cls(
            currency_code=pricing.currency_code,
            input=pricing.input_micros_per_million,
            output=pricing.output_micros_per_million,
            cached_input=pricing.cached_input_micros_per_million
            if pricing.HasField("cached_input_micros_per_million")
            else None,
            reasoning=pricing.reasoning_micros_per_million
            if pricing.HasField("reasoning_micros_per_million")
            else None,
        )


def cost_parts(prices: Prices, usage: TokenUsage) -> dict[str, int]:
    """The four parts of a call's cost before the division by a million, each named by the TokenUsage
    field whose tokens it prices."""
    cached_price = prices.input if prices.cached_input is None else prices.cached_input
    reasoning_price = prices.output if prices.reasoning is None else prices.reasoning
    return {
        "input_tokens": (usage.input_tokens - usage.cached_input_tokens) * prices.input,
        "cached_input_tokens": usage.cached_input_tokens * cached_price,
        "output_tokens": (usage.output_tokens - usage.reasoning_tokens) * prices.output,
        "reasoning_tokens": usage.reasoning_tokens * reasoning_price,
    }


def cost_micros(pricing: registry_pb2.TokenPricing | Prices, usage: TokenUsage) -> int:
    """The cost of `usage` under `pricing` in micro-units, rounded once to the nearest (half up)."""
    prices = pricing if isinstance(pricing, Prices) else Prices.of(pricing)
    for name, price in (
        ("input", prices.input),
        ("output", prices.output),
        ("cached_input", prices.cached_input),
        ("reasoning", prices.reasoning),
    ):
        if price is not None and price < 0:
            raise ValueError(f"{name} price must not be negative, got {price}")
    # Python integers do not overflow, so the sum is exact however large the counts and prices are.
    scaled = sum(cost_parts(prices, usage).values())
    return (scaled + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT


def cost_of(pricing: registry_pb2.TokenPricing | None, usage: TokenUsage) -> Cost | None:
    """The cost of `usage` with its currency, or None when no prices are known."""
    if pricing is None or not pricing.currency_code:
        return None
    return Cost(currency_code=pricing.currency_code, micros=cost_micros(pricing, usage))
