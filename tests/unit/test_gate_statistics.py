"""The rollout gates' statistics: exact tails, and by simulation their false-alarm rate and their power.

Each simulation draws many runs from a seeded RNG. With the canary exactly at its bound (equal to the
stable slot, or at the absolute bound), the share of runs that fail a gate must be at most alpha, plus a
tolerance of three binomial standard deviations of that share over the runs (sqrt(alpha (1 - alpha) /
runs)), so the check is about the test, not about the luck of the draw. Power is checked at stated
effect sizes.
"""

from __future__ import annotations

import math
import random

import pytest

from modelplane.server.deployments import gate_statistics as stats


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A Binomial(n, p) draw, by geometric jumps between successes (fast for the small rates here)."""
    if p <= 0:
        return 0
    log_q = math.log1p(-p)
    k = position = 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return k
        k += 1


def _tolerance(alpha: float, runs: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def _percentile_disc(values: list[float], q: float) -> float:
    """Postgres's percentile_disc: the smallest value whose cumulative share reaches q."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_binomial_tail_matches_the_sum_of_the_pmf() -> None:
    for n, p in [(10, 0.3), (50, 0.02), (200, 0.5), (1000, 0.001)]:
        pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
        for k in {0, 1, 2, n // 10, n // 2, n - 1, n, n + 1}:
            assert stats.binomial_sf(k, n, p) == pytest.approx(sum(pmf[k:]), rel=1e-9, abs=1e-15)


def test_normal_tail() -> None:
    assert stats.normal_sf(0.0) == pytest.approx(0.5)
    assert stats.normal_sf(1.6448536269514722) == pytest.approx(0.05, rel=1e-9)
    assert stats.normal_sf(-2.3263478740408408) == pytest.approx(0.99, rel=1e-9)


def test_degenerate_inputs_never_fail_a_gate() -> None:
    assert stats.rate_above_value(0, 0, 0.02) == 1.0
    assert stats.rate_above_stable(0, 0, 5, 100, 1.0, 0.0) == 1.0
    assert stats.mean_above_value(0, 0.0, 0.0, 10.0) == 1.0
    # Every value alike: beyond the bound is certain, within it too.
    assert stats.mean_above_value(200, 200 * 12.0, 200 * 144.0, 10.0) == 0.0
    assert stats.mean_above_value(200, 200 * 8.0, 200 * 64.0, 10.0) == 1.0


@pytest.mark.parametrize(("rate", "n"), [(0.02, 2000), (0.005, 500), (0.1, 200), (0.001, 1000), (0.3, 100)])
def test_rate_against_stable_false_alarms_at_most_alpha(rate: float, n: int) -> None:
    rng = random.Random(1000 + n)
    alpha, runs = 0.01, 2000
    alarms = sum(
        stats.rate_above_stable(_binomial(rng, n, rate), n, _binomial(rng, n, rate), n, 1.0, 0.0) < alpha
        for _ in range(runs)
    )
    assert alarms / runs <= _tolerance(alpha, runs)


def test_rate_against_stable_with_a_ratio_false_alarms_at_most_alpha() -> None:
    # The canary exactly at 1.5 x stable + 0.005.
    rng = random.Random(7)
    alpha, runs, n = 0.05, 2000, 2000
    alarms = sum(
        stats.rate_above_stable(_binomial(rng, n, 0.035), n, _binomial(rng, n, 0.02), n, 1.5, 0.005) < alpha
        for _ in range(runs)
    )
    assert alarms / runs <= _tolerance(alpha, runs)


@pytest.mark.parametrize(("bound", "n"), [(0.02, 2000), (0.001, 300), (0.2, 100)])
def test_rate_against_a_value_false_alarms_at_most_alpha(bound: float, n: int) -> None:
    rng = random.Random(31)
    alpha, runs = 0.01, 2000
    alarms = sum(stats.rate_above_value(_binomial(rng, n, bound), n, bound) < alpha for _ in range(runs))
    assert alarms / runs <= _tolerance(alpha, runs)


def test_power_canary_error_rate_twice_stable() -> None:
    """Stated effect sizes: at n = 2000 a side, a canary at 2 x stable is found in at least 90% of runs,
    with stable at 2% and alpha 0.05, and with stable at 3% and the default alpha 0.01."""
    rng = random.Random(2)
    runs, n = 1000, 2000
    for stable, alpha in [(0.02, 0.05), (0.03, 0.01)]:
        found = sum(
            stats.rate_above_stable(_binomial(rng, n, 2 * stable), n, _binomial(rng, n, stable), n, 1.0, 0.0)
            < alpha
            for _ in range(runs)
        )
        assert found / runs >= 0.90, (stable, alpha, found)


def test_power_error_rate_three_times_stable_at_a_few_hundred_events() -> None:
    rng = random.Random(3)
    runs, n = 1000, 500
    found = sum(
        stats.rate_above_stable(_binomial(rng, n, 0.15), n, _binomial(rng, n, 0.05), n, 1.0, 0.0) < 0.01
        for _ in range(runs)
    )
    assert found / runs >= 0.90


def _latencies(rng: random.Random, n: int, scale: float) -> list[float]:
    return [scale * rng.lognormvariate(5.0, 0.6) for _ in range(n)]


def _quantile_p_value(canary: list[float], stable: list[float], q: float, ratio: float) -> float:
    """As the SQL computes it: the bar from the stable quantile, counts above it, then the test."""
    stable_q = _percentile_disc(stable, q)
    bar = ratio * stable_q
    canary_over = sum(v > bar for v in canary)
    stable_over = sum(v > stable_q for v in stable)
    return stats.quantile_above_stable(canary_over, len(canary), stable_over, len(stable))


def test_quantile_against_stable_false_alarms_at_most_alpha() -> None:
    rng = random.Random(5)
    alpha, runs, n = 0.01, 600, 800
    alarms = sum(
        _quantile_p_value(_latencies(rng, n, 1.0), _latencies(rng, n, 1.0), 0.95, 1.0) < alpha
        for _ in range(runs)
    )
    assert alarms / runs <= _tolerance(alpha, runs)


def test_quantile_against_stable_finds_a_slower_canary() -> None:
    # Canary 1.6 x slower everywhere, bound: p95 <= 1.2 x stable p95.
    rng = random.Random(6)
    runs, n = 300, 1000
    found = sum(
        _quantile_p_value(_latencies(rng, n, 1.6), _latencies(rng, n, 1.0), 0.95, 1.2) < 0.01
        for _ in range(runs)
    )
    assert found / runs >= 0.90


def test_quantile_against_a_value_false_alarms_at_most_alpha() -> None:
    # The bound exactly at the true p99: the count above it is Binomial(n, 0.01).
    rng = random.Random(8)
    alpha, runs, n = 0.01, 2000, 1000
    alarms = sum(stats.quantile_above_value(_binomial(rng, n, 0.01), n, 0.99) < alpha for _ in range(runs))
    assert alarms / runs <= _tolerance(alpha, runs)


def _sums(values: list[float]) -> tuple[int, float, float]:
    return len(values), sum(values), sum(v * v for v in values)


def test_mean_against_stable_false_alarms_at_most_alpha() -> None:
    # Per-request costs: skewed (exponential), equal on both sides.
    rng = random.Random(9)
    alpha, runs, n = 0.01, 1000, 300
    alarms = 0
    for _ in range(runs):
        canary = [rng.expovariate(1 / 400.0) for _ in range(n)]
        stable = [rng.expovariate(1 / 400.0) for _ in range(n)]
        alarms += stats.mean_above_stable(_sums(canary), _sums(stable), 1.0, 0.0) < alpha
    assert alarms / runs <= _tolerance(alpha, runs)


def test_mean_against_stable_finds_a_costlier_canary() -> None:
    rng = random.Random(10)
    runs, n = 300, 1000
    found = 0
    for _ in range(runs):
        canary = [rng.expovariate(1 / 600.0) for _ in range(n)]
        stable = [rng.expovariate(1 / 400.0) for _ in range(n)]
        found += stats.mean_above_stable(_sums(canary), _sums(stable), 1.2, 0.0) < 0.01
    assert found / runs >= 0.90


def test_mean_against_a_value_false_alarms_at_most_alpha() -> None:
    rng = random.Random(11)
    alpha, runs, n = 0.01, 1000, 300
    alarms = 0
    for _ in range(runs):
        values = [rng.expovariate(1 / 500.0) for _ in range(n)]
        alarms += stats.mean_above_value(*_sums(values), 500.0) < alpha
    assert alarms / runs <= _tolerance(alpha, runs)
