"""Postgres going away and coming back under a running server, through a TCP proxy the test cuts.

The contract: every DB-backed RPC answers UNAVAILABLE / STORAGE_UNAVAILABLE with RetryInfo within 2 s,
health turns NOT_SERVING, the process stays up, and everything recovers by itself.
"""

from __future__ import annotations

import grpc
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support import StartServer, error_info, health_status, retry_info, wait_health
from tests.support.tcp_proxy import TcpProxy

# The design promises an answer within 2 s; as the call's deadline, a slower answer fails the test
# as DEADLINE_EXCEEDED instead of UNAVAILABLE.
STORAGE_ANSWER_DEADLINE = 2.0


async def _get_missing_model(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetModel(registry_pb2.GetModelRequest(name="models/x"), timeout=STORAGE_ANSWER_DEADLINE)
    return raised.value


def _assert_storage_unavailable(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert error_info(error).reason == "STORAGE_UNAVAILABLE"
    assert retry_info(error) is not None


async def test_outage_answers_unavailable_and_recovers(
    proxy: TcpProxy, database_url: str, start_server: StartServer
) -> None:
    server: ModelplaneServer = await start_server(database_url=proxy.url_through(database_url))
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await health_status(channel) == "SERVING"
        assert (await _get_missing_model(channel)).code() == grpc.StatusCode.NOT_FOUND

        await proxy.cut()
        _assert_storage_unavailable(await _get_missing_model(channel))
        await wait_health(channel, "NOT_SERVING")
        # Still up and still answering, quickly and with the same status, while the outage lasts.
        _assert_storage_unavailable(await _get_missing_model(channel))

        await proxy.restore()
        await wait_health(channel, "SERVING")
        assert (await _get_missing_model(channel)).code() == grpc.StatusCode.NOT_FOUND


async def test_server_started_without_postgres_serves_once_it_is_reachable(
    proxy: TcpProxy, database_url: str, start_server: StartServer
) -> None:
    await proxy.cut()
    server: ModelplaneServer = await start_server(
        database_url=proxy.url_through(database_url), wait_serving=False
    )
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await health_status(channel) == "NOT_SERVING"
        _assert_storage_unavailable(await _get_missing_model(channel))

        await proxy.restore()
        await server.wait_serving(timeout=15)
        assert await health_status(channel) == "SERVING"
        assert (await _get_missing_model(channel)).code() == grpc.StatusCode.NOT_FOUND
