"""The rules a log event must follow before it is stored (and those of an aggregate request), each broken
rule reported with its field path.

Also fills the links from the payload (an inference's model version, a route's deployment and slot, a
check's policy and revision), so that every event is linked the same way whichever place the client
set the id in.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from modelplane.pricing import Prices, TokenUsage, cost_parts
from modelplane.server.errors import FieldViolation
from modelplane.server.field_rules import CURRENCY_CODE, INT64_MAX
from modelplane.server.logs.domain import (
    CONTROL_PLANE_EVENT_ID_PREFIX,
    CONTROL_PLANE_SERVICE,
    MAX_BATCH_EVENTS,
    AggregateQuery,
    ControlPlaneChange,
    Guardrail,
    Inference,
    Links,
    LogBatch,
    LogEvent,
    Routing,
    TrafficSlot,
)

MAX_ID_LENGTH = 128
MAX_MESSAGE_LENGTH = 4096
MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_VALUE_LENGTH = 256
MAX_NAME_LENGTH = 256
# How far ahead of the server's clock an event may be: clocks drift, but not by days.
MAX_FUTURE_SKEW = timedelta(days=1)
# A client reports at most this many drops in one batch: far beyond any queue, and summed over clients
# and batches the counters stay within a bigint.
MAX_DROPPED_PER_BATCH = 10**12
# A batch stops being checked after this many problems: the status would only grow.
MAX_REPORTED_VIOLATIONS = 20
# The largest cost an event can carry: costs are stored as a bigint of micro-units.
MAX_COST_MICROS = INT64_MAX

EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SERVICE_NAME = re.compile(r"[a-z0-9._-]{1,63}")
ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_.]{0,62}")


def _text(found: list[FieldViolation], path: str, value: str, limit: int) -> None:
    if len(value) > limit:
        found.append(FieldViolation(path, f"must be at most {limit} characters, got {len(value)}"))


def _count(found: list[FieldViolation], path: str, value: int) -> None:
    if value < 0:
        found.append(FieldViolation(path, "must not be negative"))


def _same(found: list[FieldViolation], path: str, link: object, payload: object, unset: object) -> object:
    """The link's value, taken from the payload when unset; a violation when both are set and differ."""
    if link == unset:
        return payload
    if payload != unset and payload != link:
        found.append(FieldViolation(path, f"is {payload!r} but the event's links say {link!r}"))
    return link


def _linked(event: LogEvent, prefix: str, found: list[FieldViolation]) -> Links:
    links, payload = event.links, event.payload
    if isinstance(payload, Inference):
        version = _same(
            found, f"{prefix}.inference.model_version", links.model_version, payload.model_version, ""
        )
        return dataclasses.replace(links, model_version=str(version))
    if isinstance(payload, Routing):
        deployment = _same(found, f"{prefix}.routing.deployment", links.deployment, payload.deployment, "")
        slot = _same(found, f"{prefix}.routing.slot", links.traffic_slot, payload.slot, TrafficSlot.NONE)
        return dataclasses.replace(links, deployment=str(deployment), traffic_slot=TrafficSlot(str(slot)))
    if isinstance(payload, Guardrail):
        policy = _same(found, f"{prefix}.guardrail.policy", links.policy, payload.policy, "")
        revision = _same(found, f"{prefix}.guardrail.revision", links.policy_revision, payload.revision, 0)
        return dataclasses.replace(links, policy=str(policy), policy_revision=int(str(revision)))
    return links


def _attributes(found: list[FieldViolation], path: str, attributes: Mapping[str, str]) -> None:
    if len(attributes) > MAX_ATTRIBUTES:
        found.append(
            FieldViolation(
                path,
                f"at most {MAX_ATTRIBUTES} keys, got {len(attributes)}; put identifiers with many values"
                " in message or links",
            )
        )
    for key, value in attributes.items():
        if not ATTRIBUTE_KEY.fullmatch(key):
            found.append(
                FieldViolation(
                    f"{path}[{key[:64]!r}]",
                    "key must be 1 to 63 lower-case letters, digits, '_' or '.', starting with a letter",
                )
            )
        elif len(value) > MAX_ATTRIBUTE_VALUE_LENGTH:
            found.append(
                FieldViolation(
                    f"{path}[{key!r}]", f"value must be at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters"
                )
            )


def _payload(found: list[FieldViolation], prefix: str, event: LogEvent) -> None:
    payload = event.payload
    if isinstance(payload, Inference):
        path = f"{prefix}.inference"
        _text(found, f"{path}.provider", payload.provider, 63)
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            _count(found, f"{path}.{name}", getattr(payload, name))
        if payload.cached_input_tokens > payload.input_tokens:
            found.append(FieldViolation(f"{path}.cached_input_tokens", "must be at most input_tokens"))
        if payload.reasoning_tokens > payload.output_tokens:
            found.append(FieldViolation(f"{path}.reasoning_tokens", "must be at most output_tokens"))
        if payload.latency_us is not None:
            _count(found, f"{path}.latency", payload.latency_us)
        if payload.cost is not None:
            if not CURRENCY_CODE.fullmatch(payload.cost.currency_code):
                found.append(
                    FieldViolation(f"{path}.cost.currency_code", "must be an ISO 4217 code like USD")
                )
            _count(found, f"{path}.cost.micros", payload.cost.micros)
    elif isinstance(payload, Routing):
        path = f"{prefix}.routing"
        _text(found, f"{path}.rollout", payload.rollout, MAX_ID_LENGTH)
        _text(found, f"{path}.endpoint", payload.endpoint, MAX_NAME_LENGTH)
        if payload.latency_us is not None:
            _count(found, f"{path}.latency", payload.latency_us)
    elif isinstance(payload, Guardrail):
        _count(found, f"{prefix}.guardrail.revision", payload.revision)
        _count(found, f"{prefix}.guardrail.violation_count", payload.violation_count)
    elif isinstance(payload, ControlPlaneChange):
        found.append(
            FieldViolation(
                f"{prefix}.control_plane_change",
                "is written by the server only, for its own changes; send a message or another payload",
            )
        )


def event_time_violation(
    path: str, event_time: datetime, *, now: datetime, oldest: datetime | None
) -> FieldViolation | None:
    """What is wrong with an event time outside the accepted window; None when it is inside."""
    if event_time > now + MAX_FUTURE_SKEW:
        return FieldViolation(path, "must be at most one day ahead of the server's clock")
    if oldest is not None and event_time < oldest:
        return FieldViolation(
            path, f"is older than the retention window, which starts at {oldest.isoformat()}"
        )
    return None


def checked_event(
    event: LogEvent, prefix: str, *, now: datetime, oldest: datetime | None, found: list[FieldViolation]
) -> LogEvent:
    """The event with its links filled from the payload; appends every broken rule to `found`.

    `oldest` is the start of the retention window (None: everything is kept).
    """
    if not EVENT_ID.fullmatch(event.event_id):
        found.append(
            FieldViolation(f"{prefix}.event_id", "must be 1 to 128 letters, digits, '-', '_', '.' or ':'")
        )
    elif event.event_id.startswith(CONTROL_PLANE_EVENT_ID_PREFIX):
        found.append(
            FieldViolation(
                f"{prefix}.event_id",
                f"must not start with {CONTROL_PLANE_EVENT_ID_PREFIX!r}, the server's own events' prefix",
            )
        )
    time_violation = event_time_violation(f"{prefix}.event_time", event.event_time, now=now, oldest=oldest)
    if time_violation is not None:
        found.append(time_violation)
    if not SERVICE_NAME.fullmatch(event.service):
        found.append(
            FieldViolation(f"{prefix}.service", "must be 1 to 63 lower-case letters, digits, '-', '_' or '.'")
        )
    elif event.service == CONTROL_PLANE_SERVICE:
        found.append(
            FieldViolation(
                f"{prefix}.service", f"{CONTROL_PLANE_SERVICE!r} is the server's own; name your service"
            )
        )
    _text(found, f"{prefix}.instance", event.instance, MAX_ID_LENGTH)
    _text(found, f"{prefix}.message", event.message, MAX_MESSAGE_LENGTH)
    links = event.links
    for name, limit in (
        ("model_version", MAX_NAME_LENGTH),
        ("deployment", MAX_NAME_LENGTH),
        ("policy", MAX_NAME_LENGTH),
        ("trace_id", MAX_ID_LENGTH),
        ("request_id", MAX_ID_LENGTH),
    ):
        _text(found, f"{prefix}.links.{name}", getattr(links, name), limit)
    _count(found, f"{prefix}.links.policy_revision", links.policy_revision)
    _attributes(found, f"{prefix}.attributes", event.attributes)
    _payload(found, prefix, event)
    merged = _linked(event, prefix, found)
    return event if merged == links else dataclasses.replace(event, links=merged)


def check_batch_header(batch: LogBatch, prefix: str, *, client_required: bool) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if (batch.client_id or client_required) and not EVENT_ID.fullmatch(batch.client_id):
        found.append(
            FieldViolation(f"{prefix}.client_id", "must be 1 to 128 letters, digits, '-', '_', '.' or ':'")
        )
    _count(found, f"{prefix}.sequence", batch.sequence)
    _count(found, f"{prefix}.dropped_since_last", batch.dropped_since_last)
    if batch.dropped_since_last > MAX_DROPPED_PER_BATCH:
        found.append(
            FieldViolation(f"{prefix}.dropped_since_last", f"must be at most {MAX_DROPPED_PER_BATCH}")
        )
    if len(batch.events) > MAX_BATCH_EVENTS:
        found.append(
            FieldViolation(f"{prefix}.events", f"at most {MAX_BATCH_EVENTS} events, got {len(batch.events)}")
        )
    return found


def unpriceable_violation(
    path: str, version: str, prices: Prices, usage: TokenUsage, micros: int
) -> FieldViolation:
    """What is wrong with an inference without a cost whose tokens, at its version's registry prices, cost
    more than MAX_COST_MICROS; `path` is the inference payload's. It names the token count with the
    largest part of the cost: the count most likely to be wrong."""
    parts = cost_parts(prices, usage)
    field = max(parts, key=lambda name: parts[name])
    return FieldViolation(
        f"{path}.{field}",
        f"without a cost, the tokens are priced at the registry prices of {version}: {micros} micro-units of"
        f" {prices.currency_code}, beyond the largest cost of {MAX_COST_MICROS}; correct the token counts or"
        " send the cost",
    )


def aggregate_violations(query: AggregateQuery) -> list[FieldViolation]:
    """What is wrong with an aggregate request beyond what conversion checks (the same rule as events')."""
    found: list[FieldViolation] = []
    if not CURRENCY_CODE.fullmatch(query.currency_code):
        found.append(FieldViolation("currency_code", "must be an ISO 4217 code like USD, or empty"))
    return found
