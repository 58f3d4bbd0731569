"""The statistics of rollout analysis gates, pure: one-sided tests that the canary is beyond its bound.

Every function returns a one-sided p-value: the chance, were the canary exactly at its bound, of figures at
least this far beyond it. A gate fails when the p-value is below its alpha, so alpha is the false-alarm
rate of one evaluation of one gate. No I/O and no randomness here; tests/unit/test_gate_statistics.py
simulates the false-alarm rate and the power of each test.

- Rate against a fixed bound b (error rate <= 0.02): exact binomial test, P(X >= hits | n, b). Exact, so
  it holds at small counts and small rates, where the normal approximation gives too many false alarms.
- Rate against the stable slot (canary <= ratio x stable + margin): the Agresti-Caffo adjusted Wald test
  of p_c - ratio * p_s - margin (one success and one failure added to each side). It keeps its level
  near the nominal one down to a handful of events, where the plain Wald test does not, and unlike
  Fisher's exact test it takes a ratio and a margin.
- A latency quantile q against a fixed bound b (p95 <= 800 ms): the share of latencies above b is
  binomial, and q's quantile is at most b exactly when that share is at most 1 - q; so the exact
  binomial test of the count above b. Distribution-free: no shape is assumed for latencies.
- A latency quantile against the stable slot (canary p95 <= 1.2 x stable p95): the bar is
  ratio x the stable quantile + margin; the share of canary latencies above the bar is tested against the
  share of stable latencies above the stable quantile itself (at most 1 - q), by the Agresti-Caffo test.
  Counting the stable side as binomial overstates its variance (its share sits at 1 - q by construction),
  so the test errs towards passing, never towards false alarms.
- Means (cost and tokens per request) against a fixed bound or the stable slot: a one-sided z-test on the
  means (Welch's statistic with the normal distribution). Budgets are about means, which the rank tests
  of Kayenta's judge (Mann-Whitney) do not measure; with the minimum sample of 100 per side the central
  limit theorem holds well for per-request costs, which are bounded by the model's output limit.
"""

from __future__ import annotations

import math

# Below this the tail sum stops: the terms left add less than the double's precision can hold.
_NEGLIGIBLE = 1e-18


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _log_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (summed in the direction of the shorter tail)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    mean = n * p
    if k > mean:
        total = 0.0
        for j in range(k, n + 1):
            term = math.exp(_log_pmf(j, n, p))
            total += term
            if term < _NEGLIGIBLE * total:
                break
        return min(1.0, total)
    lower = 0.0
    for j in range(k - 1, -1, -1):
        term = math.exp(_log_pmf(j, n, p))
        lower += term
        if term < _NEGLIGIBLE * lower:
            break
    return max(0.0, 1.0 - lower)


def rate_above_value(hits: int, n: int, bound: float) -> float:
    """p-value of "the rate is at most `bound`", given `hits` of `n` (exact binomial)."""
    if n <= 0:
        return 1.0
    return binomial_sf(hits, n, bound)


def rate_above_stable(
    canary_hits: int, canary_n: int, stable_hits: int, stable_n: int, ratio: float, margin: float
) -> float:
    """p-value of "canary rate <= ratio x stable rate + margin" (Agresti-Caffo adjusted Wald, one-sided)."""
    if canary_n <= 0 or stable_n <= 0:
        return 1.0
    pc = (canary_hits + 1) / (canary_n + 2)
    ps = (stable_hits + 1) / (stable_n + 2)
    variance = pc * (1 - pc) / (canary_n + 2) + ratio * ratio * ps * (1 - ps) / (stable_n + 2)
    z = (pc - ratio * ps - margin) / math.sqrt(variance)
    return normal_sf(z)


def quantile_above_value(over: int, n: int, quantile: float) -> float:
    """p-value of "the `quantile` of the latencies is at most the bound", given `over` of `n` above it."""
    return rate_above_value(over, n, 1.0 - quantile)


def quantile_above_stable(canary_over: int, canary_n: int, stable_over: int, stable_n: int) -> float:
    """p-value of "the canary's quantile is at most the bar": the canary's share above the bar against
    the stable slot's share above its own quantile (the stable side's variance overstated: conservative)."""
    return rate_above_stable(canary_over, canary_n, stable_over, stable_n, 1.0, 0.0)


def _mean_and_variance(n: int, total: float, squares: float) -> tuple[float, float]:
    mean = total / n
    # The sample variance from the sums; never negative through rounding.
    variance = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, variance


def _z_p_value(difference: float, variance: float) -> float:
    if variance <= 0.0:
        # Every value alike: beyond the bound is certain, within it too.
        return 0.0 if difference > 0 else 1.0
    return normal_sf(difference / math.sqrt(variance))


def mean_above_value(n: int, total: float, squares: float, bound: float) -> float:
    """p-value of "the mean is at most `bound`" (one-sided z-test), from the count, sum and sum of squares."""
    if n <= 0:
        return 1.0
    mean, variance = _mean_and_variance(n, total, squares)
    return _z_p_value(mean - bound, variance / n)


def mean_above_stable(
    canary: tuple[int, float, float], stable: tuple[int, float, float], ratio: float, margin: float
) -> float:
    """p-value of "canary mean <= ratio x stable mean + margin" (Welch's statistic, normal reference);
    each side given as (count, sum, sum of squares)."""
    if canary[0] <= 0 or stable[0] <= 0:
        return 1.0
    mc, vc = _mean_and_variance(*canary)
    ms, vs = _mean_and_variance(*stable)
    return _z_p_value(mc - ratio * ms - margin, vc / canary[0] + ratio * ratio * vs / stable[0])
