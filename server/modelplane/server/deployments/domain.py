"""The deployment manager's domain values: frozen dataclasses that never carry a proto message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from modelplane.server.errors import FieldViolation

T = TypeVar("T")

# The actor of transitions nobody asked for in that moment: timed steps.
DRIVER_ACTOR = "modelplane-driver"
FULL_WEIGHT_BP = 10_000


class EndpointHealth(StrEnum):
    """An endpoint's last reported readiness; the values are the stored form."""

    UNKNOWN = "unknown"
    READY = "ready"
    NOT_READY = "not_ready"


class TrafficSlot(StrEnum):
    """A slot of a deployment's traffic table, as the events linked to it (a guardrail check, a log event)
    name it; NONE for one that no slot served. The values are the stored form."""

    NONE = ""
    STABLE = "stable"
    CANARY = "canary"


class RolloutStrategy(StrEnum):
    CANARY = "canary"
    BLUE_GREEN = "blue_green"
    IMMEDIATE = "immediate"


class RolloutState(StrEnum):
    PENDING = "pending"
    WAITING_READY = "waiting_ready"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES


ACTIVE_STATES = frozenset(
    {
        RolloutState.WAITING_READY,
        RolloutState.PROGRESSING,
        RolloutState.PAUSED,
        RolloutState.ROLLING_BACK,
    }
)


class RollbackMode(StrEnum):
    INSTANT = "instant"
    STEPPED = "stepped"


class Transition(StrEnum):
    """What a history entry records; the values are the stored form."""

    CREATED = "created"
    UPDATED = "updated"
    ROLLOUT_STARTED = "rollout_started"
    STEP_ADVANCED = "step_advanced"
    PROMOTED = "promoted"
    PAUSED = "paused"
    RESUMED = "resumed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUCCEEDED = "succeeded"
    HEALTH_CHANGED = "health_changed"
    GATE_EVALUATED = "gate_evaluated"


class AnalysisSignal(StrEnum):
    """What an analysis gate measures; the values are the stored form."""

    ERROR_RATE = "error_rate"
    LATENCY_P50 = "latency_p50"
    LATENCY_P95 = "latency_p95"
    LATENCY_P99 = "latency_p99"
    COST_PER_REQUEST = "cost_per_request"
    TOKENS_PER_REQUEST = "tokens_per_request"
    GUARDRAIL_BLOCK_RATE = "guardrail_block_rate"
    GUARDRAIL_REDACT_RATE = "guardrail_redact_rate"
    ROUTING_FAILURE_RATE = "routing_failure_rate"


class GateAction(StrEnum):
    """What the driver does on a failed gate or on data still short after the wait."""

    PAUSE = "pause"
    ROLLBACK = "rollback"
    PROCEED = "proceed"


class GateVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


def deployment_name(deployment_id: str) -> str:
    return f"deployments/{deployment_id}"


def rollout_name(deployment_id: str, number: int) -> str:
    return f"deployments/{deployment_id}/rollouts/{number}"


@dataclass(frozen=True)
class Endpoint:
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    health: EndpointHealth = EndpointHealth.UNKNOWN


@dataclass(frozen=True)
class SlotTraffic:
    # The version's resource name, "models/{model}/versions/{n}".
    model_version: str
    endpoints: tuple[Endpoint, ...]
    weight_bp: int


@dataclass(frozen=True)
class TrafficTable:
    stable: SlotTraffic
    # Present only while a rollout is active.
    canary: SlotTraffic | None = None


@dataclass(frozen=True)
class DeploymentFields:
    """What a caller sets on a deployment (create, or update through a mask)."""

    environment: str
    # The model's resource name as sent, "models/{model}".
    model: str
    stable_version: str
    stable_endpoints: tuple[Endpoint, ...]
    # The weight the caller sent for the stable slot (must be 0 or 10,000), for validation only.
    stable_weight_bp: int = 0
    canary_given: bool = False
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment:
    id: str
    environment: str
    model_id: str
    traffic: TrafficTable
    description: str
    labels: Mapping[str, str]
    # The number of the active rollout, None when none is active.
    active_rollout: int | None
    revision: int
    create_time: datetime
    update_time: datetime
    etag: str

    @property
    def name(self) -> str:
        return deployment_name(self.id)


@dataclass(frozen=True)
class Step:
    weight_bp: int
    # Seconds the step holds; None: it holds until promoted.
    duration: float | None


@dataclass(frozen=True)
class GateBound:
    """Exactly one of max_value (absolute) and max_ratio (x the stable figure, + margin) is set."""

    max_value: float | None
    max_ratio: float | None
    margin: float = 0.0


@dataclass(frozen=True)
class Gate:
    """One analysis gate; None where the caller left a field unset (validation names it)."""

    name: str
    signal: AnalysisSignal | None
    # Seconds of events before the evaluation that count.
    window: float | None
    min_samples: int
    bound: GateBound | None
    on_failure: GateAction | None
    currency_code: str = ""
    # The policy's resource name, "policies/{policy}", for the guardrail signals.
    policy: str = ""


@dataclass(frozen=True)
class Analysis:
    gates: tuple[Gate, ...]
    # Seconds a due step waits for enough events before on_no_data.
    max_wait_for_data: float | None
    on_no_data: GateAction | None
    # The false-alarm rate of one evaluation of one gate; 0 means the default.
    alpha: float = 0.0
    # Seconds before the evaluation time each window ends; None means the default.
    evaluation_delay: float | None = None


@dataclass(frozen=True)
class GateEvaluation:
    """One evaluation of one gate over its window: both slots' figures, sample sizes and the verdict."""

    gate: str
    signal: AnalysisSignal
    window_start: datetime
    window_end: datetime
    canary_value: float
    stable_value: float
    canary_samples: int
    stable_samples: int
    threshold: float
    p_value: float
    verdict: GateVerdict
    reason: str


@dataclass(frozen=True)
class RolloutSpec:
    """What a caller asks for in StartRollout / PlanRollout."""

    target_version: str
    endpoints: tuple[Endpoint, ...]
    strategy: RolloutStrategy | None
    steps: tuple[Step, ...]
    reason: str = ""
    # What conversion could not read (a step without its end, a bad duration), reported with the other
    # violations.
    refused: tuple[FieldViolation, ...] = ()
    analysis: Analysis | None = None


@dataclass(frozen=True)
class RollbackSpec:
    """How RollbackRollout returns the traffic: the mode (None: not given), a STEPPED rollback's interval."""

    mode: RollbackMode | None
    interval: float | None
    # What conversion could not read (a bad step_interval), reported with the other violations.
    refused: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True)
class Rollout:
    deployment_id: str
    number: int
    target_version: str
    endpoints: tuple[Endpoint, ...]
    strategy: RolloutStrategy
    steps: tuple[Step, ...]
    reason: str
    state: RolloutState
    current_step: int
    next_step_time: datetime | None
    from_version: str
    rollback_mode: RollbackMode | None
    # Seconds per step down of a STEPPED rollback.
    rollback_interval: float | None
    started_by: str
    create_time: datetime
    update_time: datetime
    end_time: datetime | None
    etag: str
    # The state a PAUSED rollout was paused in (WAITING_READY or PROGRESSING); None otherwise.
    paused_from: RolloutState | None = None
    analysis: Analysis | None = None
    # The last evaluation of each gate, in the order of analysis.gates.
    gate_evaluations: tuple[GateEvaluation, ...] = ()
    # When the due step began waiting for data; None while it is not waiting.
    data_wait_start: datetime | None = None

    @property
    def name(self) -> str:
        return rollout_name(self.deployment_id, self.number)


@dataclass(frozen=True)
class HistoryEntry:
    """One transition as the state machine describes it; the store adds who, when and the revision."""

    transition: Transition
    reason: str
    traffic_before: TrafficTable | None
    traffic_after: TrafficTable
    rollout_state: RolloutState | None = None
    gate_evaluations: tuple[GateEvaluation, ...] = ()


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    deployment_id: str
    transition: Transition
    # The rollout's number, None when no rollout was involved.
    rollout: int | None
    rollout_state: RolloutState | None
    actor: str
    reason: str
    traffic_before: TrafficTable | None
    traffic_after: TrafficTable
    revision: int
    create_time: datetime
    gate_evaluations: tuple[GateEvaluation, ...] = ()

    @property
    def name(self) -> str:
        return f"{deployment_name(self.deployment_id)}/history/{self.id}"


@dataclass(frozen=True)
class PlannedStage:
    state: RolloutState
    # Index of the step in force, -1 outside the steps.
    step: int
    traffic: TrafficTable
    advance: Step | None


@dataclass(frozen=True)
class Plan:
    rollout: Rollout
    stages: tuple[PlannedStage, ...]
    # What each gate would decide now.
    gate_evaluations: tuple[GateEvaluation, ...] = ()


@dataclass(frozen=True)
class Route:
    endpoint: Endpoint
    model_version: str
    # "stable" or "canary".
    slot: str
    revision: int


@dataclass(frozen=True)
class RolloutResult:
    """A rollout after a transition, with its deployment."""

    rollout: Rollout
    deployment: Deployment


@dataclass(frozen=True)
class HealthResult:
    changed: bool
    deployment: Deployment


@dataclass(frozen=True)
class DeploymentChange:
    revision: int
    kind: str
    resource: str
    change_time: datetime
    # None for a delete.
    deployment: Deployment | None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_page_token: str
