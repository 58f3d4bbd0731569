"""The methods of log collection's clients (modelplane.v1.LogService), async and sync alike.

Methods take keyword arguments and return the protobuf messages of modelplane.v1.logs_pb2. WriteLogEvents
is retried like every unary call: the server stores an event once per event id, so a batch written twice
is stored once. TailLogEvents is not resumed: it ends when the caller stops or the server goes away.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from modelplane.client.methods import (
    Paged,
    ServerStream,
    Unary,
    duration,
    page,
    pages,
    server_stream,
    unary,
    whole_response,
)
from modelplane.v1 import logs_pb2 as pb

__all__ = ["LogMethods"]


def write_log_events(
    *,
    events: Sequence[pb.LogEvent],
    client_id: str = "",
    sequence: int = 0,
    dropped_since_last: int = 0,
    timeout: float | None = None,
) -> Unary[pb.WriteLogEventsResponse, pb.LogAck]:
    """Stores one batch (at most 1,000 events) in one transaction and returns after it commits; events
    already stored are counted as duplicates. Raises InvalidField (with the path of every bad field;
    nothing of the batch is stored), BatchTooLarge, StorageUnavailable."""
    request = pb.WriteLogEventsRequest(
        batch=pb.LogBatch(
            client_id=client_id, sequence=sequence, dropped_since_last=dropped_since_last, events=events
        )
    )
    return Unary("WriteLogEvents", request, lambda response: response.ack, timeout)


def query_log_events(
    *,
    filter: str = "",
    order_by: str = "",
    page_size: int = 0,
    page_token: str = "",
    timeout: float | None = None,
) -> Paged[pb.QueryLogEventsResponse, pb.LogEvent]:
    """Stored events matching `filter`, newest first unless order_by is "event_time asc".
    Raises InvalidFilter, InvalidPageToken, InvalidArgument."""
    request = pb.QueryLogEventsRequest(
        filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
    )
    return Paged("QueryLogEvents", request, lambda response: response.events, timeout)


def tail_log_events(
    *, filter: str = "", timeout: float | None = None
) -> ServerStream[pb.TailLogEventsResponse, pb.LogEvent]:
    """Events matching `filter` as they are committed, from the moment the call starts, one by one;
    `timeout` (None: none) bounds the whole tail. Raises InvalidFilter, Unavailable (the server
    shut down or lost its store)."""
    request = pb.TailLogEventsRequest(filter=filter)
    return ServerStream("TailLogEvents", request, lambda response: response.events, timeout)


def aggregate_log_events(
    *,
    filter: str = "",
    group_by: Sequence[pb.LogGroupBy.ValueType] = (),
    bucket_width: timedelta | None = None,
    currency_code: str = "",
    timeout: float | None = None,
) -> Unary[pb.AggregateLogEventsResponse, list[pb.LogGroup]]:
    """Metrics (count, error rate, exact latency percentiles, tokens, cost, guardrail block rate) of the
    events matching `filter`, grouped by `group_by` (empty: one group), ordered by their keys.
    `bucket_width` goes with LOG_GROUP_BY_TIME_BUCKET; costs are summed in `currency_code` ("USD" when
    empty). Raises InvalidFilter, InvalidArgument."""
    request = pb.AggregateLogEventsRequest(
        filter=filter,
        group_by=list(group_by),
        bucket_width=duration(bucket_width),
        currency_code=currency_code,
    )
    return Unary("AggregateLogEvents", request, lambda response: list(response.groups), timeout)


def get_ingestion_stats(
    *, client_id: str = "", timeout: float | None = None
) -> Unary[pb.GetIngestionStatsResponse, pb.GetIngestionStatsResponse]:
    """The ingestion counters (received, accepted, duplicates, dropped by the client, sequence gaps) of
    every client, or of `client_id` only, and their total. Raises InvalidArgument."""
    request = pb.GetIngestionStatsRequest(client_id=client_id)
    return Unary("GetIngestionStats", request, whole_response, timeout)


class LogMethods:
    """The methods of LogService's clients (to ship events without blocking, use LogShipper).
    `query_log_events_page` returns one page; `query_log_events` iterates over every event of every page."""

    write_log_events = unary(write_log_events)
    query_log_events_page = page(query_log_events)
    query_log_events = pages(query_log_events)
    tail_log_events = server_stream(tail_log_events)
    aggregate_log_events = unary(aggregate_log_events)
    get_ingestion_stats = unary(get_ingestion_stats)
