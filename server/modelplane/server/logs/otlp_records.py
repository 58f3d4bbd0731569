"""OTLP log records as modelplane log events: the mapping of the OTLP logs receiver (and its reverse, for the
exporter of stored events).

A record of a service instrumented with OpenTelemetry's GenAI conventions becomes an inference event: its
gen_ai.* attributes fill the inference payload, the resource's service.name the event's service, the
record's trace and span ids its links, and `log.record.uid` its event id, so an exporter's retry is a
duplicate and changes nothing. A record without a uid gets one from a hash of what it says, which a
retry repeats as well. Records that cannot map are named with why, never guessed at; the rest of their
request is stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from modelplane.server.logs.columns import (
    EVENT_ID,
    MAX_ATTRIBUTE_VALUE_LENGTH,
    MAX_MESSAGE_LENGTH,
    SERVICE_NAME,
)
from modelplane.server.logs.domain import (
    Inference,
    InferenceStatus,
    Links,
    LogEvent,
    LogLevel,
    Money,
)

# The client id under which ingestion counters of OTLP exports are kept (GetIngestionStats).
OTLP_CLIENT_ID = "otlp"
# Longest text read from any one attribute: longer values are cut (or, where exactness matters, refused).
MAX_ATTRIBUTE_TEXT = 1024

# Attributes of a record (or its resource) that fill the event, by OpenTelemetry name.
SERVICE_NAME_KEY = "service.name"
INSTANCE_KEY = "service.instance.id"
UID_KEY = "log.record.uid"
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
REQUEST_MODEL_KEY = "gen_ai.request.model"
RESPONSE_MODEL_KEY = "gen_ai.response.model"
INPUT_TOKENS_KEY = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS_KEY = "gen_ai.usage.output_tokens"
CACHED_INPUT_TOKENS_KEY = "gen_ai.usage.cache_read.input_tokens"
DURATION_KEY = "gen_ai.client.operation.duration"
ERROR_TYPE_KEY = "error.type"
OPERATION_KEY = "gen_ai.operation.name"
# modelplane's own links, for services that know the registry version, deployment or request they served.
MODEL_VERSION_KEY = "modelplane.model_version"
DEPLOYMENT_KEY = "modelplane.deployment"
REQUEST_ID_KEY = "modelplane.request_id"

# A record is an inference when it carries any of these.
INFERENCE_KEYS = frozenset(
    {REQUEST_MODEL_KEY, RESPONSE_MODEL_KEY, INPUT_TOKENS_KEY, OUTPUT_TOKENS_KEY, *PROVIDER_KEYS}
)
# Kept as the event's attributes, as they are (cut to the stored bound).
KEPT_ATTRIBUTES = (REQUEST_MODEL_KEY, RESPONSE_MODEL_KEY, OPERATION_KEY, ERROR_TYPE_KEY)
# error.type values that say how a call ended other than by failing.
_STATUS_OF_ERROR_TYPE = {
    "timeout": InferenceStatus.TIMEOUT,
    "cancelled": InferenceStatus.CANCELLED,
    "canceled": InferenceStatus.CANCELLED,
}
# OTLP's severity numbers in ranges of four: TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
_LEVELS = (LogLevel.DEBUG, LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARNING, LogLevel.ERROR, LogLevel.FATAL)
_SEVERITY_OF_LEVEL = {
    LogLevel.DEBUG: (logs_pb2.SEVERITY_NUMBER_DEBUG, "DEBUG"),
    LogLevel.INFO: (logs_pb2.SEVERITY_NUMBER_INFO, "INFO"),
    LogLevel.WARNING: (logs_pb2.SEVERITY_NUMBER_WARN, "WARN"),
    LogLevel.ERROR: (logs_pb2.SEVERITY_NUMBER_ERROR, "ERROR"),
    LogLevel.FATAL: (logs_pb2.SEVERITY_NUMBER_FATAL, "FATAL"),
}
_VERSION_NAME = re.compile(r"models/[^/]{1,63}/versions/[0-9]{1,18}")


class Unmappable(ValueError):
    """Why a record cannot be an event; the message names the OTLP field or attribute."""


@dataclass(frozen=True)
class Mapped:
    """The events of one export request, and each record that could not map: (its path, why)."""

    events: tuple[LogEvent, ...]
    paths: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]


def _text(value: common_pb2.AnyValue) -> str | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("int_value", "double_value", "bool_value"):
        return str(getattr(value, kind))
    return None


def _attributes(items: Iterable[common_pb2.KeyValue]) -> dict[str, common_pb2.AnyValue]:
    found: dict[str, common_pb2.AnyValue] = {}
    for item in items:
        # The first of a repeated key wins, as OTLP asks of receivers.
        found.setdefault(item.key, item.value)
    return found


def _string(attributes: Mapping[str, common_pb2.AnyValue], key: str) -> str:
    value = attributes.get(key)
    if value is None:
        return ""
    text = _text(value)
    if text is None:
        raise Unmappable(f"attribute {key} must be a string")
    if "\x00" in text:
        raise Unmappable(f"attribute {key} contains the NUL character, which cannot be stored")
    return text[:MAX_ATTRIBUTE_TEXT]


def _count(attributes: Mapping[str, common_pb2.AnyValue], key: str) -> int:
    value = attributes.get(key)
    if value is None:
        return 0
    kind = value.WhichOneof("value")
    if kind == "int_value":
        number = value.int_value
    elif kind == "double_value" and value.double_value.is_integer():
        number = int(value.double_value)
    elif kind == "string_value" and value.string_value.isdigit() and len(value.string_value) < 19:
        number = int(value.string_value)
    else:
        raise Unmappable(f"attribute {key} must be a whole number")
    if number < 0:
        raise Unmappable(f"attribute {key} must not be negative")
    return number


def _duration_us(attributes: Mapping[str, common_pb2.AnyValue]) -> int | None:
    value = attributes.get(DURATION_KEY)
    if value is None:
        return None
    kind = value.WhichOneof("value")
    if kind not in ("double_value", "int_value"):
        raise Unmappable(f"attribute {DURATION_KEY} must be a number of seconds")
    seconds = float(getattr(value, kind))
    if not 0 <= seconds <= 10 * 365 * 86400:
        raise Unmappable(f"attribute {DURATION_KEY} must be between 0 and ten years of seconds")
    return round(seconds * 1_000_000)


def _level(record: logs_pb2.LogRecord, failed: bool) -> LogLevel:
    number = int(record.severity_number)
    if 1 <= number <= 24:
        return _LEVELS[(number - 1) // 4]
    return LogLevel.ERROR if failed else LogLevel.INFO


def _hex_id(raw: bytes, size: int, name: str) -> str:
    if not raw:
        return ""
    if len(raw) != size or not any(raw):
        raise Unmappable(f"{name} must be {size} bytes, not all zero, or empty")
    return raw.hex()


def _event_id(record: logs_pb2.LogRecord, attributes: Mapping[str, common_pb2.AnyValue], service: str) -> str:
    uid = _string(attributes, UID_KEY)
    if uid:
        if not EVENT_ID.fullmatch(uid):
            raise Unmappable(f"attribute {UID_KEY} must be 1 to 128 letters, digits, '-', '_', '.' or ':'")
        return uid
    # The same record sent again (an exporter's retry) hashes the same: stored once.
    digest = hashlib.sha256(service.encode() + b"\x00" + record.SerializeToString(deterministic=True))
    return f"otlp-{digest.hexdigest()[:40]}"


def _message(record: logs_pb2.LogRecord) -> str:
    body = _text(record.body) if record.HasField("body") else None
    text = body if body is not None else record.event_name
    if "\x00" in text:
        raise Unmappable("body contains the NUL character, which cannot be stored")
    return text[:MAX_MESSAGE_LENGTH]


def _inference(attributes: Mapping[str, common_pb2.AnyValue], model_version: str) -> Inference:
    provider = next((p for p in (_string(attributes, k) for k in PROVIDER_KEYS) if p), "")
    error_type = _string(attributes, ERROR_TYPE_KEY)
    status = _STATUS_OF_ERROR_TYPE.get(error_type.lower(), InferenceStatus.ERROR) if error_type else None
    input_tokens = _count(attributes, INPUT_TOKENS_KEY)
    cached = _count(attributes, CACHED_INPUT_TOKENS_KEY)
    if cached > input_tokens:
        raise Unmappable(f"attribute {CACHED_INPUT_TOKENS_KEY} must be at most {INPUT_TOKENS_KEY}")
    return Inference(
        provider=provider[:63],
        model_version=model_version,
        input_tokens=input_tokens,
        output_tokens=_count(attributes, OUTPUT_TOKENS_KEY),
        cached_input_tokens=cached,
        reasoning_tokens=0,
        latency_us=_duration_us(attributes),
        # Priced by the server from the registry version's prices, as an event sent without a cost is.
        cost=None,
        status=status or InferenceStatus.OK,
    )


def record_event(
    record: logs_pb2.LogRecord, resource: Mapping[str, common_pb2.AnyValue], service: str
) -> LogEvent:
    """The event of one record of a resource whose service.name is `service`; Unmappable saying why not."""
    attributes = _attributes(record.attributes)
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    if not nanos:
        raise Unmappable("time_unix_nano or observed_time_unix_nano is required")
    event_time = datetime.fromtimestamp(nanos // 1000 / 1_000_000, UTC)
    # A registry version links the event (and prices it): named outright, or as the model asked for.
    model_version = _string(attributes, MODEL_VERSION_KEY)
    if not model_version:
        requested = _string(attributes, REQUEST_MODEL_KEY)
        model_version = requested if _VERSION_NAME.fullmatch(requested) else ""
    payload = _inference(attributes, model_version) if INFERENCE_KEYS & attributes.keys() else None
    failed = bool(_string(attributes, ERROR_TYPE_KEY))
    kept = {key: _string(attributes, key)[:MAX_ATTRIBUTE_VALUE_LENGTH] for key in KEPT_ATTRIBUTES}
    return LogEvent(
        event_id=_event_id(record, attributes, service),
        event_time=event_time,
        service=service,
        level=_level(record, failed),
        instance=_string(resource, INSTANCE_KEY)[:128],
        message=_message(record),
        links=Links(
            model_version=model_version,
            deployment=_string(attributes, DEPLOYMENT_KEY)[:128],
            trace_id=_hex_id(record.trace_id, 16, "trace_id"),
            span_id=_hex_id(record.span_id, 8, "span_id"),
            request_id=_string(attributes, REQUEST_ID_KEY)[:128],
        ),
        attributes={key: value for key, value in kept.items() if value},
        payload=payload,
    )


def service_of(resource: Mapping[str, common_pb2.AnyValue]) -> str:
    """The event service of a resource: its service.name in lower case; Unmappable when it cannot be one."""
    name = _string(resource, SERVICE_NAME_KEY).lower()
    if not name:
        raise Unmappable("the resource has no service.name attribute")
    if not SERVICE_NAME.fullmatch(name):
        raise Unmappable(
            f"service.name {name[:80]!r} must be 1 to 63 letters, digits, '-', '_' or '.' to name a service"
        )
    return name


def map_request(request: logs_service_pb2.ExportLogsServiceRequest, limit: int) -> Mapped:
    """The events of an export request, at most `limit` records (more: Unmappable before anything is
    read); every record that cannot map is in `rejected` with its path and why."""
    total = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
    if total > limit:
        raise Unmappable(f"at most {limit} log records an export, got {total}")
    events: list[LogEvent] = []
    paths: list[str] = []
    rejected: list[tuple[str, str]] = []
    for r, resource_logs in enumerate(request.resource_logs):
        resource = _attributes(resource_logs.resource.attributes)
        try:
            service: str | None = service_of(resource)
            problem = ""
        except Unmappable as exc:
            service, problem = None, str(exc)
        for s, scope_logs in enumerate(resource_logs.scope_logs):
            for i, record in enumerate(scope_logs.log_records):
                path = f"resource_logs[{r}].scope_logs[{s}].log_records[{i}]"
                if service is None:
                    rejected.append((path, problem))
                    continue
                try:
                    events.append(record_event(record, resource, service))
                    paths.append(path)
                except Unmappable as exc:
                    rejected.append((path, str(exc)))
    return Mapped(tuple(events), tuple(paths), tuple(rejected))


def _value(text: str) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(string_value=text)


def _int(number: int) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(int_value=number)


def event_record(event: LogEvent) -> logs_pb2.LogRecord:
    """A stored event as an OTLP log record: the mapping above in reverse, plus what only modelplane knows
    (cost, links) under modelplane.* attributes; `log.record.uid` is the event id, so a receiver can tell
    a record sent twice."""
    number, text = _SEVERITY_OF_LEVEL[event.level]
    micros = int(event.event_time.timestamp()) * 1_000_000 + event.event_time.microsecond
    attributes: list[tuple[str, common_pb2.AnyValue]] = [
        (UID_KEY, _value(event.event_id)),
        ("modelplane.kind", _value(event.kind.value)),
    ]
    attributes.extend((key, _value(value)) for key, value in event.attributes.items())
    links = event.links
    for key, value in (
        (MODEL_VERSION_KEY, links.model_version),
        (DEPLOYMENT_KEY, links.deployment),
        ("modelplane.traffic_slot", links.traffic_slot.value),
        ("modelplane.policy", links.policy),
        (REQUEST_ID_KEY, links.request_id),
    ):
        if value:
            attributes.append((key, _value(value)))
    payload = event.payload
    if isinstance(payload, Inference):
        if payload.provider:
            attributes.append((PROVIDER_KEYS[0], _value(payload.provider)))
        attributes.append((INPUT_TOKENS_KEY, _int(payload.input_tokens)))
        attributes.append((OUTPUT_TOKENS_KEY, _int(payload.output_tokens)))
        if payload.cached_input_tokens:
            attributes.append((CACHED_INPUT_TOKENS_KEY, _int(payload.cached_input_tokens)))
        if payload.latency_us is not None:
            attributes.append(
                (DURATION_KEY, common_pb2.AnyValue(double_value=payload.latency_us / 1_000_000))
            )
        if payload.status is not InferenceStatus.OK and ERROR_TYPE_KEY not in event.attributes:
            attributes.append((ERROR_TYPE_KEY, _value(payload.status.value)))
        cost: Money | None = payload.cost
        if cost is not None:
            attributes.append(("modelplane.cost.micros", _int(cost.micros)))
            attributes.append(("modelplane.cost.currency", _value(cost.currency_code)))
    return logs_pb2.LogRecord(
        time_unix_nano=micros * 1000,
        observed_time_unix_nano=micros * 1000,
        severity_number=number,
        severity_text=text,
        body=_value(event.message),
        attributes=[common_pb2.KeyValue(key=k, value=v) for k, v in attributes],
        trace_id=bytes.fromhex(links.trace_id) if _is_hex(links.trace_id, 32) else b"",
        span_id=bytes.fromhex(links.span_id) if _is_hex(links.span_id, 16) else b"",
    )


def _is_hex(text: str, size: int) -> bool:
    return len(text) == size and all(c in "0123456789abcdef" for c in text)


def export_request(
    events: tuple[LogEvent, ...] | list[LogEvent],
) -> logs_service_pb2.ExportLogsServiceRequest:
    """Stored events as one export request: a ResourceLogs per service (its service.name), in the order the
    services first appear."""
    by_service: dict[str, list[logs_pb2.LogRecord]] = {}
    for event in events:
        by_service.setdefault(event.service, []).append(event_record(event))
    scope = common_pb2.InstrumentationScope(name="modelplane")
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key=SERVICE_NAME_KEY, value=_value(service))]
                ),
                scope_logs=[logs_pb2.ScopeLogs(scope=scope, log_records=records)],
            )
            for service, records in by_service.items()
        ]
    )
