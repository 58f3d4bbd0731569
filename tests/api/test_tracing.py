"""Server tracing: a span per RPC with the caller's trace as parent, a span per SQL statement inside it,
exported through the SDK (in memory) and over OTLP/gRPC to a real receiver, as OTEL_* configures it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelplane.client import connect
from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.tracing import Tracing, TracingError, provider_from_environment, tracing_requested
from modelplane.v1 import registry_pb2
from tests.api.conftest import server_config
from tests.support.otlp_receiver import otlp_receiver

CREATE_MODEL = "/modelplane.v1.ModelRegistryService/CreateModel"


@dataclass
class Traced:
    """A SERVING server traced into memory, and the provider a test's caller makes its spans with."""

    server: ModelplaneServer
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self, method: str) -> list[ReadableSpan]:
        """The server's finished spans of calls of `method` ("CreateModel")."""
        return [s for s in self.exporter.get_finished_spans() if s.name.endswith(f"/{method}")]


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    # Each span is exported as it ends, before the call's response leaves the server.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = build_server(server_config(database_url=database_url), tracing=Tracing(provider))
    await server.start()
    try:
        await server.wait_serving(timeout=30)
        yield Traced(server, provider, exporter)
    finally:
        await server.stop(grace=0)


async def test_a_call_is_a_server_span_under_the_callers_trace_with_its_sql_inside(
    traced: Traced,
) -> None:
    caller = traced.provider.get_tracer("test")
    async with connect(traced.server.target) as connection:
        with caller.start_as_current_span("caller") as parent:
            await connection.registry.create_model(
                model_id="traced", model=registry_pb2.Model(provider="openai")
            )
    spans = traced.exporter.get_finished_spans()
    calls = [s for s in spans if s.name == CREATE_MODEL]
    assert len(calls) == 1
    call = calls[0]
    assert call.kind is SpanKind.SERVER
    # The client put traceparent on the call: the server's span continues the caller's trace.
    assert call.context.trace_id == parent.get_span_context().trace_id
    assert call.parent is not None
    assert call.parent.span_id == parent.get_span_context().span_id
    assert call.attributes is not None
    assert call.attributes["rpc.method"] == "CreateModel"
    statements = [s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id]
    assert statements, "the call's SQL statements are spans inside it"
    assert all(s.attributes is not None and s.attributes.get("db.system") == "postgresql" for s in statements)


async def test_a_traced_change_writes_its_control_plane_event_with_the_calls_trace(
    traced: Traced,
) -> None:
    async with connect(traced.server.target) as connection:
        with traced.provider.get_tracer("test").start_as_current_span("caller") as caller:
            await connection.registry.create_model(model_id="audited", model=registry_pb2.Model(provider="x"))
        # A call without a trace of its caller's has the server's span as the root of its own.
        await connection.registry.create_model(model_id="untraced", model=registry_pb2.Model(provider="x"))
        events = [e async for e in connection.logs.query_log_events(filter='service = "modelplane"')]
    caller_id = caller.get_span_context().span_id
    calls = traced.spans("CreateModel")
    (child,) = [s for s in calls if s.parent is not None and s.parent.span_id == caller_id]
    (root,) = [s for s in calls if s.parent is None]
    by_resource = {e.control_plane_change.resource: e.links for e in events}
    for resource, span in (("models/audited", child), ("models/untraced", root)):
        links = by_resource[resource]
        assert (links.trace_id, links.span_id) == (
            f"{span.context.trace_id:032x}",
            f"{span.context.span_id:016x}",
        )


async def test_the_access_log_names_each_calls_trace_and_span(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="modelplane.access"):
        async with connect(traced.server.target) as connection:
            assert [m async for m in connection.registry.list_models()] == []
    (call,) = traced.spans("ListModels")
    (line,) = [r.getMessage() for r in caplog.records if "/ListModels" in r.getMessage()]
    assert line.endswith(f"trace_id={call.context.trace_id:032x} span_id={call.context.span_id:016x}")


async def test_a_failed_call_carries_its_status_code(traced: Traced) -> None:
    async with connect(traced.server.target) as connection:
        with pytest.raises(Exception, match="models/missing"):
            await connection.registry.get_model(name="models/missing")
    (call,) = traced.spans("GetModel")
    assert call.attributes is not None
    assert call.attributes["rpc.grpc.status_code"] == 5
    # The semantic conventions leave a server span's status unset for a client's mistake (NOT_FOUND).
    assert call.status.status_code is StatusCode.UNSET


async def test_spans_reach_an_otlp_receiver_as_otel_variables_say(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "modelplane-test")
        provider = provider_from_environment()
        assert provider is not None
        server = build_server(server_config(database_url=database_url), tracing=Tracing(provider))
        await server.start()
        try:
            await server.wait_serving(timeout=30)
            async with connect(server.target) as connection:
                await connection.registry.create_model(
                    model_id="exported", model=registry_pb2.Model(provider="openai")
                )
        finally:
            # Stopping flushes the batch processor.
            await server.stop(grace=0)
        spans = receiver.spans()
    names = {span.name for _, span in spans}
    assert CREATE_MODEL in names
    assert {resource["service.name"] for resource, _ in spans} == {"modelplane-test"}


def test_tracing_is_asked_for_by_otel_traces_exporter_only() -> None:
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert provider_from_environment({}) is None
    with pytest.raises(TracingError, match="zipkin"):
        provider_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})


async def test_an_untraced_server_wraps_nothing(database_url: str) -> None:
    server = build_server(server_config(database_url=database_url))
    assert server.tracing is None
    # No asyncpg method is wrapped by the instrumentation (it wraps them in place, process-wide).
    assert not hasattr(asyncpg.Connection.fetch, "__wrapped__")


async def test_a_traced_server_unwraps_asyncpg_when_it_stops(database_url: str) -> None:
    server = build_server(server_config(database_url=database_url), tracing=Tracing(TracerProvider()))
    assert hasattr(asyncpg.Connection.fetch, "__wrapped__")
    await server.start()
    await server.stop(grace=0)
    assert not hasattr(asyncpg.Connection.fetch, "__wrapped__")
