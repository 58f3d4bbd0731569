"""An old and a new server on one database through a migration, as in a rolling upgrade.

The old server runs the package's migrations; the new code is those plus one more file, applied the way a
new replica (or `modelplane migrate`) applies it. Declared expand-only, the old server keeps serving;
otherwise it turns NOT_SERVING and says why in one line.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import grpc
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.server.health import HealthReporter
from modelplane.server.store.migrations import load_migrations, migrate
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.store.test_migrations import package_schema_copy
from tests.support import StartServer, health_status, wait_health


def _new_code(tmp_path: Path, *, expand_only: bool) -> Path:
    """The package's migrations and one more: a table the old code knows nothing about."""
    folder = package_schema_copy(tmp_path / "schema")
    header = "-- modelplane: expand-only\n" if expand_only else ""
    (folder / f"{len(load_migrations()) + 1:04d}_model_notes.sql").write_text(
        f"{header}CREATE TABLE model_notes (model_id text NOT NULL, note text NOT NULL);\n", encoding="utf-8"
    )
    return folder


async def _apply(database_url: str, folder: Path) -> list[str]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await migrate(conn, load_migrations(folder))
    finally:
        await conn.close()


async def _let_probes_run() -> None:
    """Gives the servers' health loops (probing every 0.1 s in tests) time for several probes."""
    await asyncio.sleep(0.5)


async def test_old_server_keeps_serving_after_an_expand_only_migration(
    database_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    old: ModelplaneServer = await start_server()
    new_code = _new_code(tmp_path, expand_only=True)
    assert await _apply(database_url, new_code) == [load_migrations(new_code)[-1].name]

    # The new code serves the schema it migrated to...
    assert await HealthReporter(
        old.database, (), probe_interval=0.1, migrations=load_migrations(new_code)
    ).probe_once()
    # ...and so does the old one, through its own health loop and on its calls.
    assert await old.health.probe_once()
    await _let_probes_run()
    async with grpc.aio.insecure_channel(old.target) as channel:
        assert await health_status(channel) == "SERVING"
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetModel(registry_pb2.GetModelRequest(name="models/x"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_old_server_turns_not_serving_after_a_contracting_migration(
    database_url: str, start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old: ModelplaneServer = await start_server()
    new_code = _new_code(tmp_path, expand_only=False)
    with caplog.at_level(logging.INFO, logger="modelplane.server.health"):
        await _apply(database_url, new_code)
        async with grpc.aio.insecure_channel(old.target) as channel:
            await wait_health(channel, "NOT_SERVING")
        await _let_probes_run()
    latest = len(load_migrations())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # One line, however many probes ran, naming the versions and what to do.
    assert lines == [
        f"health: NOT_SERVING: the database schema is at version {latest + 1}, which needs a server that"
        f" knows schema {latest + 1} or later (its migrations since are not all expand-only), and this one"
        f" knows up to {latest}; upgrade this replica"
    ]
    # The new code serves it.
    assert await HealthReporter(
        old.database, (), probe_interval=0.1, migrations=load_migrations(new_code)
    ).probe_once()


async def test_a_server_refuses_a_database_whose_applied_migration_differs(
    database_url: str, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    finally:
        await conn.close()
    with caplog.at_level(logging.INFO):
        server: ModelplaneServer = await start_server(wait_serving=False)
        async with grpc.aio.insecure_channel(server.target) as channel:
            await _let_probes_run()
            assert await health_status(channel) == "NOT_SERVING"
    assert any("0002_registry.sql was edited after it was applied" in r.getMessage() for r in caplog.records)
