"""The two pools of a Database: bulk writes have connections of their own, which exchange timestamptz
as Postgres's integer microseconds, while every other call keeps datetimes and its own connections; a
call's borrowing ends by its deadline or the storage timeout, and a close never waits on a hung Postgres."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime

import pytest

from modelplane.server.context import CallDeadline, current_deadline
from modelplane.server.errors import StorageUnavailable
from modelplane.server.store.pool import Database, PoolSettings
from tests.support.tcp_proxy import TcpProxy


async def test_bulk_connections_exchange_timestamps_as_integers(database: Database) -> None:
    async with database.bulk_connection() as bulk, database.connection() as plain:
        sql = "SELECT '2000-01-01 00:00:01.000002+00'::timestamptz"
        assert await bulk.fetchval(sql) == 1_000_002
        assert await plain.fetchval(sql) == datetime(2000, 1, 1, 0, 0, 1, 2, tzinfo=UTC)
        assert await bulk.fetchval("SELECT $1::timestamptz::text", -1) == "1999-12-31 23:59:59.999999+00"


async def test_bulk_writes_holding_every_bulk_connection_leave_the_others_free(database_url: str) -> None:
    database = Database(
        database_url, PoolSettings(min_size=1, max_size=2, bulk_max_size=1, acquire_timeout=0.3)
    )
    await database.open()
    try:
        async with database.bulk_connection():
            # The bulk pool is exhausted: another bulk writer waits and is told to retry...
            with pytest.raises(StorageUnavailable):
                async with database.bulk_connection():
                    pass  # pragma: no cover - never reached

            # ...while every other call still gets its connections.
            async def other_call() -> int:
                async with database.connection() as conn:
                    return int(await conn.fetchval("SELECT 1"))

            assert list(await asyncio.gather(other_call(), other_call())) == [1, 1]
    finally:
        await database.close()


async def _stalled_database(database_url: str, proxy: TcpProxy, settings: PoolSettings) -> Database:
    """A Database reached through `proxy`, connected, with its proxy then stalled."""
    database = Database(proxy.url_through(database_url), settings)
    await database.open()
    async with database.connection() as conn:
        assert await conn.fetchval("SELECT 1") == 1
    proxy.stall()
    return database


async def test_a_calls_database_work_ends_by_its_deadline_before_the_storage_timeout(
    database_url: str, proxy: TcpProxy
) -> None:
    # A storage timeout far off: only the call's deadline can end the statement in time.
    database = await _stalled_database(database_url, proxy, PoolSettings(storage_timeout=60.0))
    try:
        loop = asyncio.get_running_loop()
        current_deadline.set(CallDeadline(asyncio.current_task(), loop.time() + 0.3))
        try:
            async with asyncio.timeout(5):
                with pytest.raises(StorageUnavailable):
                    async with database.connection() as conn:
                        await conn.fetchval("SELECT 1")
        except TimeoutError:
            raise AssertionError("the statement outlived the call's deadline") from None
    finally:
        current_deadline.set(None)
        await database.close()


async def test_a_task_started_by_a_call_keeps_the_storage_timeout_not_the_calls_deadline(
    database_url: str,
) -> None:
    database = Database(database_url, PoolSettings(storage_timeout=5.0))
    await database.open()
    try:
        loop = asyncio.get_running_loop()
        # A deadline already past, as a background task started by an earlier call inherits it.
        current_deadline.set(CallDeadline(asyncio.current_task(), loop.time() - 1))

        async def background() -> int:
            async with database.connection() as conn:
                return int(await conn.fetchval("SELECT 1"))

        assert await asyncio.create_task(background()) == 1
        with pytest.raises(StorageUnavailable):
            await background()
    finally:
        current_deadline.set(None)
        await database.close()


async def test_close_terminates_connections_a_hung_postgres_never_lets_go(
    database_url: str, proxy: TcpProxy
) -> None:
    database = await _stalled_database(database_url, proxy, PoolSettings(close_timeout=0.2))
    try:
        async with asyncio.timeout(5):
            await database.close()
    except TimeoutError:
        raise AssertionError("close() waited on the hung Postgres") from None
    assert not database.is_open


async def test_a_connect_cancelled_as_its_connection_opens_leaves_no_error_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A listener that, as Postgres starting up can, lets a connection in just as its attempt is cancelled.
    opening: list[asyncio.Task[None]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for task in opening:
            task.cancel()
        await asyncio.sleep(0.05)
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                database = Database(f"postgresql://postgres@127.0.0.1:{port}/postgres")
                opening[:] = [asyncio.create_task(database.open())]
                with pytest.raises(asyncio.CancelledError):
                    await opening[0]
                await asyncio.sleep(0.1)
            # asyncio reports a future nobody read when it is collected.
            gc.collect()
            await asyncio.sleep(0)
    finally:
        listener.close()
        await listener.wait_closed()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
