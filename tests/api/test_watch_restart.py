"""Watches through the typed clients across a real server restart: they resume alone, no gap, no repeat.

A server on a throw-away database is stopped (its streams end with UNAVAILABLE / SHUTTING_DOWN) while a
client watches, and another server starts on the same port and database. What the watcher received, before
and after, must equal the change log read afterwards by a fresh watch from revision 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

from modelplane.client import RetryPolicy, connect
from modelplane.client.channel import Connection
from modelplane.server.app import ModelplaneServer
from modelplane.v1 import deployments_pb2, registry_pb2
from tests.support import StartServer

# Generous enough to outlast a server restart on a busy machine: the watch must not give up meanwhile.
PATIENT = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.5)
# Only a guard against a hang; nothing here measures time.
GUARD = 60

ResponseT = TypeVar("ResponseT")
EventT = TypeVar("EventT")
ModelEvent = tuple[int, str, int]  # (revision, resource, kind)
DeploymentEvent = tuple[int, int, int]  # (revision, kind, health of the first stable endpoint)


async def _restart(server: ModelplaneServer, start_server: StartServer) -> ModelplaneServer:
    """Stops `server` and starts another one on its port and database."""
    port = server.target.rsplit(":", 1)[1]
    await server.stop()
    return await start_server(address=f"127.0.0.1:{port}")


def _model_event(response: registry_pb2.WatchModelsResponse) -> ModelEvent | None:
    if not response.HasField("change"):
        return None
    change = response.change
    return change.revision, change.resource, change.kind


def _deployment_event(response: deployments_pb2.WatchDeploymentResponse) -> DeploymentEvent | None:
    if not response.HasField("change"):
        return None
    change = response.change
    return change.revision, change.kind, change.deployment.traffic.stable.endpoints[0].health


async def _events(
    stream: AsyncGenerator[ResponseT, None], event_of: Callable[[ResponseT], EventT | None], count: int
) -> list[EventT]:
    """The next `count` changes of a watch, as `event_of` sees them; progress marks are passed over."""
    events: list[EventT] = []
    async with asyncio.timeout(GUARD):
        async for response in stream:
            event = event_of(response)
            if event is not None:
                events.append(event)
                if len(events) == count:
                    return events
    raise AssertionError(f"the watch ended after {events}")


async def _model_with_version(writer: Connection) -> registry_pb2.ModelVersion:
    await writer.registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
    return await writer.registry.create_model_version(
        parent="models/chat",
        model_version=registry_pb2.ModelVersion(
            source_uri="openai:gpt-4o",
            context_window=8_192,
            max_output_tokens=1_024,
            pricing=registry_pb2.TokenPricing(currency_code="USD"),
        ),
    )


async def _registry_log(connection: Connection, count: int) -> list[ModelEvent]:
    """The first `count` registry changes, read by a watch from revision 1 without resumption."""
    stream = connection.registry.watch_models(start_revision=1, resume=False)
    try:
        return await _events(stream, _model_event, count)
    finally:
        await stream.aclose()


async def test_a_models_watch_resumes_across_a_restart(start_server: StartServer) -> None:
    first = await start_server()
    async with (
        connect(first.target, retry=PATIENT) as writer,
        connect(first.target) as watcher,
    ):
        stream = watcher.registry.watch_models(start_revision=1, retry=PATIENT)
        version = await _model_with_version(writer)
        # One revision, two changes: the alias and the version it now names.
        await writer.registry.set_alias(name="models/chat/aliases/prod", version=version.name)
        before = await _events(stream, _model_event, 3)

        second = await _restart(first, start_server)
        await writer.registry.create_model(model_id="after", model=registry_pb2.Model(provider="openai"))
        after = await _events(stream, _model_event, 2)
        await stream.aclose()

        log = await _registry_log(writer, 5)

    assert second.target == first.target
    assert before + after == log
    assert [resource for _, resource, _ in log] == [
        "models/chat",
        version.name,
        "models/chat/aliases/prod",
        version.name,
        "models/after",
    ]
    assert log[0][0] == 1


async def test_a_deployment_watch_resumes_across_a_restart(start_server: StartServer) -> None:
    first = await start_server()
    name = "deployments/chat-prod"
    address = "10.0.0.1:8000"
    async with (
        connect(first.target, retry=PATIENT) as writer,
        connect(first.target) as watcher,
    ):
        version = await _model_with_version(writer)
        await writer.deployments.create_deployment(
            deployment_id="chat-prod",
            deployment=deployments_pb2.Deployment(
                environment="prod",
                model="models/chat",
                traffic=deployments_pb2.TrafficTable(
                    stable=deployments_pb2.SlotTraffic(
                        model_version=version.name, endpoints=[deployments_pb2.Endpoint(address=address)]
                    )
                ),
            ),
        )
        stream = watcher.deployments.watch_deployment(deployment=name, retry=PATIENT)
        # The stream opens with its first read: the current state, before the change that follows.
        before = await _events(stream, _deployment_event, 1)
        await writer.deployments.report_endpoint_health(deployment=name, address=address, ready=False)
        before += await _events(stream, _deployment_event, 1)

        await _restart(first, start_server)
        await writer.deployments.report_endpoint_health(deployment=name, address=address, ready=True)
        await writer.deployments.report_endpoint_health(deployment=name, address=address, ready=False)
        after = await _events(stream, _deployment_event, 2)
        await stream.aclose()

        replay = writer.deployments.watch_deployment(deployment=name, start_revision=1, resume=False)
        log = await _events(replay, _deployment_event, 4)
        await replay.aclose()

    assert before + after == log
    assert [health for _, _, health in log] == [
        deployments_pb2.ENDPOINT_HEALTH_UNSPECIFIED,
        deployments_pb2.ENDPOINT_HEALTH_NOT_READY,
        deployments_pb2.ENDPOINT_HEALTH_READY,
        deployments_pb2.ENDPOINT_HEALTH_NOT_READY,
    ]
