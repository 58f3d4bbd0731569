"""Exact costs from TokenPricing: each token part at its own price, the fallbacks, rounding once, half up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelplane.pricing import Cost, TokenUsage, cost_micros, cost_of
from modelplane.v1 import registry_pb2


def pricing(
    input_price: int,
    output_price: int,
    *,
    cached: int | None = None,
    reasoning: int | None = None,
    currency: str = "USD",
) -> registry_pb2.TokenPricing:
    message = registry_pb2.TokenPricing(
        currency_code=currency,
        input_micros_per_million=input_price,
        output_micros_per_million=output_price,
    )
    if cached is not None:
        message.cached_input_micros_per_million = cached
    if reasoning is not None:
        message.reasoning_micros_per_million = reasoning
    return message


def test_plain_input_and_output() -> None:
    # 1000 input at 2.50 USD/M + 500 output at 10.00 USD/M = 0.0025 + 0.005 USD.
    usage = TokenUsage(input_tokens=1000, output_tokens=500)
    assert cost_micros(pricing(2_500_000, 10_000_000), usage) == 7_500


def test_cached_tokens_use_the_cached_price() -> None:
    # 600 uncached at 2.50/M = 1500, 400 cached at 1.25/M = 500, 100 output at 10/M = 1000.
    usage = TokenUsage(input_tokens=1000, output_tokens=100, cached_input_tokens=400)
    assert cost_micros(pricing(2_500_000, 10_000_000, cached=1_250_000), usage) == 3_000


def test_cached_tokens_fall_back_to_the_input_price() -> None:
    usage = TokenUsage(input_tokens=1000, output_tokens=100, cached_input_tokens=400)
    assert cost_micros(pricing(2_500_000, 10_000_000), usage) == 2_500 + 1_000


def test_cached_price_of_zero_is_a_price_not_a_fallback() -> None:
    usage = TokenUsage(input_tokens=1000, output_tokens=0, cached_input_tokens=1000)
    assert cost_micros(pricing(2_500_000, 10_000_000, cached=0), usage) == 0


def test_reasoning_tokens_use_the_reasoning_price() -> None:
    # 300 visible output at 10/M = 3000, 700 reasoning at 20/M = 14000.
    usage = TokenUsage(input_tokens=0, output_tokens=1000, reasoning_tokens=700)
    assert cost_micros(pricing(2_500_000, 10_000_000, reasoning=20_000_000), usage) == 17_000


def test_reasoning_tokens_fall_back_to_the_output_price() -> None:
    usage = TokenUsage(input_tokens=0, output_tokens=1000, reasoning_tokens=700)
    assert cost_micros(pricing(2_500_000, 10_000_000), usage) == 10_000


def test_all_four_parts_together() -> None:
    usage = TokenUsage(input_tokens=2000, output_tokens=900, cached_input_tokens=1500, reasoning_tokens=400)
    # 500*3 + 1500*1 + 500*15 + 400*60, in micros per million tokens of 1_000_000 each.
    expected = (500 * 3_000_000 + 1500 * 1_000_000 + 500 * 15_000_000 + 400 * 60_000_000) // 1_000_000
    assert (
        cost_micros(pricing(3_000_000, 15_000_000, cached=1_000_000, reasoning=60_000_000), usage) == expected
    )
    assert expected == 34_500


def test_rounds_once_over_the_sum_not_per_part() -> None:
    # Each part alone is 0.4 micro (rounding each down would give 0); together they are 0.8 -> 1.
    usage = TokenUsage(input_tokens=1, output_tokens=1)
    assert cost_micros(pricing(400_000, 400_000), usage) == 1


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (1, 0),  # 0.3 micro rounds down
        (5, 2),  # 1.5 micros: a half rounds up
        (15, 5),  # 4.5 micros: a half rounds up, not to even
        (7, 2),  # 2.1 micros
        (9, 3),  # 2.7 micros rounds up
    ],
)
def test_rounds_to_nearest_with_halves_up(tokens: int, expected: int) -> None:
    usage = TokenUsage(input_tokens=tokens, output_tokens=0)
    assert cost_micros(pricing(300_000, 0), usage) == expected


def test_zero_usage_and_zero_prices_cost_nothing() -> None:
    assert cost_micros(pricing(2_500_000, 10_000_000), TokenUsage()) == 0
    usage = TokenUsage(input_tokens=10**6, output_tokens=10**6, cached_input_tokens=5, reasoning_tokens=5)
    assert cost_micros(pricing(0, 0), usage) == 0


def test_large_numbers_stay_exact() -> None:
    # Far beyond float precision: 10^15 tokens at the int64 maximum price.
    big_price = 2**63 - 1
    usage = TokenUsage(input_tokens=10**15, output_tokens=10**15 + 1, reasoning_tokens=3)
    result = cost_micros(pricing(big_price, big_price, reasoning=big_price), usage)
    exact_numerator = (2 * 10**15 + 1) * big_price
    assert result == (exact_numerator + 500_000) // 1_000_000
    assert result != round(float(exact_numerator) / 1e6)


def test_negative_price_is_refused() -> None:
    with pytest.raises(ValueError, match="price must not be negative"):
        cost_micros(pricing(-1, 0), TokenUsage(input_tokens=1))


def test_cost_of_carries_the_currency_and_is_none_without_prices() -> None:
    usage = TokenUsage(input_tokens=1000, output_tokens=1000)
    cost = cost_of(pricing(1_000_000, 2_000_000, currency="EUR"), usage)
    assert cost == Cost(currency_code="EUR", micros=3_000)
    assert cost.to_money().micros == 3_000
    assert cost.to_money().currency_code == "EUR"
    assert cost_of(None, usage) is None
    # An empty TokenPricing (a version without prices) has no currency: no cost rather than a zero one.
    assert cost_of(registry_pb2.TokenPricing(), usage) is None


def test_inconsistent_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="cached_input_tokens"):
        TokenUsage(input_tokens=1, cached_input_tokens=2)
    with pytest.raises(ValueError, match="reasoning_tokens"):
        TokenUsage(output_tokens=1, reasoning_tokens=2)
    with pytest.raises(ValueError, match="negative"):
        TokenUsage(input_tokens=-1)


def test_the_server_prices_without_importing_a_consumer_package() -> None:
    # Prices is shared vocabulary (modelplane.pricing); the server never pulls in LLMClient's package.
    code = (
        "import sys, modelplane.server.app, modelplane.server.logs.service;"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['modelplane', 'inference'],"
        " ['modelplane', 'orchestration'], ['modelplane', 'storyteller'])))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
