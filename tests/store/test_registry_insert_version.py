"""insert_version and get_versions, one statement each: what insert_version returns is what a later
read finds, numbers are consecutive per model, and a missing model gives None and writes nothing."""

from __future__ import annotations

from modelplane.pricing import Prices
from modelplane.server.registry import store
from modelplane.server.registry.domain import ModelFields, VersionFields, VersionState
from modelplane.server.store.pool import Database

FIELDS = VersionFields(
    description="first",
    source_uri="s3://m/1",
    source_sha256="b" * 64,
    capabilities=("chat", "vision"),
    context_window=32_000,
    max_output_tokens=8_000,
    pricing=Prices(currency_code="EUR", input=10, output=20, cached_input=1, reasoning=None),
    state=VersionState.DEPRECATED,
    labels={"eval": "passed"},
    source_run="run-7",
)


async def test_the_returned_version_is_what_a_read_finds(database: Database) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai", labels={"tier": "a"}), "e0")
        first = await store.insert_version(conn, "chat", FIELDS, "e1")
        second = await store.insert_version(
            conn,
            "chat",
            VersionFields(
                source_uri="s3://m/2",
                context_window=8_000,
                max_output_tokens=1_000,
                pricing=Prices(currency_code="USD", input=1, output=2),
            ),
            "e2",
        )
    assert first is not None
    assert second is not None
    assert (first.version_id, second.version_id) == (1, 2)
    assert first.provider == "openai"
    assert first.aliases == ()
    assert first.state is VersionState.DEPRECATED
    assert second.state is VersionState.READY
    async with database.connection() as conn:
        assert await store.get_version(conn, "chat", 1) == first
        assert await store.get_version(conn, "chat", 2) == second


async def test_a_missing_model_gives_none_and_writes_nothing(database: Database) -> None:
    async with database.transaction() as conn:
        assert await store.insert_version(conn, "nope", FIELDS, "e") is None
    async with database.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM model_versions") == 0


async def test_get_versions_reads_the_existing_ones_by_number(database: Database) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
        for _ in range(3):
            await store.insert_version(conn, "chat", FIELDS, "e")
        found = await store.get_versions(conn, "chat", [3, 1, 9])
        assert [v.version_id for v in found] == [1, 3]
        assert found[0] == await store.get_version(conn, "chat", 1)
        assert await store.get_versions(conn, "other", [1]) == []
