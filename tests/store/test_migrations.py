"""Migration mechanics: checksums of applied files, the bookkeeping an older server left, files that run
outside a transaction, and the directives a file declares."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from modelplane.server.store.migrations import (
    MIGRATION_LOCK_KEY,
    MigrationError,
    load_migrations,
    migrate,
    unservable,
)


def package_schema_copy(target: Path) -> Path:
    """A folder holding a copy of the package's migration files, to add to or edit."""
    target.mkdir()
    for entry in (resources.files("modelplane.server.store") / "schema").iterdir():
        if entry.name.endswith(".sql"):
            (target / entry.name).write_text(entry.read_text(encoding="utf-8"), encoding="utf-8")
    return target


async def _recorded(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return list(
            await conn.fetch("SELECT version, name, checksum, serves_from FROM schema_migrations ORDER BY 1")
        )
    finally:
        await conn.close()


async def test_each_applied_file_is_recorded_with_its_checksum(database_url: str) -> None:
    rows = await _recorded(database_url)
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in load_migrations()
    ]


async def test_an_edited_migration_is_refused_naming_the_file(database_url: str, tmp_path: Path) -> None:
    folder = package_schema_copy(tmp_path / "schema")
    edited = folder / "0003_guardrails.sql"
    edited.write_text(edited.read_text(encoding="utf-8") + "\n-- a later edit\n", encoding="utf-8")
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        with pytest.raises(MigrationError, match=r"0003_guardrails\.sql was edited after it was applied"):
            await migrate(conn, load_migrations(folder))
        # Refused before anything ran, and the lock is free for the next try.
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def test_a_renamed_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    folder = package_schema_copy(tmp_path / "schema")
    shutil.move(folder / "0002_registry.sql", folder / "0002_models.sql")
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        with pytest.raises(MigrationError, match=r"was applied as 0002_registry\.sql"):
            await migrate(conn, load_migrations(folder))
    finally:
        await conn.close()


async def test_bookkeeping_left_by_an_older_server_gets_its_columns_and_checksums(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        # The table as servers before checksums made it, with rows they inserted.
        await conn.execute("ALTER TABLE schema_migrations DROP COLUMN checksum, DROP COLUMN serves_from")
        assert await migrate(conn) == []
    finally:
        await conn.close()
    rows = await _recorded(database_url)
    assert [r["checksum"] for r in rows] == [m.checksum for m in load_migrations()]


async def test_a_no_transaction_migration_can_build_an_index_concurrently(
    database_url: str, tmp_path: Path
) -> None:
    folder = package_schema_copy(tmp_path / "schema")
    version = len(load_migrations()) + 1
    (folder / f"{version:04d}_models_display_name_index.sql").write_text(
        "-- modelplane: no-transaction, expand-only\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS models_display_name ON models (display_name);\n",
        encoding="utf-8",
    )
    migrations = load_migrations(folder)
    assert not migrations[-1].in_transaction
    assert migrations[-1].expand_only
    before = (await _recorded(database_url))[-1]["serves_from"]
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        assert await migrate(conn, migrations) == [migrations[-1].name]
        assert await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'models_display_name'::regclass"
        )
    finally:
        await conn.close()
    # Expand-only: serves_from stays what it was (the package's own files may be expand-only too), so
    # code that knows the schema before it still serves the one after it.
    after = (await _recorded(database_url))[-1]["serves_from"]
    assert after == before
    assert after <= version - 1


def test_an_unknown_directive_is_refused(tmp_path: Path) -> None:
    folder = package_schema_copy(tmp_path / "schema")
    (folder / f"{len(load_migrations()) + 1:04d}_x.sql").write_text(
        "-- modelplane: expand_only\nSELECT 1;\n", encoding="utf-8"
    )
    with pytest.raises(MigrationError, match="unknown directive expand_only"):
        load_migrations(folder)


async def test_a_contract_step_declares_the_code_it_leaves_serving(database_url: str, tmp_path: Path) -> None:
    latest = len(load_migrations())
    folder = package_schema_copy(tmp_path / "schema")
    # Expand: a new column the next release writes; that release knows schema `latest + 1`.
    (folder / f"{latest + 1:04d}_model_owner.sql").write_text(
        "-- modelplane: expand-only\nALTER TABLE models ADD COLUMN owner text;\n", encoding="utf-8"
    )
    # Contract: drop it again, declared safe for code from `latest + 1` on, which (say) stopped using it.
    (folder / f"{latest + 2:04d}_drop_model_owner.sql").write_text(
        f"-- modelplane: serves-from {latest + 1}\nALTER TABLE models DROP COLUMN owner;\n", encoding="utf-8"
    )
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        assert len(await migrate(conn, load_migrations(folder))) == 2
    finally:
        await conn.close()
    serves_from = (await _recorded(database_url))[-1]["serves_from"]
    assert serves_from == latest + 1
    assert unservable(latest + 2, serves_from, latest + 1) is None
    assert unservable(latest + 2, serves_from, latest) is not None


def test_serves_from_must_name_an_earlier_migration(tmp_path: Path) -> None:
    folder = package_schema_copy(tmp_path / "schema")
    latest = len(load_migrations())
    (folder / f"{latest + 1:04d}_x.sql").write_text(
        f"-- modelplane: serves-from {latest + 1}\nSELECT 1;\n", encoding="utf-8"
    )
    with pytest.raises(MigrationError, match="takes the number of an earlier migration"):
        load_migrations(folder)


async def test_serves_from_never_lowers_the_bar_a_migration_before_it_raised(
    database_url: str, tmp_path: Path
) -> None:
    folder = package_schema_copy(tmp_path / "schema")
    latest = len(load_migrations())
    (folder / f"{latest + 1:04d}_x.sql").write_text("SELECT 1;\n", encoding="utf-8")
    (folder / f"{latest + 2:04d}_y.sql").write_text(
        f"-- modelplane: serves-from {latest}\nSELECT 1;\n", encoding="utf-8"
    )
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn, load_migrations(folder))
    finally:
        await conn.close()
    assert (await _recorded(database_url))[-1]["serves_from"] == latest + 1
