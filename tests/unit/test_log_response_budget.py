"""The logs wing's responses fit the 4 MiB message limit: the largest event is far under a page's byte
budget, the budget is far under the limit, and GetIngestionStats, which has no pages, fits at its most."""

from __future__ import annotations

from datetime import UTC, datetime

from modelplane.server.logs import columns, convert
from modelplane.server.logs.domain import (
    MAX_RESPONSE_BYTES,
    Inference,
    InferenceStatus,
    IngestionStats,
    Links,
    LogEvent,
    LogLevel,
    Money,
    TrafficSlot,
)
from modelplane.server.logs.service import MAX_STATS_CLIENTS
from modelplane.v1 import logs_pb2 as pb

INT64_MAX = 2**63 - 1
LIMIT = 4 * 1024 * 1024
WIDE = "\U0001d54f"  # four bytes in UTF-8


def _largest_event() -> LogEvent:
    name, ident = WIDE * columns.MAX_NAME_LENGTH, WIDE * columns.MAX_ID_LENGTH
    return LogEvent(
        event_id="e" * 128,
        event_time=datetime(9999, 12, 31, tzinfo=UTC),
        service="s" * 63,
        level=LogLevel.FATAL,
        instance=ident,
        message=WIDE * columns.MAX_MESSAGE_LENGTH,
        links=Links(name, name, TrafficSlot.CANARY, name, INT64_MAX, ident, ident),
        attributes={
            f"k{i:02d}" + "x" * 60: WIDE * columns.MAX_ATTRIBUTE_VALUE_LENGTH
            for i in range(columns.MAX_ATTRIBUTES)
        },
        payload=Inference(
            provider=WIDE * 63,
            model_version=name,
            input_tokens=INT64_MAX,
            output_tokens=INT64_MAX,
            cached_input_tokens=INT64_MAX,
            reasoning_tokens=INT64_MAX,
            latency_us=INT64_MAX // 1000,
            cost=Money("USD", INT64_MAX),
            status=InferenceStatus.CANCELLED,
            cost_from_registry=True,
        ),
        ingest_time=datetime(9999, 12, 31, tzinfo=UTC),
    )


def test_a_page_always_has_room_for_the_largest_event() -> None:
    assert convert.event_to_proto(_largest_event()).ByteSize() * 10 < MAX_RESPONSE_BYTES < LIMIT * 3 // 4


def test_event_messages_cut_where_the_budget_would_pass() -> None:
    events = [_largest_event()] * 200
    messages = convert.event_messages(events)
    assert sum(len(m) for m in messages) == 200
    assert all(pb.TailLogEventsResponse(events=m).ByteSize() <= MAX_RESPONSE_BYTES for m in messages)
    assert len(messages) > 1


def test_ingestion_stats_at_their_most_fit_in_one_response() -> None:
    n = INT64_MAX
    most = IngestionStats("c" * 128, n, n, n, n, n, n, n, datetime(9999, 12, 31, tzinfo=UTC))
    response = pb.GetIngestionStatsResponse(
        clients=[convert.stats_to_proto(most)] * MAX_STATS_CLIENTS, total=convert.stats_to_proto(most)
    )
    assert response.ByteSize() < MAX_RESPONSE_BYTES
