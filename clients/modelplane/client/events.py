"""The seam through which clients hand their events to log collection, and the typed events they hand over.

A client that is given an `EventSink` calls `emit` once per event on its own hot path, so a sink must
return at once (queue the event, never do I/O inline) and must not raise; clients still guard every
call, because a broken sink must never break the work it observes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from modelplane.client.trace_context import current_trace_ids

EventStatus = Literal["ok", "error"]
# How a routed call ended; the values are RoutingOutcome's stored forms (modelplane.v1.logs).
RoutingOutcome = Literal["ok", "error", "timeout", "no_endpoint", "fallback"]


@runtime_checkable
class EventSink(Protocol):
    """Receives events; `emit` must never block and never raise."""

    def emit(self, event: object) -> None:
        """Take one event (typically by putting it on a bounded queue)."""
        ...


class GuardedSink:
    """How a client emits: to an optional sink, and a sink that raises loses that event, never the call it
    describes. Failures are counted in `errors`; the first is logged with its traceback on `log`."""

    __slots__ = ("errors", "log", "sink")

    def __init__(self, sink: EventSink | None, log: logging.Logger) -> None:
        self.sink = sink
        self.log = log
        self.errors = 0

    def emit(self, event: object) -> None:
        if self.sink is None:
            return
        try:
            self.sink.emit(event)
        except Exception:
            self.errors += 1
            if self.errors == 1:
                self.log.exception("event sink raised; dropping the event")


def _link_current_span(event: InferenceEvent | GuardrailEvent | RoutingEvent) -> None:
    """An event the caller gave no trace id records the current OpenTelemetry span's trace and span ids,
    taken when the event is made (the shipper converts it later, on a task of its own)."""
    if not event.trace_id:
        trace_id, span_id = current_trace_ids()
        if trace_id:
            object.__setattr__(event, "trace_id", trace_id)
            object.__setattr__(event, "span_id", span_id)


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class InferenceEvent:
    """One model call, as seen by the caller, with the typed ids that join it to the rest of the system.

    Service-independent: nothing in it is specific to the service that made the call, so every
    service's inference events can be aggregated together (latency, tokens, cost, error rate).
    """

    # model_version is the registry resource name ("models/chat/versions/3"), or "" when the call used a
    # configured model that names no registry version.
    model_version: str
    # provider names who generated ("openai", "local", ...); provider_model is the provider's model id.
    provider: str
    provider_model: str
    # model_source says how the model was chosen: "registry", "configured" or "configured_fallback".
    model_source: str
    status: EventStatus
    # latency_seconds is measured around the provider call alone.
    latency_seconds: float
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    # cost_micros is None when no prices were known; cost_currency_code is then "".
    cost_micros: int | None = None
    cost_currency_code: str = ""
    finish_reason: str = ""
    # error_type is the exception's class name when status is "error" ("ProviderError", ...).
    error_type: str = ""
    error_message: str = ""
    # trace_id is the W3C trace id of the caller's trace; request_id is the caller's id of its request.
    # span_id is the caller's span in that trace. Without a trace_id, both ids are the current
    # OpenTelemetry span's when the event is made (none when there is none).
    trace_id: str = ""
    request_id: str = ""
    span_id: str = ""
    # event_id lets log collection drop a batch that is sent twice; it is unique per event.
    event_id: str = field(default_factory=_new_event_id)
    event_time: datetime = field(default_factory=_now)
    # deployment and traffic_slot ("stable" or "canary") name the deployment slot that routed the call,
    # "" when none did: a rollout's analysis gates on inference signals read the events of its slots.
    deployment: str = ""
    traffic_slot: str = ""

    def __post_init__(self) -> None:
        _link_current_span(self)


@dataclass(frozen=True)
class GuardrailEvent:
    """One guardrail check of generated text, as seen by the caller: what was decided, by which policy
    revision, and the typed ids that join it to the model call it checked. It never holds the text itself.

    Emitted once per check, also when the monitor could not be reached (status "error", checked False),
    so violation and outage rates can be computed from the same stream.
    """

    # policy is the policy's resource name ("policies/kids-safe"); policy_revision is the revision the
    # monitor used, 0 when it did not answer.
    policy: str
    policy_revision: int
    # decision is "allow", "redact" or "block" as applied to what the caller returned; "" when no check
    # decided (the monitor did not answer and the fail mode chose).
    decision: str
    violation_count: int
    # highest_severity is "info", "warning", "error" or "critical"; "" when nothing was found.
    highest_severity: str
    # checked is False when the text went out (or was replaced) without a verdict of the monitor.
    checked: bool
    status: EventStatus
    # latency_seconds is measured around the check alone.
    latency_seconds: float
    # rule_ids lists the rules that found something, in the order the monitor reported them, once each.
    rule_ids: tuple[str, ...] = ()
    # fail_mode is "open" or "closed" when it decided the outcome because the monitor did not answer.
    fail_mode: str = ""
    error_type: str = ""
    error_message: str = ""
    model_version: str = ""
    deployment: str = ""
    # traffic_slot is "stable" or "canary" ("" when no deployment routed the call).
    traffic_slot: str = ""
    trace_id: str = ""
    request_id: str = ""
    span_id: str = ""
    event_id: str = field(default_factory=_new_event_id)
    event_time: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _link_current_span(self)


@dataclass(frozen=True)
class RoutingEvent:
    """One call that a ServiceCoordinator routed through a deployment's traffic table: where it went, why
    there, and how it ended. Emitted once per routed call, also when no endpoint could take it."""

    # deployment is the deployment's resource name ("deployments/chat-prod").
    deployment: str
    # traffic_slot is "stable" or "canary"; "" when no slot could be chosen (outcome "no_endpoint").
    traffic_slot: str
    # endpoint is the address the call went to; "" when there was none.
    endpoint: str
    # model_version is the registry version the slot serves ("models/chat/versions/3"), "" when unknown
    # (a static route that names no version).
    model_version: str
    outcome: RoutingOutcome
    # latency_seconds is measured around the endpoint call alone (0 when there was none).
    latency_seconds: float
    # rollout is the resource name of the rollout in progress when the call was routed, "" when none.
    rollout: str = ""
    # routed_by is "deployment_manager" (a table from WatchDeployment) or "static" (a configured route).
    routed_by: str = ""
    # table_revision is the revision of the traffic table used; 0 for a static route.
    table_revision: int = 0
    error_type: str = ""
    error_message: str = ""
    trace_id: str = ""
    request_id: str = ""
    span_id: str = ""
    event_id: str = field(default_factory=_new_event_id)
    event_time: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        _link_current_span(self)
