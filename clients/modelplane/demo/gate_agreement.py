"""The figures a rollout gate decided on, read again through AggregateLogEvents: the same deployment, the
same slots, the same window and the same kind of events, grouped by traffic slot. The demo shows (and
asserts) that the two agree: a gate judges the numbers anyone can query afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelplane.client import Connection
from modelplane.v1 import common_pb2, deployments_pb2, logs_pb2

_KIND = {
    deployments_pb2.ANALYSIS_SIGNAL_ERROR_RATE: "INFERENCE",
    deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P50: "INFERENCE",
    deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P95: "INFERENCE",
    deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P99: "INFERENCE",
    deployments_pb2.ANALYSIS_SIGNAL_COST_PER_REQUEST: "INFERENCE",
    deployments_pb2.ANALYSIS_SIGNAL_TOKENS_PER_REQUEST: "INFERENCE",
    deployments_pb2.ANALYSIS_SIGNAL_GUARDRAIL_BLOCK_RATE: "GUARDRAIL",
    deployments_pb2.ANALYSIS_SIGNAL_ROUTING_FAILURE_RATE: "ROUTING",
}
# Figures are doubles on both sides, computed in different places: equal to this many parts in a billion.
_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SlotFigure:
    """One slot's figure of a signal and how many events it is over."""

    samples: int
    value: float


@dataclass(frozen=True)
class Agreement:
    """A gate's evaluation beside the same figures from AggregateLogEvents."""

    evaluation: deployments_pb2.GateEvaluation
    canary: SlotFigure
    stable: SlotFigure

    @property
    def agrees(self) -> bool:
        evaluation = self.evaluation
        return (
            (evaluation.canary_samples, evaluation.stable_samples)
            == (self.canary.samples, self.stable.samples)
            and _close(evaluation.canary_value, self.canary.value)
            and _close(evaluation.stable_value, self.stable.value)
        )


def supported(signal: deployments_pb2.AnalysisSignal.ValueType) -> bool:
    """Whether AggregateLogEvents has the figure of `signal` (it counts no redactions)."""
    return signal in _KIND


def window_filter(
    deployment: str, gate: deployments_pb2.AnalysisGate, evaluation: deployments_pb2.GateEvaluation
) -> str:
    """The AggregateLogEvents filter that selects the events the evaluation read."""
    clauses = [
        f'deployment = "{deployment}"',
        f"kind = {_KIND[gate.signal]}",
        f'event_time >= "{evaluation.window_start.ToJsonString()}"',
        f'event_time < "{evaluation.window_end.ToJsonString()}"',
    ]
    if gate.policy:
        clauses.append(f'policy = "{gate.policy}"')
    return " AND ".join(clauses)


def figure(signal: deployments_pb2.AnalysisSignal.ValueType, group: logs_pb2.LogGroup | None) -> SlotFigure:
    """A slot's figure of `signal` from its AggregateLogEvents group (None: the slot had no events)."""
    if group is None or group.count == 0:
        return SlotFigure(0, 0.0)
    count = group.count
    if signal == deployments_pb2.ANALYSIS_SIGNAL_ERROR_RATE:
        return SlotFigure(count, group.error_count / count)
    if signal == deployments_pb2.ANALYSIS_SIGNAL_ROUTING_FAILURE_RATE:
        return SlotFigure(count, group.error_count / count)
    if signal == deployments_pb2.ANALYSIS_SIGNAL_GUARDRAIL_BLOCK_RATE:
        return SlotFigure(count, group.guardrail_blocks / count)
    if signal == deployments_pb2.ANALYSIS_SIGNAL_COST_PER_REQUEST:
        return SlotFigure(count, group.cost.micros / count)
    if signal == deployments_pb2.ANALYSIS_SIGNAL_TOKENS_PER_REQUEST:
        return SlotFigure(count, (group.input_tokens + group.output_tokens) / count)
    latency = {
        deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P50: group.latency_p50,
        deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P95: group.latency_p95,
        deployments_pb2.ANALYSIS_SIGNAL_LATENCY_P99: group.latency_p99,
    }[signal]
    return SlotFigure(group.latency_count, latency.ToTimedelta().total_seconds() * 1000)


async def check_agreement(
    connection: Connection,
    deployment: str,
    gates: Sequence[deployments_pb2.AnalysisGate],
    evaluation: deployments_pb2.GateEvaluation,
) -> Agreement:
    """Reads the evaluation's window back through AggregateLogEvents, grouped by traffic slot."""
    gate = next(gate for gate in gates if gate.name == evaluation.gate)
    groups = await connection.logs.aggregate_log_events(
        filter=window_filter(deployment, gate, evaluation),
        group_by=[logs_pb2.LOG_GROUP_BY_TRAFFIC_SLOT],
        currency_code=gate.currency_code,
    )
    by_slot = {group.traffic_slot: group for group in groups}
    return Agreement(
        evaluation,
        canary=figure(gate.signal, by_slot.get(common_pb2.TRAFFIC_SLOT_CANARY)),
        stable=figure(gate.signal, by_slot.get(common_pb2.TRAFFIC_SLOT_STABLE)),
    )


def _close(first: float, second: float) -> bool:
    return abs(first - second) <= _RELATIVE_TOLERANCE * max(abs(first), abs(second), 1.0)
