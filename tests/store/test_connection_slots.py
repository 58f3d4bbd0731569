"""Postgres out of connection slots: calls that need a new connection hear STORAGE_UNAVAILABLE saying so, the
log says it once an episode, and health stays SERVING while the replica holds connections (see health.py).

The slots run out for real: the pool logs in as a role with CONNECTION LIMIT 1, which Postgres enforces
as it enforces max_connections (SQLSTATE 53300, too many connections).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from modelplane.server.errors import StorageUnavailable
from modelplane.server.health import HealthReporter
from modelplane.server.store.pool import Database, PoolSettings
from modelplane.server.store.urls import with_database


def _as_role(url: str, role: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{role}@{rest.rpartition('@')[2]}"


@pytest.fixture
async def one_slot_url(admin_url: str, database_url: str) -> AsyncIterator[str]:
    """The test database's URL as a role that Postgres lets hold one connection at a time."""
    role = f"mp_test_slots_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url, timeout=10)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
        await admin.execute(f'GRANT SELECT ON schema_migrations TO "{role}"')
        yield _as_role(database_url, role)
        await admin.execute(f'DROP OWNED BY "{role}"')
    finally:
        await admin.close()
        cluster = await asyncpg.connect(with_database(admin_url, "postgres"), timeout=10)
        try:
            await cluster.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await cluster.close()


async def test_calls_beyond_the_slots_fail_clearly_and_health_stays_serving(
    one_slot_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(one_slot_url, PoolSettings(min_size=1, max_size=4))
    await database.open()
    health = HealthReporter(database, (), probe_interval=0.1)
    try:
        with caplog.at_level(logging.DEBUG, logger="modelplane.server.store.pool"):
            async with database.connection() as held:
                assert await held.fetchval("SELECT 1") == 1
                for _ in range(3):
                    with pytest.raises(StorageUnavailable, match="no free connection slot"):
                        async with database.connection():
                            pass  # pragma: no cover - never reached
                # The probe finds no connection either, yet this replica is busy, not cut off.
                assert await health.probe_once()
            assert await health.probe_once()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "max_connections" in warnings[0].getMessage()
        assert database.refusals.count >= 3
    finally:
        await database.close()


async def test_a_replica_holding_no_connection_is_not_serving(one_slot_url: str) -> None:
    first = Database(one_slot_url, PoolSettings(min_size=1, max_size=1))
    await first.open()
    # Opened with no connection of its own while the only slot is taken.
    second = Database(one_slot_url, PoolSettings(min_size=0, max_size=2))
    await second.open()
    try:
        with pytest.raises(StorageUnavailable, match="no free connection slot"):
            async with second.connection():
                pass  # pragma: no cover - never reached
        assert not await HealthReporter(second, (), probe_interval=0.1).probe_once()
    finally:
        await second.close()
        await first.close()
