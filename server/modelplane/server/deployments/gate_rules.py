"""Field rules of a rollout's analysis gates; each broken rule is reported with its path, all at once.

Gates run before the timed steps of a CANARY rollout (see `gates`), so they are refused on any other
strategy, and on a CANARY rollout without a timed step, rather than accepted and never run.
"""

from __future__ import annotations

import math
import re

from modelplane.server.deployments.domain import (
    Analysis,
    AnalysisSignal,
    Gate,
    GateAction,
    RolloutSpec,
    RolloutStrategy,
)
from modelplane.server.errors import shown
from modelplane.server.field_rules import Violations

MAX_GATES = 10
MIN_WINDOW_SECONDS = 10.0
MAX_WINDOW_SECONDS = 24 * 3600.0
# Below 100 events a side, neither the normal approximations nor a person reading the figures can trust
# a verdict; above a million the window is better narrowed.
MIN_SAMPLES_FLOOR = 100
MAX_MIN_SAMPLES = 1_000_000
MIN_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 24 * 3600.0
MIN_ALPHA = 0.0001
MAX_ALPHA = 0.2
# A delay longer than a few minutes hides a shipper that is behind rather than one that batches.
MAX_EVALUATION_DELAY_SECONDS = 300.0
MAX_RATIO = 100.0
# Largest absolute bound or margin: beyond any latency (ms), cost (micros) or token count worth bounding.
MAX_BOUND = 1e12

RATE_SIGNALS = frozenset(
    {
        AnalysisSignal.ERROR_RATE,
        AnalysisSignal.GUARDRAIL_BLOCK_RATE,
        AnalysisSignal.GUARDRAIL_REDACT_RATE,
        AnalysisSignal.ROUTING_FAILURE_RATE,
    }
)
GUARDRAIL_SIGNALS = frozenset({AnalysisSignal.GUARDRAIL_BLOCK_RATE, AnalysisSignal.GUARDRAIL_REDACT_RATE})
_GATE_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_CURRENCY = re.compile(r"[A-Z]{3}")
POLICY_NAME = re.compile(r"policies/[a-z][a-z0-9-]{0,62}")


def check_analysis(v: Violations, spec: RolloutSpec) -> None:
    """Every rule of spec.analysis but the policies' existence, which needs the guardrails (the service
    checks it and adds its violations)."""
    analysis = spec.analysis
    if analysis is None:
        return
    path = "rollout.analysis"
    if spec.strategy is not None and spec.strategy is not RolloutStrategy.CANARY:
        v.add(
            path,
            f"must be unset for {spec.strategy.name}: gates run before the timed steps of a CANARY"
            " rollout, and it has none",
        )
    elif spec.strategy is RolloutStrategy.CANARY and not any(s.duration is not None for s in spec.steps):
        v.add(path, "needs a timed step (one with a duration): gates run before each timed step")
    if not analysis.gates:
        v.add(f"{path}.gates", "is required: at least one gate, or leave analysis unset")
    if len(analysis.gates) > MAX_GATES:
        v.add(f"{path}.gates", f"has {len(analysis.gates)} gates; at most {MAX_GATES} are allowed")
    wait = analysis.max_wait_for_data
    if wait is None or not MIN_WAIT_SECONDS <= wait <= MAX_WAIT_SECONDS:
        v.add(f"{path}.max_wait_for_data", "is required: 1 second to 24 hours")
    if analysis.on_no_data is None:
        v.add(f"{path}.on_no_data", "is required: PAUSE, ROLLBACK or PROCEED")
    if analysis.alpha != 0.0 and not MIN_ALPHA <= analysis.alpha <= MAX_ALPHA:
        v.add(f"{path}.alpha", f"must be 0 (meaning 0.01) or {MIN_ALPHA} to {MAX_ALPHA}")
    delay = analysis.evaluation_delay
    if delay is not None and not 0.0 <= delay <= MAX_EVALUATION_DELAY_SECONDS:
        v.add(f"{path}.evaluation_delay", "must be 0 to 5 minutes, or unset for 2 seconds")
    seen: set[str] = set()
    for i, gate in enumerate(analysis.gates):
        _check_gate(v, f"{path}.gates[{i}]", gate, seen)


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def _check_gate(v: Violations, path: str, gate: Gate, seen: set[str]) -> None:
    if not _GATE_NAME.fullmatch(gate.name):
        v.add(f"{path}.name", f"{shown(gate.name)} is not valid: 1 to 63 lower-case letters, digits or '-'")
    elif gate.name in seen:
        v.add(f"{path}.name", f"{shown(gate.name)} names two gates; gate names are unique")
    seen.add(gate.name)
    if gate.signal is None:
        v.add(f"{path}.signal", "is required: e.g. ERROR_RATE or LATENCY_P95")
    if gate.window is None or not MIN_WINDOW_SECONDS <= gate.window <= MAX_WINDOW_SECONDS:
        v.add(f"{path}.window", "is required: 10 seconds to 24 hours")
    if not MIN_SAMPLES_FLOOR <= gate.min_samples <= MAX_MIN_SAMPLES:
        v.add(f"{path}.min_samples", f"must be {MIN_SAMPLES_FLOOR} to {MAX_MIN_SAMPLES} events per slot")
    if gate.on_failure not in (GateAction.PAUSE, GateAction.ROLLBACK):
        v.add(f"{path}.on_failure", "is required: PAUSE or ROLLBACK")
    _check_bound(v, f"{path}.bound", gate)
    if gate.signal is AnalysisSignal.COST_PER_REQUEST:
        if not _CURRENCY.fullmatch(gate.currency_code):
            v.add(f"{path}.currency_code", "is required for COST_PER_REQUEST: an ISO 4217 code, e.g. 'USD'")
    elif gate.currency_code:
        v.add(f"{path}.currency_code", "must be empty: only COST_PER_REQUEST is priced")
    if gate.signal in GUARDRAIL_SIGNALS:
        if not POLICY_NAME.fullmatch(gate.policy):
            v.add(
                f"{path}.policy",
                "is required for a guardrail signal: the policy whose checks count, 'policies/{policy}'",
            )
    elif gate.policy:
        v.add(f"{path}.policy", "must be empty: only the GUARDRAIL_* signals read a policy's checks")


def _check_bound(v: Violations, path: str, gate: Gate) -> None:
    bound = gate.bound
    if bound is None or (bound.max_value is None and bound.max_ratio is None):
        v.add(path, "is required: set max_value (absolute) or max_ratio (relative to the stable slot)")
        return
    rate = gate.signal in RATE_SIGNALS
    if bound.max_value is not None:
        value = bound.max_value
        if rate and not (_finite(value) and 0 < value < 1):
            v.add(f"{path}.max_value", "must be more than 0 and less than 1 for a rate, e.g. 0.02")
        elif not rate and not (_finite(value) and 0 < value <= MAX_BOUND):
            v.add(f"{path}.max_value", f"must be more than 0 and at most {MAX_BOUND:g}, in the signal's unit")
        if bound.margin != 0.0:
            v.add(f"{path}.margin", "must be 0 with max_value: a margin widens a relative bound only")
        return
    ratio = bound.max_ratio
    assert ratio is not None
    if not (_finite(ratio) and 1.0 <= ratio <= MAX_RATIO):
        v.add(f"{path}.max_ratio", f"must be 1 to {MAX_RATIO:g}: the canary may be at most this x stable")
    margin = bound.margin
    limit = 1.0 if rate else MAX_BOUND
    if not (_finite(margin) and 0 <= margin < limit):
        v.add(f"{path}.margin", f"must be at least 0 and below {limit:g}, in the signal's unit")


def guardrail_policies(analysis: Analysis | None) -> list[tuple[str, str]]:
    """(path, policy name) of each well-formed policy of a guardrail gate, whose existence is checked."""
    if analysis is None:
        return []
    return [
        (f"rollout.analysis.gates[{i}].policy", gate.policy)
        for i, gate in enumerate(analysis.gates)
        if gate.signal in GUARDRAIL_SIGNALS and POLICY_NAME.fullmatch(gate.policy)
    ]
