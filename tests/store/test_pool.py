"""The two pools of a Database: bulk writes have connections of their own, which exchange timestamptz
as Postgres's integer microseconds, while every other call keeps datetimes and its own connections."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from modelplane.server.errors import StorageUnavailable
from modelplane.server.store.pool import Database, PoolSettings


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
