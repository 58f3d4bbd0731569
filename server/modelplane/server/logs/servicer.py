"""LogService over gRPC: converts each request, awaits the log collector's service, converts the result."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from modelplane.server.logs import convert, rows
from modelplane.server.logs.service import LogService
from modelplane.server.logs.stream_input import stream_batches
from modelplane.v1 import logs_pb2 as pb
from modelplane.v1 import logs_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]


class LogServicer(logs_pb2_grpc.LogServiceServicer):
    # Ingestion reads every text of every event anyway; it looks for the NUL character as it goes
    # (rows.batch_rows), so the interceptor's walk over each request is spared.
    TEXT_CHECKED_METHODS = frozenset(
        f"/{pb.DESCRIPTOR.services_by_name['LogService'].full_name}/{name}"
        for name in ("WriteLogEvents", "StreamLogEvents")
    )

    def __init__(self, service: LogService) -> None:
        self._service = service

    async def WriteLogEvents(
        self, request: pb.WriteLogEventsRequest, context: Context
    ) -> pb.WriteLogEventsResponse:
        ack = await self._service.write(rows.batch_rows(request.batch, "batch", client_required=False))
        return pb.WriteLogEventsResponse(ack=convert.ack_to_proto(ack))

    async def StreamLogEvents(
        self, request_iterator: AsyncIterator[pb.StreamLogEventsRequest], context: Context
    ) -> AsyncIterator[pb.StreamLogEventsResponse]:
        async for ack in self._service.stream(stream_batches(request_iterator)):
            yield pb.StreamLogEventsResponse(ack=convert.ack_to_proto(ack))

    async def QueryLogEvents(
        self, request: pb.QueryLogEventsRequest, context: Context
    ) -> pb.QueryLogEventsResponse:
        page = await self._service.query(
            filter_text=request.filter,
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return convert.query_response(page)

    async def TailLogEvents(
        self, request: pb.TailLogEventsRequest, context: Context
    ) -> AsyncIterator[pb.TailLogEventsResponse]:
        # grpc.aio awaits the sending of each message before it asks for the next, and the tail reads
        # its next round only when asked: a reader that does not keep up holds the server at one round.
        async for events in self._service.tail(request.filter):
            for message in convert.event_messages(events):
                yield pb.TailLogEventsResponse(events=message)

    async def AggregateLogEvents(
        self, request: pb.AggregateLogEventsRequest, context: Context
    ) -> pb.AggregateLogEventsResponse:
        groups = await self._service.aggregate(convert.aggregate_query(request), size_of=convert.group_size)
        return pb.AggregateLogEventsResponse(groups=[convert.group_to_proto(g) for g in groups])

    async def GetIngestionStats(
        self, request: pb.GetIngestionStatsRequest, context: Context
    ) -> pb.GetIngestionStatsResponse:
        clients, total = await self._service.ingestion_stats(request.client_id)
        return pb.GetIngestionStatsResponse(
            clients=[convert.stats_to_proto(s) for s in clients], total=convert.stats_to_proto(total)
        )
