"""The typed async client of log collection (modelplane.v1.LogService): writing, querying, tailing and
aggregating log events, and reading the per-client ingestion counters.

Methods take keyword arguments and return the protobuf messages of modelplane.v1.logs_pb2. Every unary call
has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to override it),
and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass.

Retries: a unary call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter
within its one deadline, as in the registry client. WriteLogEvents is retried too: the server stores an
event once per event id, so a batch written twice is stored once.

Services ship their events with `modelplane.client.log_shipper.LogShipper`, which streams batches and never
blocks; `write_log_events` is the plain unary way, for tools and tests. TailLogEvents is not retried: open
it with `async for event in client.tail_log_events(filter=...)`; it ends only when the caller stops or
the server goes away (then the error is raised, and a new tail starts from that moment).
"""

# The `timeout` parameters are gRPC deadlines handed to the channel, not asyncio timeouts.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2

from modelplane.client.base import ServiceClient
from modelplane.client.errors import from_rpc_error
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import logs_pb2, logs_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.v1.logs_pb2_grpc import LogServiceAsyncStub

__all__ = ["LogClient"]


def _duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


class LogClient(ServiceClient):
    """Client of LogService, built from a `Connection` or from a grpc.aio channel.

    Used as `async with`, it closes what it was built from (the connection or the channel) on exit; do not
    do that with a channel other code still uses.
    """

    def __init__(
        self,
        source: Connection | grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(source, metadata=metadata, timeout=timeout, retry=retry)
        self._stub: LogServiceAsyncStub = logs_pb2_grpc.LogServiceStub(self._channel)

    # Ingestion.

    async def write_log_events(
        self,
        *,
        events: Sequence[logs_pb2.LogEvent],
        client_id: str = "",
        sequence: int = 0,
        dropped_since_last: int = 0,
        timeout: float | None = None,
    ) -> logs_pb2.LogAck:
        """Stores one batch (at most 1,000 events) in one transaction and returns after it commits; events
        already stored are counted as duplicates. Raises InvalidField (with the path of every bad field;
        nothing of the batch is stored), BatchTooLarge, StorageUnavailable."""
        request = logs_pb2.WriteLogEventsRequest(
            batch=logs_pb2.LogBatch(
                client_id=client_id, sequence=sequence, dropped_since_last=dropped_since_last, events=events
            )
        )
        response = await self._unary(self._stub.WriteLogEvents, request, timeout)
        return response.ack

    # Reading.

    async def query_log_events_page(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> logs_pb2.QueryLogEventsResponse:
        """One page of stored events matching `filter`, newest first unless order_by is "event_time asc".
        Raises InvalidFilter, InvalidPageToken, InvalidArgument."""
        request = logs_pb2.QueryLogEventsRequest(
            filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.QueryLogEvents, request, timeout)

    async def query_log_events(
        self, *, filter: str = "", order_by: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[logs_pb2.LogEvent, None]:
        """Every stored event matching the filter, page after page; `timeout` applies to each page."""
        page_token = ""
        while True:
            page = await self.query_log_events_page(
                filter=filter, order_by=order_by, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for event in page.events:
                yield event
            page_token = page.next_page_token
            if not page_token:
                return

    async def tail_log_events(
        self, *, filter: str = "", timeout: float | None = None
    ) -> AsyncGenerator[logs_pb2.LogEvent, None]:
        """Events matching `filter` as they are committed, from the moment the call starts, one by one;
        `timeout` (None: none) bounds the whole tail. Raises InvalidFilter, Unavailable (the server
        shut down or lost its store)."""
        call = self._stub.TailLogEvents(
            logs_pb2.TailLogEventsRequest(filter=filter), timeout=timeout, metadata=self.metadata
        )
        try:
            async for response in call:
                for event in response.events:
                    yield event
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()

    async def aggregate_log_events(
        self,
        *,
        filter: str = "",
        group_by: Sequence[logs_pb2.LogGroupBy.ValueType] = (),
        bucket_width: timedelta | None = None,
        currency_code: str = "",
        timeout: float | None = None,
    ) -> list[logs_pb2.LogGroup]:
        """Metrics (count, error rate, exact latency percentiles, tokens, cost, guardrail block rate) of the
        events matching `filter`, grouped by `group_by` (empty: one group), ordered by their keys.
        `bucket_width` goes with LOG_GROUP_BY_TIME_BUCKET; costs are summed in `currency_code` ("USD" when
        empty). Raises InvalidFilter, InvalidArgument."""
        request = logs_pb2.AggregateLogEventsRequest(
            filter=filter,
            group_by=list(group_by),
            bucket_width=_duration(bucket_width),
            currency_code=currency_code,
        )
        response = await self._unary(self._stub.AggregateLogEvents, request, timeout)
        return list(response.groups)

    async def get_ingestion_stats(
        self, *, client_id: str = "", timeout: float | None = None
    ) -> logs_pb2.GetIngestionStatsResponse:
        """The ingestion counters (received, accepted, duplicates, dropped by the client, sequence gaps) of
        every client, or of `client_id` only, and their total. Raises InvalidArgument."""
        request = logs_pb2.GetIngestionStatsRequest(client_id=client_id)
        return await self._unary(self._stub.GetIngestionStats, request, timeout)
