"""A Postgres that stops answering (a TCP proxy in front of it stalls, keeping every connection open).

The contract: a call's database work ends by its deadline or the storage timeout, whichever comes first,
so the client hears UNAVAILABLE / STORAGE_UNAVAILABLE within 2 s; a stop keeps its grace period, the pool's
connections terminated rather than waited on; nothing is left for asyncio to report later.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import grpc
import pytest

from modelplane.server.app import STOP_AFTER_GRACE, ModelplaneServer
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support import StartServer, error_info, retry_info, wait_health
from tests.support.loopback import until
from tests.support.tcp_proxy import TcpProxy

# The design promises an answer within 2 s; as the call's deadline, a slower answer fails the test as
# DEADLINE_EXCEEDED instead of UNAVAILABLE.
STORAGE_ANSWER_DEADLINE = 2.0

# A bound on a stop that only a stop waiting on Postgres exceeds (grace + the steps after it + slack for a
# loaded machine); a failure bound, not a measurement.
STOP_SLACK = 3.0


async def _get_missing_model(channel: grpc.aio.Channel, timeout: float | None) -> grpc.aio.AioRpcError:  # noqa: ASYNC109
    stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetModel(registry_pb2.GetModelRequest(name="models/x"), timeout=timeout)
    return raised.value


async def _assert_served(channel: grpc.aio.Channel) -> None:
    """The server answers from the database: the missing model is NOT_FOUND."""
    error = await _get_missing_model(channel, STORAGE_ANSWER_DEADLINE)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


def _background_releases() -> list[asyncio.Task[object]]:
    """asyncpg's releases of pooled connections still running: each waits on the hung Postgres."""
    return [task for task in asyncio.all_tasks() if "PoolConnectionHolder.release" in repr(task.get_coro())]


async def test_a_call_on_a_hung_postgres_answers_storage_unavailable_within_two_seconds(
    proxy: TcpProxy, database_url: str, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server: ModelplaneServer = await start_server(database_url=proxy.url_through(database_url))
    async with grpc.aio.insecure_channel(server.target) as channel:
        await _assert_served(channel)

        proxy.stall()
        with caplog.at_level(logging.INFO, logger="modelplane.server.store.pool"):
            for _ in range(3):
                error = await _get_missing_model(channel, STORAGE_ANSWER_DEADLINE)
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                assert error_info(error).reason == "STORAGE_UNAVAILABLE"
                assert retry_info(error) is not None
            await wait_health(channel, "NOT_SERVING")
        # One line for the outage, not one a call.
        said = [r.getMessage() for r in caplog.records if r.name == "modelplane.server.store.pool"]
        assert len([line for line in said if line.startswith("database unavailable")]) == 1, said
        # Each says what failed, also when the error has no text of its own (a connect that timed out).
        assert not [line for line in said if line.endswith(": ")], said

        proxy.resume()
        await wait_health(channel, "SERVING")
        await _assert_served(channel)
    # Every connection a call or probe gave up on was terminated, not left releasing in the background,
    # where its failure would be reported when collected ("Task exception was never retrieved").
    await until(lambda: not _background_releases(), "the background releases ending")
    gc.collect()
    await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_stop_keeps_its_grace_period_while_postgres_is_hung(
    proxy: TcpProxy, database_url: str, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    grace = 1.0
    server: ModelplaneServer = await start_server(database_url=proxy.url_through(database_url))
    async with grpc.aio.insecure_channel(server.target) as channel:
        await _assert_served(channel)
        proxy.stall()
        # A call in flight on the hung database while the stop begins.
        in_flight = asyncio.create_task(_get_missing_model(channel, None))
        await asyncio.sleep(0.2)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            try:
                async with asyncio.timeout(grace + STOP_AFTER_GRACE + STOP_SLACK):
                    await server.stop(grace)
            except TimeoutError:
                raise AssertionError("the stop waited on the hung Postgres past its grace period") from None
            # Ended by the storage timeout or by the end of the grace period, whichever came first.
            assert (await in_flight).code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            # A release or close left running in the background would report its failure when collected.
            gc.collect()
            await asyncio.sleep(0.5)
            gc.collect()
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert noisy == []
    assert "stopped" in [r.getMessage() for r in caplog.records if r.name == "modelplane.server.app"]
