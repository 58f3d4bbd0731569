"""Conversions between the log collector's proto messages and its domain values, in one place.

Enum values that are UNSPECIFIED or unknown on input, and missing required messages, are refused here
with the field's path (every problem of a batch, up to a bound), so no proto enum number reaches the
service. The rules on values (lengths, patterns, time window) are the service's, in columns.py and
validation.py; the hot path from messages straight to rows is rows.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.server.deployments.convert import SLOT_FROM_PROTO, SLOT_TO_PROTO
from modelplane.server.errors import FieldViolation
from modelplane.server.guardrails.convert import (
    DECISION_FROM_PROTO,
    DECISION_TO_PROTO,
    SEVERITY_FROM_PROTO,
    SEVERITY_TO_PROTO,
)
from modelplane.server.logs import enums
from modelplane.server.logs.domain import (
    MAX_RESPONSE_BYTES,
    AggregateQuery,
    ControlPlaneChange,
    Decision,
    GroupBy,
    Guardrail,
    Inference,
    InferenceStatus,
    IngestionStats,
    Links,
    LogAck,
    LogBatch,
    LogEvent,
    LogGroup,
    LogLevel,
    Money,
    Page,
    Payload,
    Routing,
    RoutingOutcome,
    Severity,
    TrafficSlot,
)
from modelplane.server.logs.validation import MAX_REPORTED_VIOLATIONS
from modelplane.server.proto_time import check_duration, check_timestamp
from modelplane.v1 import common_pb2, guardrails_pb2
from modelplane.v1 import logs_pb2 as pb

E = TypeVar("E")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    delta = moment - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _micros(d: duration_pb2.Duration, path: str, found: list[FieldViolation]) -> int | None:
    violation = check_duration(d, path)
    if violation is not None:
        found.append(violation)
        return None
    return d.seconds * 1_000_000 + d.nanos // 1000


def _duration(micros: int) -> duration_pb2.Duration:
    seconds, rest = divmod(micros, 1_000_000)
    return duration_pb2.Duration(seconds=seconds, nanos=rest * 1000)


def _enum(found: list[FieldViolation], path: str, table: Mapping[Any, E], number: int, name: str) -> E | None:
    value = table.get(number)
    if value is None:
        found.append(FieldViolation(path, f"must be a {name} value, not UNSPECIFIED or unknown ({number})"))
    return value


def _payload(message: pb.LogEvent, prefix: str, found: list[FieldViolation]) -> Payload:
    which = message.WhichOneof("payload")
    if which is None:
        return None
    if which == "inference":
        p = message.inference
        path = f"{prefix}.inference"
        status = _enum(found, f"{path}.status", enums.STATUS_FROM_PROTO, p.status, "InferenceStatus")
        return Inference(
            provider=p.provider,
            model_version=p.model_version,
            input_tokens=p.input_tokens,
            output_tokens=p.output_tokens,
            cached_input_tokens=p.cached_input_tokens,
            reasoning_tokens=p.reasoning_tokens,
            latency_us=_micros(p.latency, f"{path}.latency", found) if p.HasField("latency") else None,
            cost=Money(p.cost.currency_code, p.cost.micros) if p.HasField("cost") else None,
            status=status or InferenceStatus.OK,
        )
    if which == "routing":
        r = message.routing
        path = f"{prefix}.routing"
        outcome = _enum(found, f"{path}.outcome", enums.OUTCOME_FROM_PROTO, r.outcome, "RoutingOutcome")
        slot = _enum(found, f"{path}.slot", SLOT_FROM_PROTO, r.slot, "TrafficSlot")
        return Routing(
            deployment=r.deployment,
            rollout=r.rollout,
            slot=slot or TrafficSlot.NONE,
            endpoint=r.endpoint,
            outcome=outcome or RoutingOutcome.OK,
            latency_us=_micros(r.latency, f"{path}.latency", found) if r.HasField("latency") else None,
        )
    if which == "guardrail":
        g = message.guardrail
        path = f"{prefix}.guardrail"
        decision = _enum(found, f"{path}.decision", DECISION_FROM_PROTO, g.decision, "Decision")
        severity: Severity | None = None
        if g.highest_severity != guardrails_pb2.SEVERITY_UNSPECIFIED:
            severity = _enum(
                found, f"{path}.highest_severity", SEVERITY_FROM_PROTO, g.highest_severity, "Severity"
            )
        return Guardrail(
            policy=g.policy,
            revision=g.revision,
            decision=decision or Decision.ALLOW,
            violation_count=g.violation_count,
            highest_severity=severity,
        )
    c = message.control_plane_change
    return ControlPlaneChange(resource=c.resource, action=c.action, actor=c.actor, revision=c.revision)


def event(message: pb.LogEvent, prefix: str, found: list[FieldViolation]) -> LogEvent:
    """The domain event; appends what cannot be converted to `found` (the result is then discarded)."""
    has_time = message.HasField("event_time")
    time_violation = check_timestamp(message.event_time, f"{prefix}.event_time") if has_time else None
    if time_violation is not None:
        found.append(time_violation)
        event_time = _EPOCH
    elif has_time:
        event_time = _time(message.event_time)
    else:
        found.append(FieldViolation(f"{prefix}.event_time", "is required"))
        event_time = _EPOCH
    level = enums.LEVEL_FROM_PROTO.get(message.level)
    if level is None:
        found.append(FieldViolation(f"{prefix}.level", "must be a LogLevel value, not UNSPECIFIED"))
        level = LogLevel.INFO
    links = Links()
    if message.HasField("links"):
        m = message.links
        slot = SLOT_FROM_PROTO.get(m.traffic_slot)
        if slot is None:
            found.append(FieldViolation(f"{prefix}.links.traffic_slot", "must be STABLE, CANARY or unset"))
            slot = TrafficSlot.NONE
        links = Links(
            model_version=m.model_version,
            deployment=m.deployment,
            traffic_slot=slot,
            policy=m.policy,
            policy_revision=m.policy_revision,
            trace_id=m.trace_id,
            request_id=m.request_id,
            span_id=m.span_id,
        )
    return LogEvent(
        event_id=message.event_id,
        event_time=event_time,
        service=message.service,
        level=level,
        instance=message.instance,
        message=message.message,
        links=links,
        attributes=dict(message.attributes),
        payload=_payload(message, prefix, found),
    )


def batch(message: pb.LogBatch, prefix: str) -> LogBatch:
    """The domain batch; every field that cannot be converted is named in its `refused` (the service
    reports them beside the batch's other bad fields), up to MAX_REPORTED_VIOLATIONS."""
    found: list[FieldViolation] = []
    events: list[LogEvent] = []
    for i, item in enumerate(message.events):
        events.append(event(item, f"{prefix}.events[{i}]", found))
        if len(found) >= MAX_REPORTED_VIOLATIONS:
            break
    return LogBatch(
        client_id=message.client_id,
        sequence=message.sequence,
        dropped_since_last=message.dropped_since_last,
        events=tuple(events),
        refused=tuple(found[:MAX_REPORTED_VIOLATIONS]),
    )


def ack_to_proto(ack: LogAck) -> pb.LogAck:
    return pb.LogAck(
        sequence=ack.sequence, accepted=ack.accepted, duplicates=ack.duplicates, batches=ack.batches
    )


def event_to_proto(e: LogEvent) -> pb.LogEvent:
    links = e.links
    message = pb.LogEvent(
        event_id=e.event_id,
        event_time=timestamp(e.event_time),
        service=e.service,
        instance=e.instance,
        level=enums.LEVEL_TO_PROTO[e.level],
        message=e.message,
        links=common_pb2.EventLinks(
            model_version=links.model_version,
            deployment=links.deployment,
            traffic_slot=SLOT_TO_PROTO[links.traffic_slot],
            policy=links.policy,
            policy_revision=links.policy_revision,
            trace_id=links.trace_id,
            request_id=links.request_id,
            span_id=links.span_id,
        ),
        attributes=dict(e.attributes),
    )
    if e.ingest_time is not None:
        message.ingest_time.CopyFrom(timestamp(e.ingest_time))
    p = e.payload
    if isinstance(p, Inference):
        message.inference.CopyFrom(
            pb.InferencePayload(
                provider=p.provider,
                model_version=p.model_version,
                input_tokens=p.input_tokens,
                output_tokens=p.output_tokens,
                cached_input_tokens=p.cached_input_tokens,
                reasoning_tokens=p.reasoning_tokens,
                status=enums.STATUS_TO_PROTO[p.status],
                cost_from_registry=p.cost_from_registry,
            )
        )
        if p.latency_us is not None:
            message.inference.latency.CopyFrom(_duration(p.latency_us))
        if p.cost is not None:
            message.inference.cost.CopyFrom(
                common_pb2.Money(currency_code=p.cost.currency_code, micros=p.cost.micros)
            )
    elif isinstance(p, Routing):
        message.routing.CopyFrom(
            pb.RoutingPayload(
                deployment=p.deployment,
                rollout=p.rollout,
                slot=SLOT_TO_PROTO[p.slot],
                endpoint=p.endpoint,
                outcome=enums.OUTCOME_TO_PROTO[p.outcome],
            )
        )
        if p.latency_us is not None:
            message.routing.latency.CopyFrom(_duration(p.latency_us))
    elif isinstance(p, Guardrail):
        message.guardrail.CopyFrom(
            pb.GuardrailPayload(
                policy=p.policy,
                revision=p.revision,
                decision=DECISION_TO_PROTO[p.decision],
                violation_count=p.violation_count,
                highest_severity=(
                    guardrails_pb2.SEVERITY_UNSPECIFIED
                    if p.highest_severity is None
                    else SEVERITY_TO_PROTO[p.highest_severity]
                ),
            )
        )
    elif isinstance(p, ControlPlaneChange):
        message.control_plane_change.CopyFrom(
            pb.ControlPlaneChange(resource=p.resource, action=p.action, actor=p.actor, revision=p.revision)
        )
    return message


# A repeated field's element costs its tag and its length beside its own bytes.
_ELEMENT_OVERHEAD = 6


def query_response(page: Page[LogEvent]) -> pb.QueryLogEventsResponse:
    """The page's events, ended early (with the token that goes on after the last one sent) where more
    would pass MAX_RESPONSE_BYTES."""
    messages = event_messages(page.items)
    if len(messages) > 1:
        return pb.QueryLogEventsResponse(
            events=messages[0], next_page_token=page.token_after(len(messages[0]) - 1)
        )
    return pb.QueryLogEventsResponse(
        events=messages[0] if messages else [], next_page_token=page.next_page_token
    )


def group_size(group: LogGroup) -> int:
    """The bytes the group adds to a response's repeated groups."""
    return group_to_proto(group).ByteSize() + _ELEMENT_OVERHEAD


def event_messages(events: Sequence[LogEvent]) -> list[list[pb.LogEvent]]:
    """The events in messages of at most MAX_RESPONSE_BYTES of events each (one event at least)."""
    messages: list[list[pb.LogEvent]] = []
    used = 0
    for e in events:
        message = event_to_proto(e)
        size = message.ByteSize() + _ELEMENT_OVERHEAD
        if not messages or (used + size > MAX_RESPONSE_BYTES and messages[-1]):
            messages.append([])
            used = 0
        messages[-1].append(message)
        used += size
    return messages


def aggregate_query(request: pb.AggregateLogEventsRequest) -> AggregateQuery:
    found: list[FieldViolation] = []
    groups: list[GroupBy] = []
    for i, number in enumerate(request.group_by):
        group = enums.GROUP_FROM_PROTO.get(number)
        if group is None:
            found.append(FieldViolation(f"group_by[{i}]", "must be a LogGroupBy value, not UNSPECIFIED"))
        elif group in groups:
            found.append(FieldViolation(f"group_by[{i}]", f"repeats {group.name}"))
        else:
            groups.append(group)
    bucket_seconds = 0
    if request.HasField("bucket_width"):
        width = request.bucket_width
        if width.nanos or width.seconds <= 0 or width.seconds > 31 * 86_400:
            found.append(
                FieldViolation("bucket_width", "must be a whole number of seconds from 1 second to 31 days")
            )
        else:
            bucket_seconds = width.seconds
    if GroupBy.TIME_BUCKET in groups and not bucket_seconds and not request.HasField("bucket_width"):
        found.append(FieldViolation("bucket_width", "is required when grouping by LOG_GROUP_BY_TIME_BUCKET"))
    # The currency code is the service's to check (validation.aggregate_violations).
    return AggregateQuery(
        filter_text=request.filter,
        group_by=tuple(groups),
        bucket_seconds=bucket_seconds,
        currency_code=request.currency_code or "USD",
        refused=tuple(found),
    )


def group_to_proto(group: LogGroup) -> pb.LogGroup:
    message = pb.LogGroup(
        service=group.service,
        model_version=group.model_version,
        deployment=group.deployment,
        traffic_slot=SLOT_TO_PROTO[group.traffic_slot],
        policy=group.policy,
        kind=pb.LOG_EVENT_KIND_UNSPECIFIED if group.kind is None else enums.KIND_TO_PROTO[group.kind],
        count=group.count,
        error_count=group.error_count,
        error_rate=group.error_rate,
        latency_count=group.latency_count,
        input_tokens=group.input_tokens,
        output_tokens=group.output_tokens,
        cached_input_tokens=group.cached_input_tokens,
        reasoning_tokens=group.reasoning_tokens,
        cost=common_pb2.Money(currency_code=group.cost.currency_code, micros=group.cost.micros),
        guardrail_checks=group.guardrail_checks,
        guardrail_blocks=group.guardrail_blocks,
        guardrail_block_rate=group.guardrail_block_rate,
    )
    if group.bucket_start is not None:
        message.bucket_start.CopyFrom(timestamp(group.bucket_start))
    for field, value in (
        ("latency_p50", group.latency_p50_us),
        ("latency_p95", group.latency_p95_us),
        ("latency_p99", group.latency_p99_us),
    ):
        if value is not None:
            getattr(message, field).CopyFrom(_duration(value))
    return message


def stats_to_proto(stats: IngestionStats) -> pb.IngestionStats:
    message = pb.IngestionStats(
        client_id=stats.client_id,
        received=stats.received,
        accepted=stats.accepted,
        duplicates=stats.duplicates,
        dropped=stats.dropped,
        sequence_gaps=stats.sequence_gaps,
        batches=stats.batches,
        last_sequence=stats.last_sequence,
    )
    if stats.last_batch_time is not None:
        message.last_batch_time.CopyFrom(timestamp(stats.last_batch_time))
    return message
