"""Trace context from the consumer services to the server and into the log store: a request traced by its
caller leaves routing, inference and guardrail events that carry the caller's trace and span ids, the
server's span of the guardrail check continues that trace, and the coordinator hands traceparent on to the
endpoint it routes to. So a stored log event leads to its trace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelplane.client import connect
from modelplane.client.log_shipper import LogShipper
from modelplane.client.trace_context import current_trace_ids, trace_headers, with_trace_context
from modelplane.inference import ConfiguredModel, Generation, GenerationRequest, LLMClient
from modelplane.orchestration import InProcessTransport, RouteTarget, ServiceCoordinator
from modelplane.orchestration.traffic import static_table
from modelplane.orchestration.transport import routing_headers
from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.tracing import Tracing
from modelplane.storyteller import NarrativeGenerator
from modelplane.v1 import guardrails_pb2
from tests.api.conftest import server_config

DEPLOYMENT = "deployments/story-prod"
ENDPOINT = "story-a:8000"


class EchoProvider:
    name = "echo"

    async def generate(self, request: GenerationRequest) -> Generation:
        return Generation(
            text=f"a story about {request.messages[-1].content}", input_tokens=10, output_tokens=5
        )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    traced = TracerProvider()
    traced.add_span_processor(SimpleSpanProcessor(exporter))
    return traced


@pytest.fixture
async def server(database_url: str, provider: TracerProvider) -> AsyncIterator[ModelplaneServer]:
    running = build_server(server_config(database_url=database_url), tracing=Tracing(provider))
    await running.start()
    try:
        await running.wait_serving(timeout=30)
        yield running
    finally:
        await running.stop(0)


def test_no_current_span_adds_nothing() -> None:
    assert with_trace_context((("x-request-id", "r1"),)) == (("x-request-id", "r1"),)
    assert current_trace_ids() == ("", "")
    assert trace_headers() == {}


def test_routing_headers_carry_the_callers_traceparent(provider: TracerProvider) -> None:
    target = RouteTarget(DEPLOYMENT, "stable", ENDPOINT, "", "", 0, "static")
    with provider.get_tracer("caller").start_as_current_span("request") as span:
        headers = routing_headers(target)
    context = span.get_span_context()
    # version 00, the trace, the parent span, then the flags (sampled).
    assert headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert "traceparent" not in routing_headers(target)


async def test_a_traced_request_leaves_events_that_lead_to_its_trace(
    server: ModelplaneServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with connect(server.target) as connection:
        await connection.guardrails.create_policy(
            policy_id="kids-safe",
            policy=guardrails_pb2.Policy(
                rules=[
                    guardrails_pb2.Rule(
                        id="violence",
                        severity=guardrails_pb2.SEVERITY_CRITICAL,
                        category="violence",
                        banned_terms=guardrails_pb2.BannedTermsRule(terms=["dragonfire"]),
                    )
                ],
                default_fallback="This story is not available.",
                fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
            ),
        )
        shipper = LogShipper(server.target, service="storyteller", flush_interval=0.05)
        llm = LLMClient(EchoProvider(), model=ConfiguredModel("story"), events=shipper)
        generator = NarrativeGenerator(
            llm, guardrails=connection.guardrails, policy="policies/kids-safe", events=shipper
        )
        seen_headers: list[Mapping[str, str]] = []

        async def endpoint(payload: Any, target: RouteTarget) -> Any:
            return await generator.generate(payload, deployment=target.deployment, traffic_slot=target.slot)

        class RecordingTransport(InProcessTransport):
            async def call(
                self,
                target: RouteTarget,
                payload: Any,
                *,
                timeout: float | None,  # noqa: ASYNC109 - the transport protocol's signature
                headers: Mapping[str, str],
            ) -> Any:
                seen_headers.append(dict(headers))
                return await super().call(target, payload, timeout=timeout, headers=headers)

        route = static_table(DEPLOYMENT, [ENDPOINT])
        async with ServiceCoordinator(
            static_routes={DEPLOYMENT: route},
            transport=RecordingTransport({ENDPOINT: endpoint}),
            events=shipper,
        ) as coordinator:
            with provider.get_tracer("caller").start_as_current_span("request") as root:
                await coordinator.call(DEPLOYMENT, "a lighthouse")
        assert await shipper.aflush(20)
        await shipper.aclose()
        await llm.close()
        context = root.get_span_context()
        trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        events = [e async for e in connection.logs.query_log_events(filter=f'trace_id = "{trace_id}"')]

    assert sorted(str(e.WhichOneof("payload")) for e in events) == ["guardrail", "inference", "routing"]
    # Each event names the span it was recorded in: here the caller's (no SDK is set up globally, so the
    # client's own model-call span is a no-op that keeps the caller's current).
    assert {e.links.span_id for e in events} == {span_id}
    assert seen_headers[0]["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    # The event's trace holds the server's span of the guardrail check, a child of the caller's span.
    (check,) = [s for s in exporter.get_finished_spans() if s.name.endswith("GuardrailService/CheckContent")]
    assert f"{check.context.trace_id:032x}" == trace_id
    assert check.parent is not None
    assert check.parent.span_id == context.span_id
