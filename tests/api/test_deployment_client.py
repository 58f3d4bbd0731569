"""DeploymentClient against the real server: every RPC through the typed client, and the reason classes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from modelplane.client import DeploymentClient, ModelRegistryClient
from modelplane.client.errors import (
    DeploymentAlreadyExists,
    DeploymentNotFound,
    IllegalTransition,
    InvalidArgument,
    NoReadyEndpoint,
    RolloutInProgress,
    RolloutNotFound,
)
from modelplane.server.app import ModelplaneServer
from modelplane.v1 import common_pb2, deployments_pb2, registry_pb2

NAME = "deployments/chat-prod"
STABLE = ("10.0.0.1:8000", "10.0.0.2:8000")
CANARY = ("10.0.1.1:8000",)


@pytest.fixture
async def clients(server: ModelplaneServer) -> AsyncIterator[tuple[DeploymentClient, list[str]]]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        registry = ModelRegistryClient(channel)
        await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
        versions = []
        for uri in ("openai:a", "openai:b", "openai:c"):
            version = await registry.create_model_version(
                parent="models/chat",
                model_version=registry_pb2.ModelVersion(
                    source_uri=uri,
                    capabilities=[registry_pb2.CAPABILITY_CHAT],
                    context_window=8_192,
                    max_output_tokens=1_024,
                    pricing=registry_pb2.TokenPricing(currency_code="USD"),
                ),
            )
            versions.append(version.name)
        yield DeploymentClient(channel), versions


def endpoints(addresses: tuple[str, ...]) -> list[deployments_pb2.Endpoint]:
    return [deployments_pb2.Endpoint(address=address) for address in addresses]


async def create(client: DeploymentClient, version: str) -> deployments_pb2.Deployment:
    return await client.create_deployment(
        deployment_id="chat-prod",
        deployment=deployments_pb2.Deployment(
            environment="prod",
            model="models/chat",
            traffic=deployments_pb2.TrafficTable(
                stable=deployments_pb2.SlotTraffic(model_version=version, endpoints=endpoints(STABLE))
            ),
        ),
    )


def canary(version: str, *weights: int) -> deployments_pb2.Rollout:
    return deployments_pb2.Rollout(
        target_version=version,
        endpoints=endpoints(CANARY),
        strategy=deployments_pb2.ROLLOUT_STRATEGY_CANARY,
        steps=[
            deployments_pb2.RolloutStep(weight_bp=weight, pause_until_promoted=True) for weight in weights
        ],
    )


async def test_deployment_crud(clients: tuple[DeploymentClient, list[str]]) -> None:
    client, versions = clients
    created = await create(client, versions[0])
    assert created.name == NAME
    assert created.etag
    with pytest.raises(DeploymentAlreadyExists):
        await create(client, versions[0])
    assert (await client.get_deployment(name=NAME)).traffic.stable.model_version == versions[0]
    assert [d.name async for d in client.list_deployments(page_size=1)] == [NAME]
    assert [d.name async for d in client.list_deployments(model="models/chat")] == [NAME]
    created.description = "chat in production"
    updated = await client.update_deployment(deployment=created, update_mask=["description"])
    assert updated.description == "chat in production"
    with pytest.raises(DeploymentNotFound):
        await client.get_deployment(name="deployments/nope")
    await client.delete_deployment(name=NAME, etag=updated.etag)
    with pytest.raises(DeploymentNotFound):
        await client.get_deployment(name=NAME)


async def test_rollout_actions_history_and_routes(clients: tuple[DeploymentClient, list[str]]) -> None:
    client, versions = clients
    await create(client, versions[0])
    plan = await client.plan_rollout(parent=NAME, rollout=canary(versions[1], 2_000, 10_000))
    assert [stage.traffic.canary.weight_bp for stage in plan.stages if stage.traffic.HasField("canary")]
    started = await client.start_rollout(parent=NAME, rollout=canary(versions[1], 2_000, 10_000))
    rollout = started.rollout.name
    assert started.rollout.state == deployments_pb2.ROLLOUT_STATE_WAITING_READY
    with pytest.raises(RolloutInProgress):
        await client.start_rollout(parent=NAME, rollout=canary(versions[2], 5_000))
    report = await client.report_endpoint_health(deployment=NAME, address=CANARY[0], ready=True)
    assert report.changed
    assert report.deployment.traffic.canary.weight_bp == 2_000
    paused = await client.pause_rollout(name=rollout, reason="look closer")
    assert paused.rollout.state == deployments_pb2.ROLLOUT_STATE_PAUSED
    with pytest.raises(IllegalTransition):
        await client.pause_rollout(name=rollout)
    resumed = await client.resume_rollout(name=rollout)
    assert resumed.rollout.state == deployments_pb2.ROLLOUT_STATE_PROGRESSING
    route = await client.resolve_route(deployment=NAME, routing_key="user-1")
    assert route.slot in (common_pb2.TRAFFIC_SLOT_STABLE, common_pb2.TRAFFIC_SLOT_CANARY)
    assert route.endpoint.address in (*STABLE, *CANARY)
    rolled_back = await client.rollback_rollout(name=rollout, reason="errors up")
    assert rolled_back.rollout.state == deployments_pb2.ROLLOUT_STATE_ROLLED_BACK
    assert not rolled_back.deployment.traffic.HasField("canary") or (
        rolled_back.deployment.traffic.canary.weight_bp == 0
    )
    with pytest.raises(IllegalTransition):
        await client.promote_rollout(name=rollout)
    assert (await client.get_rollout(name=rollout)).state == deployments_pb2.ROLLOUT_STATE_ROLLED_BACK
    with pytest.raises(RolloutNotFound):
        await client.get_rollout(name=f"{NAME}/rollouts/99")

    second = await client.start_rollout(parent=NAME, rollout=canary(versions[2], 10_000))
    aborted = await client.abort_rollout(name=second.rollout.name)
    assert aborted.rollout.state == deployments_pb2.ROLLOUT_STATE_ABORTED
    assert [r.name async for r in client.list_rollouts(parent=NAME, page_size=1)] != []
    history = [entry async for entry in client.list_deployment_history(parent=NAME, page_size=2)]
    assert history[-1].transition == deployments_pb2.DEPLOYMENT_TRANSITION_CREATED
    assert len(history) >= 5


async def test_invalid_rollout_and_no_ready_endpoint(clients: tuple[DeploymentClient, list[str]]) -> None:
    client, versions = clients
    await create(client, versions[0])
    with pytest.raises(InvalidArgument) as invalid:
        await client.start_rollout(parent=NAME, rollout=canary(versions[1], 5_000, 2_000))
    assert any(v.field.startswith("rollout.steps") for v in invalid.value.field_violations)
    for address in STABLE:
        await client.report_endpoint_health(deployment=NAME, address=address, ready=False)
    with pytest.raises(NoReadyEndpoint):
        await client.resolve_route(deployment=NAME, routing_key="k")


async def test_watch_deployment_starts_with_the_current_state(
    clients: tuple[DeploymentClient, list[str]],
) -> None:
    client, versions = clients
    created = await create(client, versions[0])
    stream = client.watch_deployment(deployment=NAME)
    first = await anext(stream)
    assert first.change.deployment.name == NAME
    assert first.change.revision == created.revision
    await client.report_endpoint_health(deployment=NAME, address=STABLE[0], ready=False)
    second = await anext(stream)
    while not second.HasField("change"):
        second = await anext(stream)
    assert second.change.revision > first.change.revision
    assert (
        second.change.deployment.traffic.stable.endpoints[0].health
        == deployments_pb2.ENDPOINT_HEALTH_NOT_READY
    )
    await stream.aclose()
