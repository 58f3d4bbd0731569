"""Logging from each consumer: the three services share one LogShipper and their events arrive, typed and
linked, in the real server's store. ServiceCoordinator routes each request to an endpoint that runs
NarrativeGenerator, which calls LLMClient and the guardrails monitor; each request leaves one routing, one
inference and one guardrail event under its trace id, all three linked to the deployment slot that routed
it, queried back with QueryLogEvents and aggregated with AggregateLogEvents. Standalone, with the log
collector not there, every consumer's calls go on and the shipper counts what it could not deliver.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelplane.client import Connection, connect
from modelplane.client.log_shipper import LogShipper
from modelplane.inference import ConfiguredModel, Generation, GenerationRequest, LLMClient
from modelplane.orchestration import InProcessTransport, RouteTarget, ServiceCoordinator
from modelplane.orchestration.traffic import static_table
from modelplane.server.app import ModelplaneServer
from modelplane.storyteller import NarrativeGenerator, NarrativeStatus
from modelplane.v1 import common_pb2, guardrails_pb2, logs_pb2, registry_pb2
from tests.support.loopback import free_port

DEPLOYMENT = "deployments/story-prod"
POLICY = "policies/kids-safe"
STABLE, CANARY = "story-a:8000", "story-b:8000"
STORIES = {
    "calm": "The lighthouse keeper watched the gulls over a quiet harbor.",
    "battle": "Then the dragonfire swept across the village square.",
}
# 1 USD per million input tokens, 4 USD per million output tokens.
PRICING = registry_pb2.TokenPricing(
    currency_code="USD", input_micros_per_million=1_000_000, output_micros_per_million=4_000_000
)


class ScriptedProvider:
    """Stands in for a remote LLM: answers each prompt with the story of that name; "fail" fails."""

    name = "scripted"

    async def generate(self, request: GenerationRequest) -> Generation:
        prompt = request.messages[-1].content
        if prompt == "fail":
            raise RuntimeError("the provider is overloaded")
        text = STORIES[prompt]
        return Generation(text=text, input_tokens=1000, output_tokens=250, cached_input_tokens=200)


@pytest.fixture
async def connection(server: ModelplaneServer) -> AsyncIterator[Connection]:
    async with connect(server.target) as conn:
        await conn.guardrails.create_policy(
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
        await conn.registry.create_model(model_id="story", model=registry_pb2.Model(provider="scripted"))
        await conn.registry.create_model_version(
            parent="models/story",
            model_version=registry_pb2.ModelVersion(
                source_uri="scripted:story",
                capabilities=[registry_pb2.CAPABILITY_CHAT],
                context_window=8_000,
                max_output_tokens=1_000,
                pricing=PRICING,
            ),
        )
        yield conn


async def _by_kind(connection: Connection, trace_id: str) -> dict[str, logs_pb2.LogEvent]:
    events = [event async for event in connection.logs.query_log_events(filter=f'trace_id = "{trace_id}"')]
    by_kind = {str(event.WhichOneof("payload")): event for event in events}
    assert len(by_kind) == len(events), "one event of each kind per request"
    return by_kind


@pytest.mark.parametrize("prices_known_to_the_client", [True, False])
async def test_one_shipper_carries_every_services_events_typed_and_linked(
    server: ModelplaneServer, connection: Connection, prices_known_to_the_client: bool
) -> None:
    shipper = LogShipper(server.target, service="storyteller", instance="pod-3", flush_interval=0.05)
    version = "models/story/versions/1"
    model = ConfiguredModel("story", version=version, pricing=PRICING if prices_known_to_the_client else None)
    llm = LLMClient(ScriptedProvider(), model=model, events=shipper)
    generator = NarrativeGenerator(llm, guardrails=connection.guardrails, policy=POLICY, events=shipper)

    async def endpoint(payload: Any, target: RouteTarget) -> Any:
        prompt, trace_id, request_id = payload
        return await generator.generate(
            prompt,
            trace_id=trace_id,
            request_id=request_id,
            deployment=target.deployment,
            traffic_slot=target.slot,
        )

    route = static_table(
        DEPLOYMENT,
        [STABLE],
        canary=[CANARY],
        canary_weight_bp=5000,
        stable_model_version=version,
        canary_model_version=version,
    )
    transport = InProcessTransport({STABLE: endpoint, CANARY: endpoint})
    requests = {"calm": uuid.uuid4().hex, "battle": uuid.uuid4().hex, "fail": uuid.uuid4().hex}
    async with ServiceCoordinator(
        static_routes={DEPLOYMENT: route}, transport=transport, events=shipper
    ) as coordinator:
        narratives = {}
        for prompt, trace_id in requests.items():
            payload = (prompt, trace_id, f"req-{prompt}")
            if prompt == "fail":
                with pytest.raises(RuntimeError, match="overloaded"):
                    await coordinator.call(
                        DEPLOYMENT, payload, routing_key=prompt, trace_id=trace_id, request_id=f"req-{prompt}"
                    )
            else:
                narratives[prompt] = await coordinator.call(
                    DEPLOYMENT, payload, routing_key=prompt, trace_id=trace_id, request_id=f"req-{prompt}"
                )
    assert narratives["battle"].status is NarrativeStatus.BLOCKED
    assert await shipper.aflush(20)
    await shipper.aclose()
    await llm.close()
    stats = shipper.stats
    assert (stats.acknowledged, stats.dropped, stats.unconvertible, stats.rejected) == (8, 0, 0, 0)
    assert (llm.sink_errors, generator.sink_errors) == (0, 0)

    calm = await _by_kind(connection, requests["calm"])
    assert set(calm) == {"routing", "inference", "guardrail"}
    for event in calm.values():
        assert (event.service, event.instance) == ("storyteller", "pod-3")
        assert event.links.request_id == "req-calm"
        assert event.links.model_version == version
    routing, inference, guardrail = calm["routing"], calm["inference"], calm["guardrail"]
    slot = routing.routing.slot
    assert slot in (common_pb2.TRAFFIC_SLOT_STABLE, common_pb2.TRAFFIC_SLOT_CANARY)
    assert routing.routing == logs_pb2.RoutingPayload(
        deployment=DEPLOYMENT,
        slot=slot,
        endpoint=STABLE if slot == common_pb2.TRAFFIC_SLOT_STABLE else CANARY,
        outcome=logs_pb2.ROUTING_OUTCOME_OK,
        latency=routing.routing.latency,
    )
    assert (routing.links.deployment, routing.links.traffic_slot) == (DEPLOYMENT, slot)
    assert (inference.inference.provider, inference.inference.model_version) == ("scripted", version)
    # The model call is linked to the slot that routed it, as the gates on inference signals need.
    assert (inference.links.deployment, inference.links.traffic_slot) == (DEPLOYMENT, slot)
    assert (inference.inference.input_tokens, inference.inference.output_tokens) == (1000, 250)
    assert inference.inference.cached_input_tokens == 200
    assert inference.inference.status == logs_pb2.INFERENCE_STATUS_OK
    # 1000 input tokens at 1 USD/M plus 250 output tokens at 4 USD/M: 2000 micro-USD, whether the client
    # priced the call or the server did from the version's registry prices.
    assert (inference.inference.cost.currency_code, inference.inference.cost.micros) == ("USD", 2000)
    assert inference.inference.cost_from_registry is not prices_known_to_the_client
    assert guardrail.guardrail.decision == guardrails_pb2.DECISION_ALLOW
    assert (guardrail.guardrail.policy, guardrail.guardrail.revision) == (POLICY, 1)
    # The guardrail check knows the deployment and slot that routed it.
    assert (guardrail.links.deployment, guardrail.links.traffic_slot) == (DEPLOYMENT, slot)

    battle = await _by_kind(connection, requests["battle"])
    assert battle["guardrail"].guardrail.decision == guardrails_pb2.DECISION_BLOCK
    assert battle["guardrail"].guardrail.violation_count == 1
    assert battle["guardrail"].guardrail.highest_severity == guardrails_pb2.SEVERITY_CRITICAL
    assert battle["guardrail"].level == logs_pb2.LOG_LEVEL_WARNING
    assert battle["guardrail"].attributes["rule_ids"] == "violence"

    failed = await _by_kind(connection, requests["fail"])
    assert set(failed) == {"routing", "inference"}
    assert failed["inference"].inference.status == logs_pb2.INFERENCE_STATUS_ERROR
    assert failed["inference"].level == logs_pb2.LOG_LEVEL_ERROR
    assert "overloaded" in failed["inference"].message
    assert failed["routing"].routing.outcome == logs_pb2.ROUTING_OUTCOME_ERROR

    groups = await connection.logs.aggregate_log_events(
        filter='service = "storyteller"', group_by=[logs_pb2.LOG_GROUP_BY_KIND]
    )
    by_kind = {logs_pb2.LogEventKind.Name(group.kind): group for group in groups}
    inference_group = by_kind["LOG_EVENT_KIND_INFERENCE"]
    assert (inference_group.count, inference_group.error_count) == (3, 1)
    assert (inference_group.input_tokens, inference_group.output_tokens) == (2000, 500)
    assert inference_group.cost.micros == 4000
    guardrail_group = by_kind["LOG_EVENT_KIND_GUARDRAIL"]
    assert (guardrail_group.guardrail_checks, guardrail_group.guardrail_blocks) == (2, 1)
    assert guardrail_group.guardrail_block_rate == 0.5
    routing_group = by_kind["LOG_EVENT_KIND_ROUTING"]
    assert (routing_group.count, routing_group.error_count, routing_group.latency_count) == (3, 1, 3)


async def test_standalone_with_the_log_collector_away_every_consumer_works_on() -> None:
    # Nothing listens on the port: the shipper never connects, and must never hold a caller up.
    shipper = LogShipper(f"127.0.0.1:{free_port()}", service="storyteller", flush_interval=0.05)
    version = "models/story/versions/1"
    llm = LLMClient(ScriptedProvider(), model=ConfiguredModel("story", version=version), events=shipper)
    generator = NarrativeGenerator(llm, events=shipper)

    async def endpoint(payload: Any, target: RouteTarget) -> Any:
        return await generator.generate(payload, deployment=target.deployment, traffic_slot=target.slot)

    route = static_table(DEPLOYMENT, [STABLE], stable_model_version=version)
    async with ServiceCoordinator(
        static_routes={DEPLOYMENT: route}, transport=InProcessTransport({STABLE: endpoint}), events=shipper
    ) as coordinator:
        narratives = [await coordinator.call(DEPLOYMENT, "calm", routing_key=f"k{i}") for i in range(3)]
    assert [narrative.status for narrative in narratives] == [NarrativeStatus.UNCHECKED] * 3
    assert await shipper.aflush(0.3) is False
    await shipper.aclose(timeout=0.3)
    await llm.close()
    stats = shipper.stats
    # A routing and an inference event per call (no monitor, no guardrail event), none delivered.
    assert (stats.accepted, stats.acknowledged, stats.abandoned) == (6, 0, 6)
