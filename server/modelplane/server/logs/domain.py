"""The log collector's domain values: events, batches, acknowledgements, aggregates and ingestion counters.

Frozen dataclasses that never carry a proto message. Enum values are the stored SQL form (the proto
name in lower case without its prefix), so a value goes to and from the database unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

from modelplane.server.deployments.domain import TrafficSlot
from modelplane.server.errors import FieldViolation
from modelplane.server.guardrails.engine import Decision, Severity

T = TypeVar("T")

__all__ = ["Decision", "Severity", "TrafficSlot"]

# The most events in one batch (WriteLogEvents and each StreamLogEvents message).
MAX_BATCH_EVENTS = 1000
# The most encoded bytes of events (or groups) in one response message: half the 4 MiB both sides accept,
# leaving room for the rest of the message. One event is at most some 100 KB, so a page always fits one.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
# The service name and the event-id prefix of the control plane's own change events (written by
# log_control_plane_change in store/schema/0004_logs.sql, which test_logs_store holds to these): reserved
# for the server, so no client event can pass for one.
CONTROL_PLANE_SERVICE = "modelplane"
CONTROL_PLANE_EVENT_ID_PREFIX = "revision-"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    FATAL = "fatal"


class EventKind(StrEnum):
    """Which payload an event carries."""

    MESSAGE = "message"
    INFERENCE = "inference"
    ROUTING = "routing"
    GUARDRAIL = "guardrail"
    CONTROL_PLANE_CHANGE = "control_plane_change"


class InferenceStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class RoutingOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    NO_ENDPOINT = "no_endpoint"
    # Served by a fallback endpoint: the caller got an answer, so not an error.
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Links:
    """The typed ids tying an event to the other capabilities' resources; "" means not linked."""

    model_version: str = ""
    deployment: str = ""
    traffic_slot: TrafficSlot = TrafficSlot.NONE
    policy: str = ""
    policy_revision: int = 0
    trace_id: str = ""
    request_id: str = ""
    span_id: str = ""


@dataclass(frozen=True, slots=True)
class Money:
    currency_code: str
    micros: int


@dataclass(frozen=True, slots=True)
class Inference:
    provider: str
    model_version: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    latency_us: int | None
    cost: Money | None
    status: InferenceStatus
    # True when the server priced the tokens from the registry (cost was absent on input).
    cost_from_registry: bool = False


@dataclass(frozen=True, slots=True)
class Routing:
    deployment: str
    rollout: str
    slot: TrafficSlot
    endpoint: str
    outcome: RoutingOutcome
    latency_us: int | None


@dataclass(frozen=True, slots=True)
class Guardrail:
    policy: str
    revision: int
    decision: Decision
    violation_count: int
    highest_severity: Severity | None


@dataclass(frozen=True, slots=True)
class ControlPlaneChange:
    resource: str
    action: str
    actor: str
    revision: int


Payload: TypeAlias = Inference | Routing | Guardrail | ControlPlaneChange | None

_KIND_OF_PAYLOAD: Mapping[type, EventKind] = {
    Inference: EventKind.INFERENCE,
    Routing: EventKind.ROUTING,
    Guardrail: EventKind.GUARDRAIL,
    ControlPlaneChange: EventKind.CONTROL_PLANE_CHANGE,
}


@dataclass(frozen=True, slots=True)
class LogEvent:
    event_id: str
    event_time: datetime
    service: str
    level: LogLevel
    instance: str = ""
    message: str = ""
    links: Links = Links()
    attributes: Mapping[str, str] = field(default_factory=dict)
    payload: Payload = None
    # When the server committed it; None before ingestion.
    ingest_time: datetime | None = None

    @property
    def kind(self) -> EventKind:
        return EventKind.MESSAGE if self.payload is None else _KIND_OF_PAYLOAD[type(self.payload)]

    @property
    def is_error(self) -> bool:
        """Error level, or a payload that says the call failed (a fallback route still answered)."""
        if self.level in (LogLevel.ERROR, LogLevel.FATAL):
            return True
        payload = self.payload
        if isinstance(payload, Inference):
            return payload.status is not InferenceStatus.OK
        if isinstance(payload, Routing):
            return payload.outcome not in (RoutingOutcome.OK, RoutingOutcome.FALLBACK)
        return False


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One batch of one client; `sequence` 0 means unnumbered, `client_id` "" means anonymous."""

    client_id: str
    sequence: int
    dropped_since_last: int
    events: tuple[LogEvent, ...]
    # What conversion could not read from the request (an UNSPECIFIED enum, a missing time), reported by
    # the service beside every other bad field; its fields hold defaults in their place.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)


# An ingestion row: the values of columns.EVENT_COLUMNS, in order. Its event_time is in Postgres's form
# (store/pg_time.py), which the bulk pool's connections exchange.
Row: TypeAlias = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class RowBatch:
    """A batch already checked against every rule but the time window, as rows of EVENT_COLUMNS.

    The ingestion hot path: tens of thousands of events a second leave no room for an object per event,
    so events that pass every check go straight to the stored form. `unpriced` lists the rows of
    inference events without a cost, which the service prices before storing.
    """

    client_id: str
    sequence: int
    dropped_since_last: int
    rows: tuple[Row, ...]
    unpriced: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LogAck:
    """What one commit stored: the last batch's sequence, and counts over every batch it covers."""

    sequence: int
    accepted: int
    duplicates: int
    batches: int


class GroupBy(StrEnum):
    SERVICE = "service"
    MODEL_VERSION = "model_version"
    DEPLOYMENT = "deployment"
    TRAFFIC_SLOT = "traffic_slot"
    POLICY = "policy"
    KIND = "kind"
    TIME_BUCKET = "time_bucket"


@dataclass(frozen=True)
class AggregateQuery:
    filter_text: str
    group_by: tuple[GroupBy, ...]
    # Width of TIME_BUCKET groups; 0 when not grouping by time.
    bucket_seconds: int
    currency_code: str
    # What conversion could not read from the request (an UNSPECIFIED enum, a missing time), reported by
    # the service beside every other bad field; its fields hold defaults in their place.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class LogGroup:
    """Metrics of one group; keys are "" (or None) when the group is not split by them."""

    service: str
    model_version: str
    deployment: str
    traffic_slot: TrafficSlot
    policy: str
    kind: EventKind | None
    bucket_start: datetime | None
    count: int
    error_count: int
    latency_count: int
    # Exact nearest-rank percentiles (percentile_disc) in microseconds; None without latencies.
    latency_p50_us: int | None
    latency_p95_us: int | None
    latency_p99_us: int | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost: Money
    guardrail_checks: int
    guardrail_blocks: int

    @property
    def error_rate(self) -> float:
        return self.error_count / self.count if self.count else 0.0

    @property
    def guardrail_block_rate(self) -> float:
        return self.guardrail_blocks / self.guardrail_checks if self.guardrail_checks else 0.0


@dataclass(frozen=True)
class IngestionStats:
    client_id: str
    received: int
    accepted: int
    duplicates: int
    dropped: int
    sequence_gaps: int
    batches: int
    last_sequence: int
    last_batch_time: datetime | None


def _last_page(_: int) -> str:
    return ""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_page_token: str
    # The page token that goes on after items[i]: for a response that carries only items[: i + 1].
    token_after: Callable[[int], str] = _last_page


class WindowMeasure(StrEnum):
    """What a slot comparison counts: which events, their value and what is a hit (for rates)."""

    # Inference events; a hit is an error.
    ERRORS = "errors"
    # Inference events with a latency; the value is the latency in microseconds.
    LATENCY = "latency"
    # Inference events priced in the query's currency; the value is the cost in micro-units.
    COST = "cost"
    # Inference events; the value is input + output tokens.
    TOKENS = "tokens"
    # Guardrail events of the query's policy; a hit is a BLOCK.
    BLOCKS = "blocks"
    # Guardrail events of the query's policy; a hit is a REDACT.
    REDACTS = "redacts"
    # Routing events; a hit is a failed call (error, timeout, no endpoint).
    ROUTING_FAILURES = "routing_failures"


@dataclass(frozen=True)
class SlotWindowQuery:
    """The events of a deployment's canary and stable slots in [start, end), measured one way."""

    deployment: str
    measure: WindowMeasure
    start: datetime
    end: datetime
    currency_code: str = ""
    policy: str = ""
    # LATENCY: the quantile taken of each slot, and the canary's bar in microseconds: bar_value, or
    # bar_ratio x the stable slot's quantile + bar_margin.
    quantile: float = 0.5
    bar_value: float | None = None
    bar_ratio: float | None = None
    bar_margin: float = 0.0


@dataclass(frozen=True)
class SlotFigures:
    """One slot's events in a window: how many, how many hits, the sum and sum of squares of the values,
    the quantile asked for (LATENCY), and how many values are above the bar (the canary's bar for the
    canary, the slot's own quantile for the stable slot)."""

    samples: int
    hits: int
    total: float
    squares: float
    quantile: float | None
    over_bar: int


@dataclass(frozen=True)
class SlotComparison:
    canary: SlotFigures
    stable: SlotFigures
    # The canary's latency bar used (LATENCY), in microseconds; None otherwise or with no stable quantile.
    bar: float | None = None
