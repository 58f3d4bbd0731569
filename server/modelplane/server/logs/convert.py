"""Conversions between the log collector's proto messages and its domain values, in one place.

Enum values that are UNSPECIFIED or unknown on input, and missing required messages, are refused here
with the field's path (every problem of a batch, up to a bound), so no proto enum number reaches the
service. The rules on values (lengths, patterns, time window) are the service's, in validation.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.field_rules import CURRENCY_CODE
from modelplane.server.logs.domain import (
    CONTROL_PLANE_EVENT_ID_PREFIX,
    CONTROL_PLANE_SERVICE,
    MAX_BATCH_EVENTS,
    MAX_RESPONSE_BYTES,
    AggregateQuery,
    ControlPlaneChange,
    Decision,
    EventKind,
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
    Payload,
    Routing,
    RoutingOutcome,
    Row,
    RowBatch,
    Severity,
    TrafficSlot,
)
from modelplane.server.logs.validation import (
    ATTRIBUTE_KEY,
    EVENT_ID,
    MAX_ATTRIBUTE_VALUE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_DROPPED_PER_BATCH,
    MAX_ID_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_NAME_LENGTH,
    MAX_REPORTED_VIOLATIONS,
    SERVICE_NAME,
)
from modelplane.server.nul_characters import refuse_nul_characters
from modelplane.server.proto_time import MAX_DURATION_SECONDS, MAX_SECONDS, MIN_SECONDS, duration_valid
from modelplane.server.store.pg_time import PG_EPOCH_UNIX_SECONDS
from modelplane.v1 import common_pb2, guardrails_pb2
from modelplane.v1 import logs_pb2 as pb

E = TypeVar("E")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_LEVEL_TO_PROTO = {
    LogLevel.DEBUG: pb.LOG_LEVEL_DEBUG,
    LogLevel.INFO: pb.LOG_LEVEL_INFO,
    LogLevel.WARNING: pb.LOG_LEVEL_WARNING,
    LogLevel.ERROR: pb.LOG_LEVEL_ERROR,
    LogLevel.FATAL: pb.LOG_LEVEL_FATAL,
}
_LEVEL_FROM_PROTO = {number: level for level, number in _LEVEL_TO_PROTO.items()}
_KIND_TO_PROTO = {
    EventKind.MESSAGE: pb.LOG_EVENT_KIND_MESSAGE,
    EventKind.INFERENCE: pb.LOG_EVENT_KIND_INFERENCE,
    EventKind.ROUTING: pb.LOG_EVENT_KIND_ROUTING,
    EventKind.GUARDRAIL: pb.LOG_EVENT_KIND_GUARDRAIL,
    EventKind.CONTROL_PLANE_CHANGE: pb.LOG_EVENT_KIND_CONTROL_PLANE_CHANGE,
}
_STATUS_TO_PROTO = {
    InferenceStatus.OK: pb.INFERENCE_STATUS_OK,
    InferenceStatus.ERROR: pb.INFERENCE_STATUS_ERROR,
    InferenceStatus.TIMEOUT: pb.INFERENCE_STATUS_TIMEOUT,
    InferenceStatus.CANCELLED: pb.INFERENCE_STATUS_CANCELLED,
}
_STATUS_FROM_PROTO = {number: s for s, number in _STATUS_TO_PROTO.items()}
_OUTCOME_TO_PROTO = {
    RoutingOutcome.OK: pb.ROUTING_OUTCOME_OK,
    RoutingOutcome.ERROR: pb.ROUTING_OUTCOME_ERROR,
    RoutingOutcome.TIMEOUT: pb.ROUTING_OUTCOME_TIMEOUT,
    RoutingOutcome.NO_ENDPOINT: pb.ROUTING_OUTCOME_NO_ENDPOINT,
    RoutingOutcome.FALLBACK: pb.ROUTING_OUTCOME_FALLBACK,
}
_OUTCOME_FROM_PROTO = {number: o for o, number in _OUTCOME_TO_PROTO.items()}
_SLOT_TO_PROTO = {
    TrafficSlot.NONE: common_pb2.TRAFFIC_SLOT_UNSPECIFIED,
    TrafficSlot.STABLE: common_pb2.TRAFFIC_SLOT_STABLE,
    TrafficSlot.CANARY: common_pb2.TRAFFIC_SLOT_CANARY,
}
_SLOT_FROM_PROTO = {number: s for s, number in _SLOT_TO_PROTO.items()}
_DECISION_TO_PROTO = {
    Decision.ALLOW: guardrails_pb2.DECISION_ALLOW,
    Decision.REDACT: guardrails_pb2.DECISION_REDACT,
    Decision.BLOCK: guardrails_pb2.DECISION_BLOCK,
}
_DECISION_FROM_PROTO = {number: d for d, number in _DECISION_TO_PROTO.items()}
_SEVERITY_TO_PROTO = {
    Severity.INFO: guardrails_pb2.SEVERITY_INFO,
    Severity.WARNING: guardrails_pb2.SEVERITY_WARNING,
    Severity.ERROR: guardrails_pb2.SEVERITY_ERROR,
    Severity.CRITICAL: guardrails_pb2.SEVERITY_CRITICAL,
}
_SEVERITY_FROM_PROTO = {number: s for s, number in _SEVERITY_TO_PROTO.items()}
_GROUP_TO_PROTO = {
    GroupBy.SERVICE: pb.LOG_GROUP_BY_SERVICE,
    GroupBy.MODEL_VERSION: pb.LOG_GROUP_BY_MODEL_VERSION,
    GroupBy.DEPLOYMENT: pb.LOG_GROUP_BY_DEPLOYMENT,
    GroupBy.TRAFFIC_SLOT: pb.LOG_GROUP_BY_TRAFFIC_SLOT,
    GroupBy.POLICY: pb.LOG_GROUP_BY_POLICY,
    GroupBy.KIND: pb.LOG_GROUP_BY_KIND,
    GroupBy.TIME_BUCKET: pb.LOG_GROUP_BY_TIME_BUCKET,
}
_GROUP_FROM_PROTO = {number: g for g, number in _GROUP_TO_PROTO.items()}


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    delta = moment - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _micros(d: duration_pb2.Duration, path: str, found: list[FieldViolation]) -> int | None:
    if not duration_valid(d):
        found.append(FieldViolation(path, "must be a valid duration: nanos within one second, same sign"))
        return None
    return d.seconds * 1_000_000 + d.nanos // 1000


def _time_valid(ts: timestamp_pb2.Timestamp) -> bool:
    return MIN_SECONDS <= ts.seconds <= MAX_SECONDS and 0 <= ts.nanos <= 999_999_999


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
        status = _enum(found, f"{path}.status", _STATUS_FROM_PROTO, p.status, "InferenceStatus")
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
        outcome = _enum(found, f"{path}.outcome", _OUTCOME_FROM_PROTO, r.outcome, "RoutingOutcome")
        slot = _enum(found, f"{path}.slot", _SLOT_FROM_PROTO, r.slot, "TrafficSlot")
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
        decision = _enum(found, f"{path}.decision", _DECISION_FROM_PROTO, g.decision, "Decision")
        severity: Severity | None = None
        if g.highest_severity != guardrails_pb2.SEVERITY_UNSPECIFIED:
            severity = _enum(
                found, f"{path}.highest_severity", _SEVERITY_FROM_PROTO, g.highest_severity, "Severity"
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
    if message.HasField("event_time") and not _time_valid(message.event_time):
        found.append(FieldViolation(f"{prefix}.event_time", "must be a timestamp between 0001 and 9999"))
        event_time = _EPOCH
    elif message.HasField("event_time"):
        event_time = _time(message.event_time)
    else:
        found.append(FieldViolation(f"{prefix}.event_time", "is required"))
        event_time = _EPOCH
    level = _LEVEL_FROM_PROTO.get(message.level)
    if level is None:
        found.append(FieldViolation(f"{prefix}.level", "must be a LogLevel value, not UNSPECIFIED"))
        level = LogLevel.INFO
    links = Links()
    if message.HasField("links"):
        m = message.links
        slot = _SLOT_FROM_PROTO.get(m.traffic_slot)
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


def batch(message: pb.LogBatch, prefix: str, *, metadata: dict[str, str] | None = None) -> LogBatch:
    """The domain batch; InvalidArgument naming every field that cannot be converted."""
    found: list[FieldViolation] = []
    events: list[LogEvent] = []
    for i, item in enumerate(message.events):
        events.append(event(item, f"{prefix}.events[{i}]", found))
        if len(found) >= MAX_REPORTED_VIOLATIONS:
            break
    if found:
        raise InvalidArgument(found[:MAX_REPORTED_VIOLATIONS], metadata=metadata)
    return LogBatch(
        client_id=message.client_id,
        sequence=message.sequence,
        dropped_since_last=message.dropped_since_last,
        events=tuple(events),
    )


# The stored forms of proto enum numbers, for the rows of the ingestion hot path.
_LEVEL_STORED = {number: level.value for number, level in _LEVEL_FROM_PROTO.items()}
_ERROR_LEVELS = frozenset({pb.LOG_LEVEL_ERROR, pb.LOG_LEVEL_FATAL})
_SLOT_STORED = {number: slot.value for number, slot in _SLOT_FROM_PROTO.items()}
_STATUS_STORED = {number: status.value for number, status in _STATUS_FROM_PROTO.items()}
_OUTCOME_STORED = {number: outcome.value for number, outcome in _OUTCOME_FROM_PROTO.items()}
_OUTCOME_NOT_ERROR = frozenset({pb.ROUTING_OUTCOME_OK, pb.ROUTING_OUTCOME_FALLBACK})
_DECISION_STORED = {number: decision.name.lower() for number, decision in _DECISION_FROM_PROTO.items()}
_SEVERITY_STORED = {number: severity.name.lower() for number, severity in _SEVERITY_FROM_PROTO.items()}
_SEVERITY_STORED[guardrails_pb2.SEVERITY_UNSPECIFIED] = ""
_NUL = "\x00"


# Service names and currency codes passed their pattern once; a stream repeats the same few, and a set
# lookup costs a fifth of a match. Cleared when full, so a client cycling through names cannot grow them.
_SERVICES_SEEN: set[str] = set()
_CURRENCIES_SEEN: set[str] = set()
_SEEN_MAX = 1024


def _seen(seen: set[str], value: str, pattern: re.Pattern[str]) -> bool:
    """Whether `value` matches `pattern`; remembered in `seen` when it does."""
    if not pattern.fullmatch(value):
        return False
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen.add(value)
    return True


class _Refused(Exception):
    """An event the hot path does not take; the batch goes the long way, which names every problem."""


def _fast_row(m: pb.LogEvent) -> tuple[Row, bool]:
    """The ingestion row of an event that follows every rule but the time window, and whether it is an
    inference event without a cost; _Refused for anything else.

    The same rules as `event` and validation.checked_event, read once from the message with no object
    per event; a refused event is then converted and checked the long way, so what a client is told
    about a bad batch does not depend on this path. That includes the NUL character, which the server
    checks for in every other request before its handler runs (interceptors.py): here it is looked for
    in each text stored that no pattern already excludes it from.
    """
    ts = m.event_time
    seconds, nanos = ts.seconds, ts.nanos
    # An unset time reads as the epoch, so only the epoch needs the (slower) question of presence.
    if not (seconds or nanos or m.HasField("event_time")) or not (
        MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos <= 999_999_999
    ):
        raise _Refused
    event_time = (seconds - PG_EPOCH_UNIX_SECONDS) * 1_000_000 + nanos // 1000
    event_id = m.event_id
    service = m.service
    instance = m.instance
    text = m.message
    level_number = m.level
    level = _LEVEL_STORED.get(level_number)
    if (
        level is None
        or not EVENT_ID.fullmatch(event_id)
        or event_id.startswith(CONTROL_PLANE_EVENT_ID_PREFIX)
        or (service not in _SERVICES_SEEN and not _seen(_SERVICES_SEEN, service, SERVICE_NAME))
        or service == CONTROL_PLANE_SERVICE
        or len(instance) > MAX_ID_LENGTH
        or len(text) > MAX_MESSAGE_LENGTH
        or _NUL in instance
        or _NUL in text
    ):
        raise _Refused
    model_version = deployment = policy = trace_id = request_id = ""
    slot = ""
    policy_revision = 0
    if m.HasField("links"):
        links = m.links
        model_version, deployment, policy = links.model_version, links.deployment, links.policy
        trace_id, request_id, policy_revision = links.trace_id, links.request_id, links.policy_revision
        found_slot = _SLOT_STORED.get(links.traffic_slot)
        if (
            found_slot is None
            or len(model_version) > MAX_NAME_LENGTH
            or len(deployment) > MAX_NAME_LENGTH
            or len(policy) > MAX_NAME_LENGTH
            or len(trace_id) > MAX_ID_LENGTH
            or len(request_id) > MAX_ID_LENGTH
            or policy_revision < 0
            or _NUL in model_version
            or _NUL in deployment
            or _NUL in policy
            or _NUL in trace_id
            or _NUL in request_id
        ):
            raise _Refused
        slot = found_slot
    attributes = "{}"
    if m.attributes:
        items = dict(m.attributes)
        if len(items) > MAX_ATTRIBUTES:
            raise _Refused
        for key, value in items.items():
            if not ATTRIBUTE_KEY.fullmatch(key) or len(value) > MAX_ATTRIBUTE_VALUE_LENGTH or _NUL in value:
                raise _Refused
        attributes = json.dumps(items, separators=(",", ":"))
    is_error = level_number in _ERROR_LEVELS
    unpriced = False
    which = m.WhichOneof("payload")
    if which is None:
        return (
            event_time, event_id, service, instance, level, "message", text, model_version, deployment,
            slot, policy, policy_revision, trace_id, request_id, attributes,
            None, None, None, None, None, None, None, None, None, None, None, None, None, None, None,
            None, None, None, None, is_error,
        ), False  # fmt: skip
    if which == "inference":
        p = m.inference
        status = _STATUS_STORED.get(p.status)
        provider, version = p.provider, p.model_version
        tokens_in, tokens_out = p.input_tokens, p.output_tokens
        cached, reasoning = p.cached_input_tokens, p.reasoning_tokens
        if (
            status is None
            or len(provider) > 63
            or tokens_in < 0
            or tokens_out < 0
            or cached < 0
            or reasoning < 0
            or cached > tokens_in
            or reasoning > tokens_out
            or (version and model_version and version != model_version)
            or _NUL in provider
            or _NUL in version
        ):
            raise _Refused
        d = p.latency
        d_seconds, d_nanos = d.seconds, d.nanos
        latency: int | None = None
        if d_seconds or d_nanos:
            # A valid Duration that is not negative: both parts at or above zero, each within its bound.
            if not (0 <= d_seconds <= MAX_DURATION_SECONDS and 0 <= d_nanos <= 999_999_999):
                raise _Refused
            latency = d_seconds * 1_000_000 + d_nanos // 1000
        elif p.HasField("latency"):
            latency = 0
        money = p.cost
        currency: str | None = money.currency_code
        cost_micros: int | None = money.micros
        if currency:
            if cost_micros < 0 or (  # type: ignore[operator]
                currency not in _CURRENCIES_SEEN and not _seen(_CURRENCIES_SEEN, currency, CURRENCY_CODE)
            ):
                raise _Refused
        elif p.HasField("cost"):
            raise _Refused  # a cost needs its currency
        else:
            cost_micros = currency = None
            unpriced = True
        return (
            event_time, event_id, service, instance, level, "inference", text, model_version or version,
            deployment, slot, policy, policy_revision, trace_id, request_id, attributes,
            provider, tokens_in, tokens_out, cached, reasoning, latency, cost_micros, currency, False,
            status, None, None, None, None, None, None, None, None, None,
            is_error or status != "ok",
        ), unpriced  # fmt: skip
    if which == "routing":
        r = m.routing
        outcome = _OUTCOME_STORED.get(r.outcome)
        route_slot = _SLOT_STORED.get(r.slot)
        rollout, endpoint, route_deployment = r.rollout, r.endpoint, r.deployment
        if (
            outcome is None
            or route_slot is None
            or len(rollout) > MAX_ID_LENGTH
            or len(endpoint) > MAX_NAME_LENGTH
            or (route_deployment and deployment and route_deployment != deployment)
            or (route_slot and slot and route_slot != slot)
            or _NUL in rollout
            or _NUL in endpoint
            or _NUL in route_deployment
        ):
            raise _Refused
        d = r.latency
        d_seconds, d_nanos = d.seconds, d.nanos
        latency = None
        if d_seconds or d_nanos:
            if not (0 <= d_seconds <= MAX_DURATION_SECONDS and 0 <= d_nanos <= 999_999_999):
                raise _Refused
            latency = d_seconds * 1_000_000 + d_nanos // 1000
        elif r.HasField("latency"):
            latency = 0
        return (
            event_time, event_id, service, instance, level, "routing", text, model_version,
            deployment or route_deployment, slot or route_slot, policy, policy_revision, trace_id,
            request_id, attributes,
            None, None, None, None, None, latency, None, None, None,
            outcome, rollout, endpoint, None, None, None, None, None, None, None,
            is_error or r.outcome not in _OUTCOME_NOT_ERROR,
        ), False  # fmt: skip
    if which == "guardrail":
        g = m.guardrail
        decision = _DECISION_STORED.get(g.decision)
        severity = _SEVERITY_STORED.get(g.highest_severity)
        check_policy, revision, violations = g.policy, g.revision, g.violation_count
        if (
            decision is None
            or severity is None
            or revision < 0
            or violations < 0
            or (check_policy and policy and check_policy != policy)
            or (revision and policy_revision and revision != policy_revision)
            or _NUL in check_policy
        ):
            raise _Refused
        return (
            event_time, event_id, service, instance, level, "guardrail", text, model_version, deployment,
            slot, policy or check_policy, policy_revision or revision, trace_id, request_id, attributes,
            None, None, None, None, None, None, None, None, None,
            None, None, None, decision, violations, severity, None, None, None, None,
            is_error,
        ), False  # fmt: skip
    raise _Refused  # a control-plane change: the server's own, never a client's


def _header_fits(message: pb.LogBatch, *, client_required: bool) -> bool:
    """Whether the batch's own fields follow the rules, so its events may take the hot path."""
    client_id = message.client_id
    return (
        len(message.events) <= MAX_BATCH_EVENTS
        and message.sequence >= 0
        and 0 <= message.dropped_since_last <= MAX_DROPPED_PER_BATCH
        and bool(EVENT_ID.fullmatch(client_id) if client_id or client_required else True)
    )


def _add_rows(
    events: Sequence[pb.LogEvent], start: int, stop: int, rows: list[Row], unpriced: list[int]
) -> bool:
    """Appends the rows of events[start:stop]; False when one of them does not take the hot path."""
    try:
        for i in range(start, stop):
            row, needs_price = _fast_row(events[i])
            rows.append(row)
            if needs_price:
                unpriced.append(i)
    except (_Refused, OverflowError, ValueError):
        return False
    return True


def batch_rows(
    message: pb.LogBatch, prefix: str, *, client_required: bool, metadata: dict[str, str] | None = None
) -> LogBatch | RowBatch:
    """The batch as rows when every event follows the rules (all but the time window, which is the
    service's to check), else the domain batch, whose conversion and checks name every problem."""
    if _header_fits(message, client_required=client_required):
        rows: list[Row] = []
        unpriced: list[int] = []
        if _add_rows(message.events, 0, len(message.events), rows, unpriced):
            return _row_batch(message, rows, unpriced)
    return _long_way(message, prefix, metadata)


def _row_batch(message: pb.LogBatch, rows: list[Row], unpriced: list[int]) -> RowBatch:
    return RowBatch(
        message.client_id, message.sequence, message.dropped_since_last, tuple(rows), tuple(unpriced)
    )


def _long_way(message: pb.LogBatch, prefix: str, metadata: dict[str, str] | None) -> LogBatch:
    """A batch the hot path refused, converted by the rules that name every problem: first the NUL
    character, as the server reports it for any other request (the ingestion methods are exempt from
    the interceptor's check, see LogServicer.TEXT_CHECKED_METHODS), then everything else."""
    try:
        refuse_nul_characters(message, f"{prefix}.")
    except InvalidArgument as exc:
        exc.metadata.update(metadata or {})
        raise
    return batch(message, prefix, metadata=metadata)


# Events converted between two returns to the event loop in a stream. A stream's batch takes milliseconds
# to convert; done in one go it would hold up the commit of the batches before it at each of its round
# trips to Postgres, leaving the database idle, so conversion gives way this often.
STREAM_SLICE_EVENTS = 100


async def stream_batches(
    requests: AsyncIterator[pb.StreamLogEventsRequest],
) -> AsyncIterator[LogBatch | RowBatch]:
    async for request in requests:
        message = request.batch
        if _header_fits(message, client_required=True):
            rows: list[Row] = []
            unpriced: list[int] = []
            events = message.events
            for start in range(0, len(events), STREAM_SLICE_EVENTS):
                if start:
                    await asyncio.sleep(0)
                if not _add_rows(
                    events, start, min(start + STREAM_SLICE_EVENTS, len(events)), rows, unpriced
                ):
                    break
            else:
                yield _row_batch(message, rows, unpriced)
                continue
        yield _long_way(message, "batch", {"sequence": str(message.sequence)})


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
        level=_LEVEL_TO_PROTO[e.level],
        message=e.message,
        links=common_pb2.EventLinks(
            model_version=links.model_version,
            deployment=links.deployment,
            traffic_slot=_SLOT_TO_PROTO[links.traffic_slot],
            policy=links.policy,
            policy_revision=links.policy_revision,
            trace_id=links.trace_id,
            request_id=links.request_id,
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
                status=_STATUS_TO_PROTO[p.status],
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
                slot=_SLOT_TO_PROTO[p.slot],
                endpoint=p.endpoint,
                outcome=_OUTCOME_TO_PROTO[p.outcome],
            )
        )
        if p.latency_us is not None:
            message.routing.latency.CopyFrom(_duration(p.latency_us))
    elif isinstance(p, Guardrail):
        message.guardrail.CopyFrom(
            pb.GuardrailPayload(
                policy=p.policy,
                revision=p.revision,
                decision=_DECISION_TO_PROTO[p.decision],
                violation_count=p.violation_count,
                highest_severity=(
                    guardrails_pb2.SEVERITY_UNSPECIFIED
                    if p.highest_severity is None
                    else _SEVERITY_TO_PROTO[p.highest_severity]
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


def event_size(e: LogEvent) -> int:
    """The bytes the event adds to a response's repeated events."""
    return event_to_proto(e).ByteSize() + _ELEMENT_OVERHEAD


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
        group = _GROUP_FROM_PROTO.get(number)
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
    if GroupBy.TIME_BUCKET in groups and not bucket_seconds and not found:
        found.append(FieldViolation("bucket_width", "is required when grouping by LOG_GROUP_BY_TIME_BUCKET"))
    currency = request.currency_code or "USD"
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        found.append(FieldViolation("currency_code", "must be an ISO 4217 code like USD, or empty"))
    if found:
        raise InvalidArgument(found)
    return AggregateQuery(
        filter_text=request.filter,
        group_by=tuple(groups),
        bucket_seconds=bucket_seconds,
        currency_code=currency,
    )


def group_to_proto(group: LogGroup) -> pb.LogGroup:
    message = pb.LogGroup(
        service=group.service,
        model_version=group.model_version,
        deployment=group.deployment,
        traffic_slot=_SLOT_TO_PROTO[group.traffic_slot],
        policy=group.policy,
        kind=pb.LOG_EVENT_KIND_UNSPECIFIED if group.kind is None else _KIND_TO_PROTO[group.kind],
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
