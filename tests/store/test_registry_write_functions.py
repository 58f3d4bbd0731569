"""The registry's one-statement writes (schema/0014): their snapshots are the server's own JSON forms, numbers
are consecutive per model, and a refused write leaves nothing behind, request id claim included."""

from __future__ import annotations

import json

import pytest

from modelplane.pricing import Prices
from modelplane.server.errors import ModelplaneError, NotFound
from modelplane.server.registry import store
from modelplane.server.registry.domain import Alias, ModelFields, ModelVersion, VersionFields, VersionState
from modelplane.server.store.mutations import WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.snapshots import from_json, to_json
from modelplane.server.store.writes import call_write_function, write_in_one_statement
from tests.support.registry_rows import insert_version

FIELDS = VersionFields(
    description="first",
    source_uri="s3://m/1",
    source_sha256="b" * 64,
    capabilities=("chat", "vision"),
    context_window=32_000,
    max_output_tokens=8_000,
    pricing=Prices(currency_code="EUR", input=10, output=20, cached_input=1, reasoning=None),
    state=VersionState.DEPRECATED,
    labels={"eval": "passed", "ünï": "cödé"},
    source_run="run-7",
)
PLAIN = VersionFields(
    source_uri="s3://m/2",
    context_window=8_000,
    max_output_tokens=1_000,
    pricing=Prices(currency_code="USD", input=1, output=2, cached_input=None, reasoning=7),
)


# Every table a registry write adds rows to.
WRITTEN = ("model_versions", "model_aliases", "alias_history", "request_ids", "changes", "audit_log")


class Refused(ModelplaneError):
    pass


async def _counts(database: Database) -> dict[str, int]:
    async with database.connection() as conn:
        return {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in WRITTEN}


def _refused(name: str, detail: str) -> Refused:
    return Refused(f"{name}:{detail}")


async def test_the_returned_version_is_what_a_read_finds(database: Database) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai", labels={"tier": "a"}), "e0")
        first = await insert_version(conn, "chat", FIELDS, "e1")
        second = await insert_version(conn, "chat", PLAIN, "e2")
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


async def test_sql_snapshots_equal_the_servers_json_forms(database: Database) -> None:
    """What the change log and the request ids keep of a version or an alias, made in SQL, decodes to what
    the server reads, and its JSON form is the server's own (times in any TimeZone of the session)."""
    async with database.transaction() as conn:
        await conn.execute("SET LOCAL TimeZone = 'America/Los_Angeles'")
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
        await insert_version(conn, "chat", FIELDS, "e1")
        await insert_version(conn, "chat", PLAIN, "e2")
        for name, number in (("prod", 1), ("beta", 1), ("canary", 2)):
            point = await store.point_alias(
                conn, "chat", name, number, actor="ops", reason="test", revision=1
            )
            assert isinstance(point, store.PointedAlias)
        for number in (1, 2):
            snapshot = json.loads(await conn.fetchval("SELECT registry_version_json('chat', $1)", number))
            read = await store.get_version(conn, "chat", number)
            assert read is not None
            assert from_json(ModelVersion, snapshot) == read
            assert _same_json(snapshot, to_json(read))
            if number == 1:
                assert read.aliases == ("beta", "prod")
        row = await conn.fetchval("SELECT registry_alias_json(a) FROM model_aliases a WHERE alias = 'prod'")
        alias = await store.get_alias(conn, "chat", "prod")
        assert alias is not None
        assert from_json(Alias, json.loads(row)) == alias
        assert _same_json(json.loads(row), to_json(alias))


def _same_json(sql: dict[str, object], python: dict[str, object]) -> bool:
    """Equal, times compared as instants (Python leaves out a zero fraction of a second)."""
    from datetime import datetime

    if sql.keys() != python.keys():
        return False
    for key, value in sql.items():
        other = python[key]
        if key.endswith("_time"):
            if datetime.fromisoformat(str(value)) != datetime.fromisoformat(str(other)):
                return False
        elif value != other:
            return False
    return True


async def test_alias_moves_record_the_alias_and_both_versions(database: Database) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
        await insert_version(conn, "chat", FIELDS)
        await insert_version(conn, "chat", PLAIN)
        created = await store.point_alias(conn, "chat", "prod", 1, actor="ops", reason="first", revision=5)
        moved = await store.point_alias(conn, "chat", "prod", 2, actor="ops", reason="second", revision=6)
        history = await conn.fetch(
            "SELECT from_version, to_version, reason, revision FROM alias_history ORDER BY id"
        )
    assert isinstance(created, store.PointedAlias)
    assert isinstance(moved, store.PointedAlias)
    assert [(c["kind"], c["resource"]) for c in created.changes] == [
        ("created", "models/chat/aliases/prod"),
        ("updated", "models/chat/versions/1"),
    ]
    assert [(c["kind"], c["resource"]) for c in moved.changes] == [
        ("updated", "models/chat/aliases/prod"),
        ("updated", "models/chat/versions/1"),
        ("updated", "models/chat/versions/2"),
    ]
    assert moved.changes[1]["snapshot"]["aliases"] == []
    assert moved.changes[2]["snapshot"]["aliases"] == ["prod"]
    assert [tuple(r) for r in history] == [(None, 1, "first", 5), (1, 2, "second", 6)]


@pytest.mark.parametrize(
    ("model", "number", "refusal"),
    [("nope", 1, "model_not_found"), ("chat", 9, "version_not_found"), ("chat", 1, "version_archived")],
)
async def test_refused_alias_moves_write_nothing(
    database: Database, model: str, number: int, refusal: str
) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
        await insert_version(conn, "chat", VersionFields(**{**vars(PLAIN), "state": VersionState.ARCHIVED}))
    write = WriteRequest(actor="ops", method="/test/SetAlias", request_id="r-1", fingerprint=b"f")
    before = await _counts(database)
    with pytest.raises(Refused, match=refusal):
        await write_in_one_statement(
            database,
            write,
            store.SET_ALIAS,
            [model, "prod", number, "any", None, ""],
            decode=str,
            refused=_refused,
        )
    assert await _counts(database) == before


async def test_a_guarded_move_that_lost_names_the_current_version(database: Database) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
        await insert_version(conn, "chat", PLAIN)
        await insert_version(conn, "chat", PLAIN)
        await store.point_alias(conn, "chat", "prod", 2, actor="ops", reason="", revision=1)
    write = WriteRequest(actor="ops", method="/test/SetAlias")
    for expect, expected, current in (("absent", None, "2"), ("at", 1, "2")):
        with pytest.raises(Refused, match=f"alias_conflict:{current}$"):
            await write_in_one_statement(
                database,
                write,
                store.SET_ALIAS,
                ["chat", "prod", 1, expect, expected, ""],
                decode=str,
                refused=_refused,
            )
    with pytest.raises(Refused, match=r"alias_conflict:$"):
        await write_in_one_statement(
            database, write, store.SET_ALIAS, ["chat", "new", 1, "at", 2, ""], decode=str, refused=_refused
        )


async def test_a_missing_model_or_parent_is_refused_and_writes_nothing(database: Database) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
    write = WriteRequest(actor="ops", method="/test/CreateModelVersion", request_id="r-1", fingerprint=b"f")
    before = await _counts(database)
    cases = (("nope", None, "model_not_found"), ("chat", ("chat", 4), "parent_version_not_found"))
    for model, parent, refusal in cases:
        with pytest.raises(Refused, match=refusal):
            await write_in_one_statement(
                database,
                write,
                store.CREATE_VERSION,
                store.create_version_args(model, PLAIN, parent, "e"),
                decode=str,
                refused=_refused,
            )
    assert await _counts(database) == before
    async with database.connection() as conn:
        assert await conn.fetchval("SELECT next_version FROM models WHERE id = 'chat'") == 1


async def test_a_repeated_request_id_returns_the_first_result_and_takes_no_revision(
    database: Database,
) -> None:
    async with database.transaction() as conn:
        await store.insert_model(conn, "chat", ModelFields(provider="openai"), "e0")
    write = WriteRequest(actor="ops", method="/test/CreateModelVersion", request_id="r-1", fingerprint=b"f")
    args = store.create_version_args("chat", PLAIN, None, "e")
    async with database.connection() as conn:
        first = await call_write_function(conn, write, store.CREATE_VERSION, args, _refused)
        again = await call_write_function(conn, write, store.CREATE_VERSION, args, _refused)
        other = WriteRequest(actor="ops", method=write.method, request_id="r-1", fingerprint=b"g")
        with pytest.raises(ModelplaneError, match="request_id") as reused:
            await call_write_function(conn, other, store.CREATE_VERSION, args, _refused)
        assert await conn.fetchval("SELECT count(*) FROM model_versions") == 1
    assert first.revision is not None
    assert again.revision is None
    assert again.result == first.result
    assert not isinstance(reused.value, NotFound)
