"""Several replicas starting at once on one empty database: the schema is migrated exactly once."""

from __future__ import annotations

import asyncio

import asyncpg

from modelplane.server.app import build_server
from modelplane.server.config import ServerConfig
from modelplane.server.store.migrations import latest_version, load_migrations, migrate


async def _schema_migrations(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(row["version"], row["name"]) for row in rows]


async def test_three_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    connections = [await asyncpg.connect(empty_database_url, timeout=10) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in connections))
    finally:
        await asyncio.gather(*(conn.close() for conn in connections))

    names = [m.name for m in load_migrations()]
    # One call did all the work under the lock; the others found it done.
    assert sorted(results, key=len) == [[], [], names]
    assert await _schema_migrations(empty_database_url) == [(m.version, m.name) for m in load_migrations()]


async def test_three_servers_starting_at_once_all_become_serving(empty_database_url: str) -> None:
    servers = [
        build_server(
            ServerConfig(
                address="127.0.0.1:0", database_url=empty_database_url, auth=False, health_probe_interval=0.1
            )
        )
        for _ in range(3)
    ]
    try:
        await asyncio.gather(*(server.start() for server in servers))
        await asyncio.gather(*(server.wait_serving(timeout=30) for server in servers))
        assert all(server.health.serving for server in servers)
    finally:
        await asyncio.gather(*(server.stop(grace=0) for server in servers))

    applied = await _schema_migrations(empty_database_url)
    assert [version for version, _ in applied] == list(range(1, latest_version() + 1))
