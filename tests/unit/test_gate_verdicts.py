"""Rollout gates without I/O: a gate's verdict from both slots' figures, a due step's fate from verdicts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from modelplane.server.deployments import gates
from modelplane.server.deployments.domain import (
    Analysis,
    AnalysisSignal,
    Gate,
    GateAction,
    GateBound,
    GateEvaluation,
    GateVerdict,
)
from modelplane.server.logs.domain import SlotComparison, SlotFigures, WindowMeasure

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ERRORS = Gate(
    name="errors",
    signal=AnalysisSignal.ERROR_RATE,
    window=600.0,
    min_samples=200,
    bound=GateBound(max_value=None, max_ratio=1.0),
    on_failure=GateAction.ROLLBACK,
)
LATENCY = Gate(
    name="p95",
    signal=AnalysisSignal.LATENCY_P95,
    window=600.0,
    min_samples=200,
    bound=GateBound(max_value=None, max_ratio=1.2, margin=5.0),
    on_failure=GateAction.PAUSE,
)
ANALYSIS = Analysis(gates=(ERRORS, LATENCY), max_wait_for_data=60.0, on_no_data=GateAction.PAUSE)


def _rates(canary: tuple[int, int], stable: tuple[int, int]) -> SlotComparison:
    def side(hits: int, n: int) -> SlotFigures:
        return SlotFigures(samples=n, hits=hits, total=float(n), squares=float(n), quantile=None, over_bar=0)

    return SlotComparison(canary=side(*canary), stable=side(*stable))


def _judge(gate: Gate, found: SlotComparison) -> GateEvaluation:
    return gates.judge(gate, found, alpha=0.01, start=NOW - timedelta(minutes=10), end=NOW)


def test_a_short_slot_is_inconclusive_and_says_which() -> None:
    e = _judge(ERRORS, _rates((10, 150), (20, 1000)))
    assert e.verdict is GateVerdict.INCONCLUSIVE
    assert "canary has 150 of the 200 events needed" in e.reason
    assert e.p_value == 1.0
    # An absolute bound needs canary events only.
    absolute = dataclasses.replace(ERRORS, bound=GateBound(max_value=0.05, max_ratio=None))
    assert _judge(absolute, _rates((5, 400), (0, 0))).verdict is GateVerdict.PASS


def test_error_rate_three_times_stable_fails_with_figures() -> None:
    e = _judge(ERRORS, _rates((60, 1000), (20, 1000)))
    assert e.verdict is GateVerdict.FAIL
    assert (e.canary_value, e.stable_value) == (0.06, 0.02)
    assert (e.canary_samples, e.stable_samples) == (1000, 1000)
    assert e.threshold == 0.02
    assert e.p_value < 0.01
    assert "significantly above 1 x stable 0.0200 (20/1000)" in e.reason


def test_equal_rates_pass() -> None:
    assert _judge(ERRORS, _rates((20, 1000), (20, 1000))).verdict is GateVerdict.PASS


def test_latency_query_and_verdict_in_milliseconds() -> None:
    query = gates.window_query(LATENCY, "deployments/chat", NOW - timedelta(minutes=10), NOW)
    assert query.measure is WindowMeasure.LATENCY
    assert (query.quantile, query.bar_ratio, query.bar_margin, query.bar_value) == (0.95, 1.2, 5000.0, None)
    found = SlotComparison(
        canary=SlotFigures(samples=500, hits=0, total=0, squares=0, quantile=400_000.0, over_bar=200),
        stable=SlotFigures(samples=500, hits=0, total=0, squares=0, quantile=200_000.0, over_bar=25),
        bar=245_000.0,
    )
    e = _judge(LATENCY, found)
    assert (e.canary_value, e.stable_value, e.threshold) == (400.0, 200.0, 245.0)
    assert e.verdict is GateVerdict.FAIL


def test_window_never_starts_before_the_rollout() -> None:
    started = NOW - timedelta(minutes=3)
    assert gates.window_start(ERRORS, NOW, started) == started
    assert gates.window_start(ERRORS, NOW, NOW - timedelta(hours=1)) == NOW - timedelta(minutes=10)


def test_the_window_ends_the_evaluation_delay_before_now() -> None:
    assert gates.window_end(ANALYSIS, NOW) == NOW - timedelta(seconds=gates.DEFAULT_EVALUATION_DELAY)
    delayed = dataclasses.replace(ANALYSIS, evaluation_delay=15.0)
    assert gates.window_end(delayed, NOW) == NOW - timedelta(seconds=15)
    assert gates.window_end(dataclasses.replace(ANALYSIS, evaluation_delay=0.0), NOW) == NOW
    # A rollout younger than the delay has an empty window: no event of its canary is settled yet.
    end = gates.window_end(delayed, NOW)
    assert gates.window_start(ERRORS, end, NOW - timedelta(seconds=5)) == end


def _evaluated(*verdicts: GateVerdict) -> tuple[GateEvaluation, ...]:
    base = _judge(ERRORS, _rates((20, 1000), (20, 1000)))
    names = ("errors", "p95")
    return tuple(dataclasses.replace(base, gate=names[i], verdict=v) for i, v in enumerate(verdicts))


def test_rollback_wins_over_pause_and_names_the_gate() -> None:
    d = gates.decide(ANALYSIS, _evaluated(GateVerdict.FAIL, GateVerdict.FAIL), None, NOW)
    assert d.fate is gates.StepFate.ROLLBACK
    assert d.reason.startswith("gate errors failed:")
    d = gates.decide(ANALYSIS, _evaluated(GateVerdict.PASS, GateVerdict.FAIL), None, NOW)
    assert d.fate is gates.StepFate.PAUSE
    assert "gate p95 failed" in d.reason


def test_short_data_waits_then_takes_on_no_data() -> None:
    short = _evaluated(GateVerdict.PASS, GateVerdict.INCONCLUSIVE)
    first = gates.decide(ANALYSIS, short, None, NOW)
    assert (first.fate, first.wait_start) == (gates.StepFate.WAIT, NOW)
    later = gates.decide(ANALYSIS, short, NOW, NOW + timedelta(seconds=59))
    assert (later.fate, later.wait_start) == (gates.StepFate.WAIT, NOW)
    done = gates.decide(ANALYSIS, short, NOW, NOW + timedelta(seconds=60))
    assert done.fate is gates.StepFate.PAUSE
    assert "not enough data after 60 s for gates p95" in done.reason
    proceed = dataclasses.replace(ANALYSIS, on_no_data=GateAction.PROCEED)
    assert gates.decide(proceed, short, NOW, NOW + timedelta(seconds=60)).fate is gates.StepFate.ADVANCE
    passed = gates.decide(ANALYSIS, _evaluated(GateVerdict.PASS, GateVerdict.PASS), NOW, NOW)
    assert passed.fate is gates.StepFate.ADVANCE


def test_recheck_interval_is_bounded() -> None:
    assert gates.recheck_after(ANALYSIS) == 6.0
    assert gates.recheck_after(dataclasses.replace(ANALYSIS, max_wait_for_data=2.0)) == 1.0
    assert gates.recheck_after(dataclasses.replace(ANALYSIS, max_wait_for_data=86400.0)) == 30.0
