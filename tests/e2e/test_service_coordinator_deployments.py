"""Orchestration with the deployment manager: ServiceCoordinator against the real server on loopback (routing
follows a rollout through the watch, agrees with ResolveRoute, survives the server going away mid-stream,
reports a failing endpoint), and standalone, routing by a configured table with no server configured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from modelplane.client import BackoffPolicy, Connection, connect
from modelplane.client.events import RoutingEvent
from modelplane.orchestration import (
    EndpointFailed,
    InProcessTransport,
    RouteTarget,
    ServiceCoordinator,
    TrafficTable,
)
from modelplane.orchestration.traffic import static_table
from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.config import ServerConfig
from modelplane.v1 import common_pb2, deployments_pb2, registry_pb2
from tests.support.loopback import until

DEPLOYMENT = "deployments/chat-prod"
STABLE = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")
CANARY = ("10.0.1.1:8000", "10.0.1.2:8000")
SLOTS = {common_pb2.TRAFFIC_SLOT_STABLE: "stable", common_pb2.TRAFFIC_SLOT_CANARY: "canary"}


def config(database_url: str, address: str = "127.0.0.1:0") -> ServerConfig:
    return ServerConfig(
        address=address,
        database_url=database_url,
        auth=False,
        watch_progress_interval=0.5,
        health_probe_interval=0.1,
        shutdown_grace=0.5,
    )


@pytest.fixture
async def start(database_url: str) -> AsyncIterator[Callable[[str], Awaitable[ModelplaneServer]]]:
    started: list[ModelplaneServer] = []

    async def start_at(address: str = "127.0.0.1:0") -> ModelplaneServer:
        server = build_server(config(database_url, address))
        await server.start()
        started.append(server)
        await server.wait_serving(timeout=30)
        return server

    yield start_at
    for server in reversed(started):
        await server.stop(grace=0)


@pytest.fixture
async def server(start: Callable[[str], Awaitable[ModelplaneServer]]) -> ModelplaneServer:
    return await start("127.0.0.1:0")


@pytest.fixture
async def connection(server: ModelplaneServer) -> AsyncIterator[Connection]:
    async with connect(server.target, timeout=5.0) as conn:
        yield conn


async def seed(connection: Connection) -> tuple[str, str]:
    """models/chat with two versions, and deployments/chat-prod serving the first on STABLE."""
    registry = connection.registry
    await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
    versions = []
    for uri in ("openai:gpt-4o-mini", "openai:gpt-4o"):
        version = await registry.create_model_version(
            parent="models/chat",
            model_version=registry_pb2.ModelVersion(
                source_uri=uri,
                capabilities=[registry_pb2.CAPABILITY_CHAT],
                context_window=128_000,
                max_output_tokens=4_096,
                pricing=registry_pb2.TokenPricing(currency_code="USD"),
            ),
        )
        versions.append(version.name)
    await connection.deployments.create_deployment(
        deployment_id="chat-prod",
        deployment=deployments_pb2.Deployment(
            environment="prod",
            model="models/chat",
            traffic=deployments_pb2.TrafficTable(
                stable=deployments_pb2.SlotTraffic(
                    model_version=versions[0],
                    endpoints=[deployments_pb2.Endpoint(address=address) for address in STABLE],
                )
            ),
        ),
    )
    return versions[0], versions[1]


def canary_rollout(version: str, *weights: int) -> deployments_pb2.Rollout:
    return deployments_pb2.Rollout(
        target_version=version,
        endpoints=[deployments_pb2.Endpoint(address=address) for address in CANARY],
        strategy=deployments_pb2.ROLLOUT_STRATEGY_CANARY,
        steps=[
            deployments_pb2.RolloutStep(weight_bp=weight, pause_until_promoted=True) for weight in weights
        ],
    )


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[RoutingEvent] = []

    def emit(self, event: object) -> None:
        assert isinstance(event, RoutingEvent)
        self.events.append(event)


def canary_weight(coordinator: ServiceCoordinator) -> int:
    table = coordinator.table(DEPLOYMENT)
    return table.canary_weight_bp if table is not None else -1


async def test_routing_follows_a_rollout_through_the_watch(connection: Connection) -> None:
    first, second = await seed(connection)
    coordinator = ServiceCoordinator(deployments=connection.deployments, watch=[DEPLOYMENT])
    async with coordinator:
        table = coordinator.table(DEPLOYMENT)
        assert table is not None
        assert table.source == "deployment_manager"
        assert table.stable.model_version == first
        keys = [f"user-{index}" for index in range(20_000)]
        assert {coordinator.route(DEPLOYMENT, key).slot for key in keys[:2_000]} == {"stable"}

        started = await connection.deployments.start_rollout(
            parent=DEPLOYMENT, rollout=canary_rollout(second, 1_000, 5_000, 10_000)
        )
        rollout = started.rollout.name
        # The canary gets no weight before its endpoints are ready.
        assert started.rollout.state == deployments_pb2.ROLLOUT_STATE_WAITING_READY
        for address in CANARY:
            await coordinator.report_health(DEPLOYMENT, address, ready=True)
        await until(lambda: canary_weight(coordinator) == 1_000, "the 10% step reached the coordinator")
        at_ten = {key for key in keys if coordinator.route(DEPLOYMENT, key).slot == "canary"}
        assert abs(len(at_ten) / len(keys) - 0.10) < 0.01
        assert coordinator.route(DEPLOYMENT, next(iter(at_ten))).rollout == rollout

        await connection.deployments.promote_rollout(name=rollout)
        await until(lambda: canary_weight(coordinator) == 5_000, "the 50% step reached the coordinator")
        at_fifty = {key for key in keys if coordinator.route(DEPLOYMENT, key).slot == "canary"}
        assert at_ten <= at_fifty
        assert abs(len(at_fifty) / len(keys) - 0.50) < 0.01

        await connection.deployments.promote_rollout(name=rollout, to_end=True)

        def promoted() -> bool:
            table = coordinator.table(DEPLOYMENT)
            return table is not None and table.stable.model_version == second and table.canary_weight_bp == 0

        await until(promoted, "the promoted table reached the coordinator")
        target = coordinator.route(DEPLOYMENT, "user-1")
        assert (target.slot, target.model_version) == ("stable", second)
        assert target.endpoint in CANARY


async def test_local_routing_agrees_with_resolve_route(connection: Connection) -> None:
    _, second = await seed(connection)
    started = await connection.deployments.start_rollout(
        parent=DEPLOYMENT, rollout=canary_rollout(second, 2_500, 10_000)
    )
    for address in CANARY:
        await connection.deployments.report_endpoint_health(
            deployment=DEPLOYMENT, address=address, ready=True
        )
    # One stable endpoint down: both sides must skip it the same way.
    await connection.deployments.report_endpoint_health(deployment=DEPLOYMENT, address=STABLE[1], ready=False)
    coordinator = ServiceCoordinator(deployments=connection.deployments, watch=[DEPLOYMENT])
    async with coordinator:

        def settled() -> bool:
            table = coordinator.table(DEPLOYMENT)
            return (
                table is not None and table.canary_weight_bp == 2_500 and STABLE[1] in table.stable.not_ready
            )

        await until(settled, "the coordinator has the 25% table with one stable endpoint down")
        keys = [f"key-{index}" for index in range(100_000)]
        local = [coordinator.route(DEPLOYMENT, key) for key in keys]
        assert STABLE[1] not in {target.endpoint for target in local}
        assert abs(sum(target.slot == "canary" for target in local) / len(keys) - 0.25) < 0.01
        assert {target.rollout for target in local if target.slot == "canary"} == {started.rollout.name}

        # ResolveRoute for a spread-out sample of 2,000 of the 100,000 keys, 50 calls at a time.
        sample = range(0, len(keys), 50)
        for chunk_start in range(0, len(sample), 50):
            indexes = sample[chunk_start : chunk_start + 50]
            answers = await asyncio.gather(
                *(
                    connection.deployments.resolve_route(deployment=DEPLOYMENT, routing_key=keys[i])
                    for i in indexes
                )
            )
            for index, answer in zip(indexes, answers, strict=True):
                mine = local[index]
                assert (answer.endpoint.address, SLOTS[answer.slot], answer.model_version) == (
                    mine.endpoint,
                    mine.slot,
                    mine.model_version,
                ), keys[index]
                assert answer.revision == mine.revision


async def test_routing_survives_the_server_going_away_and_resyncs(
    connection: Connection, server: ModelplaneServer, start: Callable[[str], Awaitable[ModelplaneServer]]
) -> None:
    first, second = await seed(connection)
    events: list[object] = []

    class Sink:
        def emit(self, event: object) -> None:
            events.append(event)

    async def serve(payload: Any, target: RouteTarget) -> str:
        return f"{target.model_version}@{target.endpoint}"

    transport = InProcessTransport(dict.fromkeys((*STABLE, *CANARY), serve))
    coordinator = ServiceCoordinator(
        deployments=connection.deployments,
        transport=transport,
        events=Sink(),
        watch=[DEPLOYMENT],
        reconnect=BackoffPolicy(initial=0.02, maximum=0.2, jitter=0.5),
        report_health=False,
    )
    async with coordinator:
        before = coordinator.table(DEPLOYMENT)
        assert before is not None
        assert coordinator.is_synced(DEPLOYMENT)
        target = server.target
        await server.stop(grace=0)
        await until(lambda: not coordinator.is_synced(DEPLOYMENT), "the coordinator noticed the server left")
        # The control plane is gone: calls go on with the last table.
        for index in range(20):
            answer = await coordinator.call(DEPLOYMENT, {"n": index}, routing_key=f"u{index}")
            assert answer.startswith(f"{first}@")
        assert coordinator.table(DEPLOYMENT) == before

        # Meanwhile the deployment changes through another replica on the same database.
        other = await start("127.0.0.1:0")
        async with connect(other.target) as elsewhere:
            await elsewhere.deployments.start_rollout(
                parent=DEPLOYMENT,
                rollout=deployments_pb2.Rollout(
                    target_version=second,
                    endpoints=[deployments_pb2.Endpoint(address=address) for address in CANARY],
                    strategy=deployments_pb2.ROLLOUT_STRATEGY_IMMEDIATE,
                ),
            )
        # The first server's address answers again: the coordinator reconnects and resyncs.
        await start(target)

        def resynced() -> bool:
            table: TrafficTable | None = coordinator.table(DEPLOYMENT)
            return (
                coordinator.is_synced(DEPLOYMENT)
                and table is not None
                and table.stable.model_version == second
            )

        await until(resynced, "the coordinator resynced after the restart", within=30)
        answer = await coordinator.call(DEPLOYMENT, {}, routing_key="u1")
        assert answer.startswith(f"{second}@")
    routed = [event for event in events if isinstance(event, RoutingEvent)]
    assert len(routed) == 21
    assert all(event.outcome == "ok" and event.routed_by == "deployment_manager" for event in routed)


async def test_failing_endpoint_is_reported_not_ready(connection: Connection) -> None:
    await seed(connection)

    async def serve(payload: Any, target: RouteTarget) -> str:
        if target.endpoint == STABLE[0]:
            raise EndpointFailed(target.endpoint, "model crashed")
        return "ok"

    coordinator = ServiceCoordinator(
        deployments=connection.deployments,
        transport=InProcessTransport(dict.fromkeys(STABLE, serve)),
        watch=[DEPLOYMENT],
        unhealthy_after=2,
    )
    async with coordinator:
        keys = [f"k{index}" for index in range(200)]
        doomed = [key for key in keys if coordinator.route(DEPLOYMENT, key).endpoint == STABLE[0]][:2]
        for key in doomed:
            with pytest.raises(EndpointFailed):
                await coordinator.call(DEPLOYMENT, {}, routing_key=key)

        def taken_out() -> bool:
            table = coordinator.table(DEPLOYMENT)
            return table is not None and STABLE[0] in table.stable.not_ready

        await until(taken_out, "the failing endpoint was reported and the table followed")
        assert await coordinator.call(DEPLOYMENT, {}, routing_key=doomed[0]) == "ok"


async def test_standalone_with_no_deployment_manager_a_configured_table_routes() -> None:
    sink = CollectingSink()
    route = static_table(
        DEPLOYMENT,
        STABLE,
        canary=CANARY,
        canary_weight_bp=2_500,
        stable_model_version="models/chat/versions/1",
    )

    async def serve(payload: Any, target: RouteTarget) -> str:
        return f"{target.endpoint} {payload}"

    transport = InProcessTransport(dict.fromkeys(STABLE + CANARY, serve))
    async with ServiceCoordinator(
        static_routes={DEPLOYMENT: route}, transport=transport, events=sink
    ) as coordinator:
        keys = [f"user-{index}" for index in range(400)]
        answers = [await coordinator.call(DEPLOYMENT, "hello", routing_key=key) for key in keys]
    assert {answer.split(" ")[0] for answer in answers} <= set(STABLE + CANARY)
    canary = sum(answer.split(" ")[0] in CANARY for answer in answers)
    assert 0.15 < canary / len(keys) < 0.35
    assert [event.routed_by for event in sink.events] == ["static"] * len(keys)
    assert {(event.outcome, event.table_revision) for event in sink.events} == {("ok", 0)}
