"""The `liveness` health name: SERVING while the process runs, whatever the database does."""

from __future__ import annotations

import grpc

from modelplane.server.app import build_server
from modelplane.server.config import ServerConfig
from modelplane.server.health import LIVENESS
from tests.support import health_status, wait_health


async def test_liveness_stays_serving_while_the_database_is_unreachable() -> None:
    # Nothing listens on port 1: the server keeps trying to connect, its overall health NOT_SERVING.
    server = build_server(
        ServerConfig(
            address="127.0.0.1:0",
            database_url="postgresql://postgres@127.0.0.1:1/modelplane",
            auth=True,
            health_probe_interval=0.1,
        )
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            await wait_health(channel, "SERVING", service=LIVENESS)
            assert await health_status(channel) == "NOT_SERVING"
            assert await health_status(channel, LIVENESS) == "SERVING"
    finally:
        await server.stop(grace=0)


async def test_liveness_and_readiness_are_both_serving_on_a_ready_server(database_url: str) -> None:
    server = build_server(
        ServerConfig(address="127.0.0.1:0", database_url=database_url, auth=True, health_probe_interval=0.1)
    )
    await server.start()
    try:
        await server.wait_serving(timeout=30)
        async with grpc.aio.insecure_channel(server.target) as channel:
            assert await health_status(channel) == "SERVING"
            assert await health_status(channel, LIVENESS) == "SERVING"
    finally:
        await server.stop(grace=0)
