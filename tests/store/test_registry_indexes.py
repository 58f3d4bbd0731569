"""The registry's lookups can use their indexes: every key compared across tables has one collation, and a
version's aliases are found through the alias table's index, not by reading the whole table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from modelplane.server.registry import store
from modelplane.server.store.pool import Connection, Database

# Pairs of columns a foreign key compares whose collations differ: an index of one cannot serve an equality
# with the other.
_MISMATCHED_KEYS = """
SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, b.attname
FROM pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey, c.confkey) AS k(key, referenced)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.key
JOIN pg_attribute b ON b.attrelid = c.confrelid AND b.attnum = k.referenced
WHERE c.contype = 'f' AND a.attcollation <> b.attcollation
ORDER BY 1, 2
"""


async def test_every_foreign_key_compares_columns_of_one_collation(database: Database) -> None:
    async with database.connection() as conn:
        mismatched = [tuple(row) for row in await conn.fetch(_MISMATCHED_KEYS)]
    assert mismatched == []


async def _seed(conn: Connection, models: int) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    await conn.executemany(
        "INSERT INTO models (id, provider, create_time, update_time, etag) VALUES ($1, 'x', $2, $2, 'e')",
        [(f"m{i}", now) for i in range(models)],
    )
    await conn.executemany(
        "INSERT INTO model_versions (model_id, version_id, source_uri, context_window, max_output_tokens,"
        " currency_code, input_price, output_price, state, labels, create_time, update_time, etag)"
        " VALUES ($1, 1, 's3://x', 1, 1, 'USD', 0, 0, 'ready', $2::text::jsonb, $3, $3, 'e')",
        [(f"m{i}", json.dumps({}), now) for i in range(models)],
    )
    await conn.executemany(
        "INSERT INTO model_aliases (model_id, alias, version_id, update_time, updated_by)"
        " VALUES ($1, 'prod', 1, $2, 'test')",
        [(f"m{i}", now) for i in range(models)],
    )
    await conn.execute("ANALYZE models, model_versions, model_aliases")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def test_reading_a_version_finds_its_aliases_by_model_in_an_index(database: Database) -> None:
    async with database.connection() as conn:
        await _seed(conn, 2000)
        # The query get_version runs, as EXPLAIN sees it. Before the model ids shared a collation, the
        # aliases' lookup matched only version_id in an index and filtered the model's id out of every
        # alias of that version number: with version 1 of each model, the whole table.
        explained = await conn.fetchval(
            f"EXPLAIN (FORMAT JSON) SELECT {store._VERSION_COLUMNS} FROM model_versions v"
            " JOIN models m ON m.id = v.model_id WHERE v.model_id = $1 AND v.version_id = $2",
            "m1234",
            1,
        )
        nodes = list(_nodes(json.loads(explained)[0]["Plan"]))
        version = await store.get_version(conn, "m1234", 1)
    alias_scans = [n for n in nodes if n.get("Index Name", "").startswith("model_aliases")]
    assert alias_scans, nodes
    assert all("model_id" in n.get("Index Cond", "") for n in alias_scans), alias_scans
    seq_scans = [n for n in nodes if n["Node Type"] == "Seq Scan"]
    assert not [n for n in seq_scans if n.get("Relation Name") == "model_aliases"]
    assert version is not None
    assert version.aliases == ("prod",)
