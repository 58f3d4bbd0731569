"""Turns the typed events of modelplane.client.events into LogEvent messages of modelplane.v1.logs_pb2.

`to_log_event(event, service=..., instance=...)` is what the LogShipper applies, on its own thread, to each
event it ships. Each event keeps its own event_id and event_time, so a resent event is recognised. What
the typed payload of LogEvent has no field for (the provider's model id, how the model was chosen, the
rules that fired, a guardrail check's latency) goes into a few attributes, so it is queryable as
`attributes.<key>`; an error's text goes into the message. Values are cut to the server's limits (message
4,096 characters, attribute values 256), so a long error text never gets a batch refused.

Levels: a failed call, routed call or check is ERROR; a guardrail BLOCK and a routed call served by a
fallback endpoint are WARNING; everything else INFO.

A guardrail check that the monitor did not answer (status "error", no decision) is recorded with the
decision its fail mode applied: BLOCK for fail mode "closed" (the caller returned its fallback), ALLOW
for "open" (the text went out unchecked), with attributes checked="false" and fail_mode, so it counts in
guardrail_checks and, when closed, in the block rate, and is told apart from a policy's verdict by level
ERROR and `attributes.checked`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.client.events import GuardrailEvent, InferenceEvent, RoutingEvent
from modelplane.v1 import common_pb2, guardrails_pb2, logs_pb2

__all__ = [
    "MAX_ATTRIBUTE_VALUE",
    "MAX_MESSAGE",
    "SERVICE_PATTERN",
    "guardrail_log_event",
    "inference_log_event",
    "routing_log_event",
    "to_log_event",
]

# The server's limits on LogEvent (see protos/modelplane/v1/logs.proto).
MAX_MESSAGE = 4096
MAX_ATTRIBUTE_VALUE = 256
MAX_INSTANCE = 128
MAX_ROLLOUT = 128
MAX_ENDPOINT = 256
SERVICE_PATTERN = re.compile(r"^[a-z0-9_.\-]{1,63}$")

_SLOTS: Mapping[str, common_pb2.TrafficSlot.ValueType] = {
    "": common_pb2.TRAFFIC_SLOT_UNSPECIFIED,
    "stable": common_pb2.TRAFFIC_SLOT_STABLE,
    "canary": common_pb2.TRAFFIC_SLOT_CANARY,
}
_DECISIONS: Mapping[str, guardrails_pb2.Decision.ValueType] = {
    "allow": guardrails_pb2.DECISION_ALLOW,
    "redact": guardrails_pb2.DECISION_REDACT,
    "block": guardrails_pb2.DECISION_BLOCK,
}
_FAIL_MODE_DECISIONS: Mapping[str, guardrails_pb2.Decision.ValueType] = {
    "closed": guardrails_pb2.DECISION_BLOCK,
    "open": guardrails_pb2.DECISION_ALLOW,
}
_SEVERITIES: Mapping[str, guardrails_pb2.Severity.ValueType] = {
    "": guardrails_pb2.SEVERITY_UNSPECIFIED,
    "info": guardrails_pb2.SEVERITY_INFO,
    "warning": guardrails_pb2.SEVERITY_WARNING,
    "error": guardrails_pb2.SEVERITY_ERROR,
    "critical": guardrails_pb2.SEVERITY_CRITICAL,
}
_OUTCOMES: Mapping[str, logs_pb2.RoutingOutcome.ValueType] = {
    "ok": logs_pb2.ROUTING_OUTCOME_OK,
    "error": logs_pb2.ROUTING_OUTCOME_ERROR,
    "timeout": logs_pb2.ROUTING_OUTCOME_TIMEOUT,
    "no_endpoint": logs_pb2.ROUTING_OUTCOME_NO_ENDPOINT,
    "fallback": logs_pb2.ROUTING_OUTCOME_FALLBACK,
}
# Exception class names that mean the call ran out of time, or that its caller gave up on it.
_TIMEOUT_ERRORS = frozenset({"TimeoutError", "DeadlineExceeded", "ReadTimeout", "ConnectTimeout", "Timeout"})
_CANCELLED_ERRORS = frozenset({"CancelledError", "Cancelled"})


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        # The events of events.py are made aware; a naive time from elsewhere is taken as UTC.
        value = value.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=max(seconds, 0.0)))
    return duration


def _attributes(values: Mapping[str, str]) -> dict[str, str]:
    return {key: _cut(value, MAX_ATTRIBUTE_VALUE) for key, value in values.items() if value}


def _slot(name: str) -> common_pb2.TrafficSlot.ValueType:
    try:
        return _SLOTS[name]
    except KeyError:
        raise ValueError(f"unknown traffic slot {name!r}") from None


def _inference_status(event: InferenceEvent) -> logs_pb2.InferenceStatus.ValueType:
    if event.status == "ok":
        return logs_pb2.INFERENCE_STATUS_OK
    if event.error_type in _TIMEOUT_ERRORS:
        return logs_pb2.INFERENCE_STATUS_TIMEOUT
    if event.error_type in _CANCELLED_ERRORS:
        return logs_pb2.INFERENCE_STATUS_CANCELLED
    return logs_pb2.INFERENCE_STATUS_ERROR


def inference_log_event(event: InferenceEvent, *, service: str, instance: str = "") -> logs_pb2.LogEvent:
    """The LogEvent of one model call: an InferencePayload; cost unset when the caller knew no price, so
    the server prices the tokens with the registry's prices of the version."""
    cost = None
    if event.cost_micros is not None:
        cost = common_pb2.Money(currency_code=event.cost_currency_code, micros=event.cost_micros)
    payload = logs_pb2.InferencePayload(
        provider=event.provider,
        model_version=event.model_version,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
        cached_input_tokens=event.cached_input_tokens,
        reasoning_tokens=event.reasoning_tokens,
        latency=_duration(event.latency_seconds),
        cost=cost,
        status=_inference_status(event),
    )
    where = event.model_version or event.provider_model
    if event.status == "ok":
        message = f"inference {where} ok in {event.latency_seconds * 1000:.0f} ms"
        level = logs_pb2.LOG_LEVEL_INFO
    else:
        message = f"inference {where} failed: {event.error_type}: {event.error_message}"
        level = logs_pb2.LOG_LEVEL_ERROR
    return logs_pb2.LogEvent(
        event_id=event.event_id,
        event_time=_timestamp(event.event_time),
        service=service,
        instance=instance,
        level=level,
        message=_cut(message, MAX_MESSAGE),
        links=common_pb2.EventLinks(
            model_version=event.model_version,
            deployment=event.deployment,
            traffic_slot=_slot(event.traffic_slot),
            trace_id=event.trace_id,
            request_id=event.request_id,
            span_id=event.span_id,
        ),
        attributes=_attributes(
            {
                "provider_model": event.provider_model,
                "model_source": event.model_source,
                "finish_reason": event.finish_reason,
                "error_type": event.error_type,
            }
        ),
        inference=payload,
    )


def guardrail_log_event(event: GuardrailEvent, *, service: str, instance: str = "") -> logs_pb2.LogEvent:
    """The LogEvent of one guardrail check: a GuardrailPayload (see the module doc for a check the monitor
    did not answer)."""
    if event.decision:
        try:
            decision = _DECISIONS[event.decision]
        except KeyError:
            raise ValueError(f"unknown guardrail decision {event.decision!r}") from None
    else:
        try:
            decision = _FAIL_MODE_DECISIONS[event.fail_mode]
        except KeyError:
            raise ValueError(
                f"a guardrail event without a decision needs a fail mode, not {event.fail_mode!r}"
            ) from None
    try:
        severity = _SEVERITIES[event.highest_severity]
    except KeyError:
        raise ValueError(f"unknown severity {event.highest_severity!r}") from None
    if event.status == "error":
        level = logs_pb2.LOG_LEVEL_ERROR
        message = (
            f"guardrail check by {event.policy} failed ({event.error_type}: {event.error_message}); "
            f"fail mode {event.fail_mode or 'none'} decided {guardrails_pb2.Decision.Name(decision)}"
        )
    else:
        level = (
            logs_pb2.LOG_LEVEL_WARNING
            if decision == guardrails_pb2.DECISION_BLOCK
            else logs_pb2.LOG_LEVEL_INFO
        )
        message = (
            f"guardrail {event.decision} by {event.policy} revision {event.policy_revision}: "
            f"{event.violation_count} violation(s)"
        )
    return logs_pb2.LogEvent(
        event_id=event.event_id,
        event_time=_timestamp(event.event_time),
        service=service,
        instance=instance,
        level=level,
        message=_cut(message, MAX_MESSAGE),
        links=common_pb2.EventLinks(
            model_version=event.model_version,
            deployment=event.deployment,
            traffic_slot=_slot(event.traffic_slot),
            policy=event.policy,
            policy_revision=event.policy_revision,
            trace_id=event.trace_id,
            request_id=event.request_id,
            span_id=event.span_id,
        ),
        attributes=_attributes(
            {
                "checked": "true" if event.checked else "false",
                "latency_ms": f"{event.latency_seconds * 1000:.3f}",
                "rule_ids": ",".join(event.rule_ids),
                "fail_mode": event.fail_mode,
                "error_type": event.error_type,
            }
        ),
        guardrail=logs_pb2.GuardrailPayload(
            policy=event.policy,
            revision=event.policy_revision,
            decision=decision,
            violation_count=event.violation_count,
            highest_severity=severity,
        ),
    )


def routing_log_event(event: RoutingEvent, *, service: str, instance: str = "") -> logs_pb2.LogEvent:
    """The LogEvent of one routed call: a RoutingPayload, linked to the deployment, slot and version."""
    try:
        outcome = _OUTCOMES[event.outcome]
    except KeyError:
        raise ValueError(f"unknown routing outcome {event.outcome!r}") from None
    slot = _slot(event.traffic_slot)
    target = event.endpoint or "no endpoint"
    if outcome in (logs_pb2.ROUTING_OUTCOME_OK, logs_pb2.ROUTING_OUTCOME_FALLBACK):
        level = (
            logs_pb2.LOG_LEVEL_INFO if outcome == logs_pb2.ROUTING_OUTCOME_OK else logs_pb2.LOG_LEVEL_WARNING
        )
        message = (
            f"routed {event.deployment} {event.traffic_slot or '-'} to {target}: {event.outcome} "
            f"in {event.latency_seconds * 1000:.0f} ms"
        )
    else:
        level = logs_pb2.LOG_LEVEL_ERROR
        message = f"routed {event.deployment} {event.traffic_slot or '-'} to {target}: {event.outcome}"
        if event.error_type or event.error_message:
            message += f" ({event.error_type}: {event.error_message})"
    return logs_pb2.LogEvent(
        event_id=event.event_id,
        event_time=_timestamp(event.event_time),
        service=service,
        instance=instance,
        level=level,
        message=_cut(message, MAX_MESSAGE),
        links=common_pb2.EventLinks(
            model_version=event.model_version,
            deployment=event.deployment,
            traffic_slot=slot,
            trace_id=event.trace_id,
            request_id=event.request_id,
            span_id=event.span_id,
        ),
        attributes=_attributes(
            {
                "routed_by": event.routed_by,
                "table_revision": str(event.table_revision) if event.table_revision else "",
                "error_type": event.error_type,
            }
        ),
        routing=logs_pb2.RoutingPayload(
            deployment=event.deployment,
            rollout=_cut(event.rollout, MAX_ROLLOUT),
            slot=slot,
            endpoint=_cut(event.endpoint, MAX_ENDPOINT),
            outcome=outcome,
            latency=_duration(event.latency_seconds),
        ),
    )


def _ready(event: logs_pb2.LogEvent, *, service: str, instance: str) -> logs_pb2.LogEvent:
    # A LogEvent the caller built: copied (the caller may reuse it) and completed where it left gaps.
    ready = logs_pb2.LogEvent()
    ready.CopyFrom(event)
    if not ready.service:
        ready.service = service
    if not ready.instance:
        ready.instance = instance
    if not ready.event_id:
        raise ValueError("a LogEvent needs an event_id, chosen once, so that a resend is recognised")
    if not ready.HasField("event_time"):
        ready.event_time.GetCurrentTime()
    if ready.level == logs_pb2.LOG_LEVEL_UNSPECIFIED:
        ready.level = logs_pb2.LOG_LEVEL_INFO
    return ready


_CONVERTERS: dict[type[Any], Callable[..., logs_pb2.LogEvent]] = {
    InferenceEvent: inference_log_event,
    GuardrailEvent: guardrail_log_event,
    RoutingEvent: routing_log_event,
    logs_pb2.LogEvent: _ready,
}


def to_log_event(event: object, *, service: str, instance: str = "") -> logs_pb2.LogEvent:
    """The LogEvent for `event`: an InferenceEvent, GuardrailEvent, RoutingEvent or LogEvent. Raises
    TypeError for any other type and ValueError for a value the contract has no place for."""
    converter = _CONVERTERS.get(type(event))
    if converter is None:
        raise TypeError(f"no LogEvent conversion for {type(event).__name__}")
    return converter(event, service=service, instance=instance)
