"""A tiny OTLP/gRPC receiver on a loopback port: the trace and logs services of an OpenTelemetry collector,
keeping every request they receive, for the tests of what modelplane exports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

Context = grpc.aio.ServicerContext[object, object]


@dataclass
class OtlpReceiver:
    """What the receiver got; `endpoint` is its http:// address, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""

    endpoint: str = ""
    trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    # Export calls of the logs service to refuse with UNAVAILABLE before accepting again.
    refuse_logs: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def spans(self) -> list[tuple[dict[str, str], trace_pb2.Span]]:
        """Every span received, with its resource's string attributes."""
        return _items(self.trace_requests, "resource_spans", "scope_spans", "spans")

    def log_records(self) -> list[tuple[dict[str, str], logs_pb2.LogRecord]]:
        """Every log record received, with its resource's string attributes."""
        return _items(self.log_requests, "resource_logs", "scope_logs", "log_records")

    async def wait_for(self, predicate: object, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Waits until `predicate()` is true after some request arrived."""
        assert callable(predicate)
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def _items(requests: Sequence[Message], resources: str, scopes: str, items: str) -> list[Any]:
    """The items of OTLP export requests (both signals nest resource, scope, item alike), each with its
    resource's string attributes."""
    found: list[Any] = []
    for request in requests:
        for resource_items in getattr(request, resources):
            resource = {a.key: a.value.string_value for a in resource_items.resource.attributes}
            for scope_items in getattr(resource_items, scopes):
                found.extend((resource, item) for item in getattr(scope_items, items))
    return found


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Context
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.trace_requests.append(request)
        self._receiver.changed.set()
        return trace_service_pb2.ExportTraceServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: Context
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        if self._receiver.refuse_logs > 0:
            self._receiver.refuse_logs -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the receiver refuses this one")
        self._receiver.log_requests.append(request)
        self._receiver.changed.set()
        return logs_service_pb2.ExportLogsServiceResponse()


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    """A receiver listening on 127.0.0.1 (a free port) until the block ends."""
    receiver = OtlpReceiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(receiver), server)  # type: ignore[no-untyped-call]
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(receiver), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await server.stop(0)
