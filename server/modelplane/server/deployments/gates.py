"""Rollout analysis gates, pure: what a gate reads, how its figures are judged, and what a step does then.

The step driver (`rollouts.RolloutService`) evaluates a rollout's gates when a timed step is due, under the
deployment's row lock, so one replica evaluates each due step once. Per gate it reads the window through
a `GateReader` (the log collector's service), and:

- `judge` turns both slots' figures into a verdict: INCONCLUSIVE while a slot has fewer than min_samples
  events (the canary alone for an absolute bound, both slots for a relative one), else FAIL when the
  one-sided test of `gate_statistics` puts the canary beyond its bound at the analysis' alpha, else PASS;
- `decide` turns the verdicts into the step's fate: any FAIL takes its gate's on_failure (ROLLBACK over
  PAUSE when several fail); otherwise any INCONCLUSIVE waits for data, up to max_wait_for_data from the
  first evaluation that found it short, and then takes on_no_data; otherwise the step advances;
- `worth_recording` is the history rule: an evaluation that decides nothing is written into the history
  only when some gate's verdict differs from the last one recorded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from modelplane.server.deployments import gate_statistics as stats
from modelplane.server.deployments.domain import (
    Analysis,
    AnalysisSignal,
    Gate,
    GateAction,
    GateEvaluation,
    GateVerdict,
    Rollout,
)
from modelplane.server.deployments.gate_rules import RATE_SIGNALS
from modelplane.server.logs.domain import SlotComparison, SlotFigures, SlotWindowQuery, WindowMeasure

DEFAULT_ALPHA = 0.01
# Seconds each window ends before the evaluation time when the analysis leaves evaluation_delay unset: ten
# times the LogShipper's default flush interval (0.2 s), so a batch emitted before the window's end is
# stored by the time the window is read.
DEFAULT_EVALUATION_DELAY = 2.0

_MEASURE = {
    AnalysisSignal.ERROR_RATE: WindowMeasure.ERRORS,
    AnalysisSignal.LATENCY_P50: WindowMeasure.LATENCY,
    AnalysisSignal.LATENCY_P95: WindowMeasure.LATENCY,
    AnalysisSignal.LATENCY_P99: WindowMeasure.LATENCY,
    AnalysisSignal.COST_PER_REQUEST: WindowMeasure.COST,
    AnalysisSignal.TOKENS_PER_REQUEST: WindowMeasure.TOKENS,
    AnalysisSignal.GUARDRAIL_BLOCK_RATE: WindowMeasure.BLOCKS,
    AnalysisSignal.GUARDRAIL_REDACT_RATE: WindowMeasure.REDACTS,
    AnalysisSignal.ROUTING_FAILURE_RATE: WindowMeasure.ROUTING_FAILURES,
}
_QUANTILE = {
    AnalysisSignal.LATENCY_P50: 0.5,
    AnalysisSignal.LATENCY_P95: 0.95,
    AnalysisSignal.LATENCY_P99: 0.99,
}
_LABEL = {
    AnalysisSignal.ERROR_RATE: "error rate",
    AnalysisSignal.LATENCY_P50: "latency p50 (ms)",
    AnalysisSignal.LATENCY_P95: "latency p95 (ms)",
    AnalysisSignal.LATENCY_P99: "latency p99 (ms)",
    AnalysisSignal.COST_PER_REQUEST: "cost per request (micros)",
    AnalysisSignal.TOKENS_PER_REQUEST: "tokens per request",
    AnalysisSignal.GUARDRAIL_BLOCK_RATE: "guardrail block rate",
    AnalysisSignal.GUARDRAIL_REDACT_RATE: "guardrail redact rate",
    AnalysisSignal.ROUTING_FAILURE_RATE: "routing failure rate",
}
# Latency is stored in microseconds and shown, and bounded, in milliseconds.
_US_PER_MS = 1000.0


class GateReader(Protocol):
    """Where gates read their data: the log collector's windows and the guardrails' policies."""

    async def compare_slots(self, query: SlotWindowQuery) -> SlotComparison: ...

    async def policy_exists(self, name: str) -> bool: ...


def alpha_of(analysis: Analysis) -> float:
    return analysis.alpha or DEFAULT_ALPHA


def window_end(analysis: Analysis, now: datetime) -> datetime:
    """The end of every gate's window evaluated at `now`: the analysis' evaluation delay before it. Events
    are written after they are emitted (shippers batch, networks delay); a window ending that long ago
    has all of its events stored when it is read, so re-reading it later gives the same figures."""
    delay = DEFAULT_EVALUATION_DELAY if analysis.evaluation_delay is None else analysis.evaluation_delay
    return now - timedelta(seconds=delay)


def window_start(gate: Gate, end: datetime, not_before: datetime | None) -> datetime:
    """The window's start: `window` before its end, never before `not_before` (the rollout's start, so no
    event of an earlier rollout's canary counts); an end before `not_before` gives an empty window."""
    assert gate.window is not None
    start = end - timedelta(seconds=gate.window)
    return start if not_before is None or not_before <= start else min(not_before, end)


def window_query(gate: Gate, deployment: str, start: datetime, end: datetime) -> SlotWindowQuery:
    """What the gate reads, for the deployment's resource name, over [start, end)."""
    assert gate.signal is not None
    assert gate.bound is not None
    query = SlotWindowQuery(
        deployment=deployment,
        measure=_MEASURE[gate.signal],
        start=start,
        end=end,
        currency_code=gate.currency_code,
        policy=gate.policy,
    )
    if gate.signal in _QUANTILE:
        bound = gate.bound
        return dataclasses.replace(
            query,
            quantile=_QUANTILE[gate.signal],
            bar_value=None if bound.max_value is None else bound.max_value * _US_PER_MS,
            bar_ratio=bound.max_ratio,
            bar_margin=bound.margin * _US_PER_MS,
        )
    return query


def _value(signal: AnalysisSignal, figures: SlotFigures) -> float:
    if figures.samples == 0:
        return 0.0
    if signal in RATE_SIGNALS:
        return figures.hits / figures.samples
    if signal in _QUANTILE:
        return 0.0 if figures.quantile is None else figures.quantile / _US_PER_MS
    return figures.total / figures.samples


def _p_value(gate: Gate, c: SlotFigures, s: SlotFigures) -> float:
    assert gate.signal is not None
    assert gate.bound is not None
    bound = gate.bound
    signal = gate.signal
    if signal in RATE_SIGNALS:
        if bound.max_value is not None:
            return stats.rate_above_value(c.hits, c.samples, bound.max_value)
        assert bound.max_ratio is not None
        return stats.rate_above_stable(c.hits, c.samples, s.hits, s.samples, bound.max_ratio, bound.margin)
    if signal in _QUANTILE:
        if bound.max_value is not None:
            return stats.quantile_above_value(c.over_bar, c.samples, _QUANTILE[signal])
        return stats.quantile_above_stable(c.over_bar, c.samples, s.over_bar, s.samples)
    if bound.max_value is not None:
        return stats.mean_above_value(c.samples, c.total, c.squares, bound.max_value)
    assert bound.max_ratio is not None
    return stats.mean_above_stable(
        (c.samples, c.total, c.squares), (s.samples, s.total, s.squares), bound.max_ratio, bound.margin
    )


def _figure(signal: AnalysisSignal, value: float, figures: SlotFigures) -> str:
    if signal in RATE_SIGNALS:
        return f"{value:.4f} ({figures.hits}/{figures.samples})"
    return f"{value:.4g} (n={figures.samples})"


def judge(
    gate: Gate, found: SlotComparison, *, alpha: float, start: datetime, end: datetime
) -> GateEvaluation:
    """The gate's verdict over both slots' figures of one window."""
    assert gate.signal is not None
    assert gate.bound is not None
    signal, bound = gate.signal, gate.bound
    c, s = found.canary, found.stable
    canary, stable = _value(signal, c), _value(signal, s)
    relative = bound.max_ratio is not None
    if bound.max_value is not None:
        threshold = bound.max_value
    elif signal in _QUANTILE:
        threshold = (found.bar or 0.0) / _US_PER_MS
    else:
        assert bound.max_ratio is not None
        threshold = bound.max_ratio * stable + bound.margin
    label = _LABEL[signal]

    def evaluation(verdict: GateVerdict, p_value: float, reason: str) -> GateEvaluation:
        return GateEvaluation(
            gate=gate.name,
            signal=signal,
            window_start=start,
            window_end=end,
            canary_value=canary,
            stable_value=stable,
            canary_samples=c.samples,
            stable_samples=s.samples,
            threshold=threshold,
            p_value=p_value,
            verdict=verdict,
            reason=reason,
        )

    short = [
        f"{slot} has {figures.samples} of the {gate.min_samples} events needed"
        for slot, figures in (("canary", c), ("stable", s))
        if figures.samples < gate.min_samples and (slot == "canary" or relative)
    ]
    if short or (relative and signal in _QUANTILE and found.bar is None):
        return evaluation(GateVerdict.INCONCLUSIVE, 1.0, "waiting for data: " + "; ".join(short))
    p_value = _p_value(gate, c, s)
    against = (
        f"{bound.max_ratio:g} x stable {_figure(signal, stable, s)} + {bound.margin:g} = {threshold:.4g}"
        if relative
        else f"{threshold:g}"
    )
    shown = f"canary {label} {_figure(signal, canary, c)}"
    if p_value < alpha:
        return evaluation(
            GateVerdict.FAIL,
            p_value,
            f"{shown} is significantly above {against} (p={p_value:.3g} < alpha {alpha:g})",
        )
    return evaluation(
        GateVerdict.PASS,
        p_value,
        f"{shown} is not significantly above {against} (p={p_value:.3g}, alpha {alpha:g})",
    )


class StepFate(StrEnum):
    ADVANCE = "advance"
    WAIT = "wait"
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class StepDecision:
    fate: StepFate
    # Why, for the history entry's reason (names the deciding gates).
    reason: str
    # When the step began waiting for data (set for WAIT).
    wait_start: datetime | None = None


def decide(
    analysis: Analysis, evaluations: tuple[GateEvaluation, ...], wait_start: datetime | None, now: datetime
) -> StepDecision:
    """The fate of a due step given every gate's evaluation (see the module's rules)."""
    actions = {gate.name: gate.on_failure for gate in analysis.gates}
    failed = [e for e in evaluations if e.verdict is GateVerdict.FAIL]
    if failed:
        rollback = [e for e in failed if actions[e.gate] is GateAction.ROLLBACK]
        deciding = rollback or failed
        named = "; ".join(f"gate {e.gate} failed: {e.reason}" for e in deciding)
        return StepDecision(StepFate.ROLLBACK if rollback else StepFate.PAUSE, named)
    short = [e.gate for e in evaluations if e.verdict is GateVerdict.INCONCLUSIVE]
    if not short:
        return StepDecision(StepFate.ADVANCE, f"gates passed: {', '.join(e.gate for e in evaluations)}")
    since = now if wait_start is None else wait_start
    assert analysis.max_wait_for_data is not None
    assert analysis.on_no_data is not None
    waited = (now - since).total_seconds()
    if waited < analysis.max_wait_for_data:
        return StepDecision(StepFate.WAIT, f"waiting for data: gates {', '.join(short)}", since)
    fate = {
        GateAction.PAUSE: StepFate.PAUSE,
        GateAction.ROLLBACK: StepFate.ROLLBACK,
        GateAction.PROCEED: StepFate.ADVANCE,
    }[analysis.on_no_data]
    return StepDecision(
        fate,
        f"not enough data after {analysis.max_wait_for_data:g} s for gates {', '.join(short)}:"
        f" on_no_data {analysis.on_no_data.name}",
    )


def recheck_after(analysis: Analysis) -> float:
    """Seconds between evaluations of a step waiting for data: a tenth of the wait, 1 to 30 seconds, so a
    long wait does not read the window every driver round."""
    assert analysis.max_wait_for_data is not None
    return min(30.0, max(1.0, analysis.max_wait_for_data / 10))


def worth_recording(rollout: Rollout, evaluations: tuple[GateEvaluation, ...]) -> bool:
    """True when some gate's verdict differs from the last one recorded for the rollout."""
    before = {e.gate: e.verdict for e in rollout.gate_evaluations}
    return any(before.get(e.gate) is not e.verdict for e in evaluations)
