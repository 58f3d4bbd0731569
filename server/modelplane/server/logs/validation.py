"""The rules a log event must follow before it is stored (and those of an aggregate request), each broken
rule reported with its field path.

The rules of each stored field are the column table's (columns.py), which the ingestion hot path
follows too; here are those of the batch, the time window, the payload kinds a client may send, and
pricing. Also fills the links from the payload (columns.linked), so that every event is linked the same
way whichever place the client set the id in.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from modelplane.pricing import Prices, TokenUsage, cost_parts
from modelplane.server.errors import FieldViolation
from modelplane.server.field_rules import CURRENCY_CODE, INT64_MAX
from modelplane.server.logs.columns import EVENT_ID, check_columns, linked
from modelplane.server.logs.domain import (
    MAX_BATCH_EVENTS,
    AggregateQuery,
    ControlPlaneChange,
    LogBatch,
    LogEvent,
)

# How far ahead of the server's clock an event may be: clocks drift, but not by days.
MAX_FUTURE_SKEW = timedelta(days=1)
# A client reports at most this many drops in one batch: far beyond any queue, and summed over clients
# and batches the counters stay within a bigint.
MAX_DROPPED_PER_BATCH = 10**12
# A batch stops being checked after this many problems: the status would only grow.
MAX_REPORTED_VIOLATIONS = 20
# The largest cost an event can carry: costs are stored as a bigint of micro-units.
MAX_COST_MICROS = INT64_MAX


def _count(found: list[FieldViolation], path: str, value: int) -> None:
    if value < 0:
        found.append(FieldViolation(path, "must not be negative"))


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
    time_violation = event_time_violation(f"{prefix}.event_time", event.event_time, now=now, oldest=oldest)
    if time_violation is not None:
        found.append(time_violation)
    if isinstance(event.payload, ControlPlaneChange):
        found.append(
            FieldViolation(
                f"{prefix}.control_plane_change",
                "is written by the server only, for its own changes; send a message or another payload",
            )
        )
    check_columns(event, prefix, found)
    merged = linked(event)
    return event if merged == event.links else dataclasses.replace(event, links=merged)


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
