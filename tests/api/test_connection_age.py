"""A client connection is recycled after the server's max_connection_age, and calls go on without an error.

The client reaches the server through a TCP proxy that counts connections: calls keep going over one
channel across several ages, every one succeeds, and the proxy sees the client connect again (gRPC's
GOAWAY, then a new connection), so a balancer of connections would get to place it anew.
"""

from __future__ import annotations

import asyncio

from modelplane.client import NO_RETRY, connect
from modelplane.server.app import server_options
from modelplane.server.config import ServerConfig
from modelplane.v1 import registry_pb2
from tests.support import StartServer
from tests.support.tcp_proxy import TcpProxy

AGE = 0.5
# Calls spread over several ages; bounded in count, and each has its deadline.
CALLS = 60
PAUSE = 0.05


async def test_a_client_connection_is_recycled_and_calls_go_on(start_server: StartServer) -> None:
    server = await start_server(max_connection_age=AGE, max_connection_age_grace=1.0)
    host, _, port = server.target.rpartition(":")
    # No retries: a call that failed would fail the test, not be hidden by a second attempt.
    async with TcpProxy(host, int(port)) as proxy, connect(proxy.target, retry=NO_RETRY) as conn:
        await conn.registry.create_model(model_id="aged", model=registry_pb2.Model(provider="local"))
        for _ in range(CALLS):
            model = await conn.registry.get_model(name="models/aged")
            assert model.name == "models/aged"
            await asyncio.sleep(PAUSE)
        # At least one reconnection within the calls' span of several ages (gRPC jitters the age by 10%).
        assert proxy.accepted >= 2, proxy.accepted


def test_the_age_is_a_server_option_and_zero_turns_it_off() -> None:
    aged = dict(server_options(ServerConfig(max_connection_age=600, max_connection_age_grace=60)))
    assert aged["grpc.max_connection_age_ms"] == 600_000
    assert aged["grpc.max_connection_age_grace_ms"] == 60_000
    forever = dict(server_options(ServerConfig(max_connection_age=0)))
    assert "grpc.max_connection_age_ms" not in forever
