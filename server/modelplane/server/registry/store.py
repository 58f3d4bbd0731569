"""The registry's SQL: the only module of the registry that talks to Postgres.

Every function takes the connection of the caller's transaction and runs plain statements on it;
compare-and-set lives in the `WHERE` of the `UPDATE`, never in a read before the write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from modelplane.pricing import Prices
from modelplane.server.registry.domain import (
    Alias,
    AliasMove,
    Constraints,
    Model,
    ModelFields,
    ModelVersion,
    VersionFields,
    VersionState,
    VersionUpdate,
)
from modelplane.server.store.keyed import Keyed
from modelplane.server.store.pool import Connection
from modelplane.server.store.snapshots import from_json
from modelplane.server.store.writes import refusal

_MODEL_COLUMNS = """
    m.id, m.provider, m.display_name, m.description, m.labels, m.create_time, m.update_time, m.etag,
    (SELECT max(x.version_id) FROM model_versions x WHERE x.model_id = m.id) AS latest_version
"""

_VERSION_COLUMNS = """
    v.model_id, v.version_id, m.provider, v.description, v.source_uri, v.source_sha256, v.capabilities,
    v.context_window, v.max_output_tokens, v.currency_code, v.input_price, v.output_price,
    v.cached_input_price, v.reasoning_price, v.state, v.labels, v.parent_version, v.source_run,
    v.create_time, v.update_time, v.etag, v.sort_key,
    ARRAY(SELECT a.alias FROM model_aliases a
          WHERE a.model_id = v.model_id AND a.version_id = v.version_id ORDER BY a.alias) AS aliases
"""

T = TypeVar("T")


_ALIAS_COLUMNS = "a.model_id, a.alias, a.version_id, a.update_time, a.updated_by"
_ALIAS_RETURNING = "RETURNING model_id, alias, version_id, update_time, updated_by"


def _labels(value: Any) -> dict[str, str]:
    return dict(json.loads(value)) if isinstance(value, str) else dict(value or {})


def _model(row: asyncpg.Record) -> Model:
    return Model(
        id=row["id"],
        provider=row["provider"],
        display_name=row["display_name"],
        description=row["description"],
        labels=_labels(row["labels"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
        etag=row["etag"],
        latest_version=row["latest_version"],
    )


def _version(row: asyncpg.Record) -> ModelVersion:
    return ModelVersion(
        model_id=row["model_id"],
        version_id=row["version_id"],
        provider=row["provider"],
        description=row["description"],
        source_uri=row["source_uri"],
        source_sha256=row["source_sha256"],
        capabilities=tuple(row["capabilities"]),
        context_window=row["context_window"],
        max_output_tokens=row["max_output_tokens"],
        pricing=Prices(
            currency_code=row["currency_code"],
            input=row["input_price"],
            output=row["output_price"],
            cached_input=row["cached_input_price"],
            reasoning=row["reasoning_price"],
        ),
        state=VersionState(row["state"]),
        labels=_labels(row["labels"]),
        parent_version=row["parent_version"],
        source_run=row["source_run"],
        aliases=tuple(row["aliases"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
        etag=row["etag"],
    )


def _alias(row: asyncpg.Record) -> Alias:
    return Alias(
        model_id=row["model_id"],
        alias=row["alias"],
        version_id=row["version_id"],
        update_time=row["update_time"],
        updated_by=row["updated_by"],
    )


# ---- models


async def insert_model(conn: Connection, model_id: str, fields: ModelFields, etag: str) -> Model | None:
    """Creates a model; None when the id is taken."""
    try:
        await conn.execute(
            "INSERT INTO models (id, provider, display_name, description, labels, create_time,"
            " update_time, etag)"
            " VALUES ($1, $2, $3, $4, $5, now(), now(), $6)",
            model_id,
            fields.provider,
            fields.display_name,
            fields.description,
            json.dumps(dict(fields.labels)),
            etag,
        )
    except asyncpg.UniqueViolationError:
        return None
    return await get_model(conn, model_id)


async def get_model(conn: Connection, model_id: str, *, for_update: bool = False) -> Model | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_MODEL_COLUMNS} FROM models m WHERE m.id = $1{lock}", model_id)
    return None if row is None else _model(row)


async def list_models(
    conn: Connection, *, where: str, params: Sequence[object], order_sql: str, limit: int
) -> list[Keyed[Model]]:
    rows = await conn.fetch(
        f"SELECT {_MODEL_COLUMNS} FROM models m WHERE {where} ORDER BY {order_sql} LIMIT {int(limit)}",
        *params,
    )
    return [Keyed(_model(r), r) for r in rows]


async def update_model(
    conn: Connection,
    model_id: str,
    fields: ModelFields,
    paths: frozenset[str],
    *,
    expected_etag: str,
    new_etag: str,
) -> Model | None:
    """Applies the masked fields when the etag matches (or none is expected); None when nothing matched."""
    row = await conn.fetchrow(
        "UPDATE models SET"
        " provider = CASE WHEN $3 THEN $4 ELSE provider END,"
        " display_name = CASE WHEN $5 THEN $6 ELSE display_name END,"
        " description = CASE WHEN $7 THEN $8 ELSE description END,"
        " labels = CASE WHEN $9 THEN $10::jsonb ELSE labels END,"
        " update_time = now(), etag = $11"
        " WHERE id = $1 AND ($2 = '' OR etag = $2) RETURNING id",
        model_id,
        expected_etag,
        "provider" in paths,
        fields.provider,
        "display_name" in paths,
        fields.display_name,
        "description" in paths,
        fields.description,
        "labels" in paths,
        json.dumps(dict(fields.labels)),
        new_etag,
    )
    return None if row is None else await get_model(conn, model_id)


async def delete_model(conn: Connection, model_id: str, *, expected_etag: str) -> bool:
    """Deletes a model with its versions, aliases and history (they cascade); False when nothing matched."""
    # Aliases go first: they reference versions, which cascade from the model in the same statement.
    await conn.execute("DELETE FROM model_aliases WHERE model_id = $1", model_id)
    status = await conn.execute(
        "DELETE FROM models WHERE id = $1 AND ($2 = '' OR etag = $2)", model_id, expected_etag
    )
    return status == "DELETE 1"


async def count_versions(conn: Connection, model_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM model_versions WHERE model_id = $1", model_id))


# ---- versions


# The SQL function of CreateModelVersion (schema/0014), run by store.writes.write_in_one_statement with the
# arguments below.
CREATE_VERSION = "registry_create_version"


def create_version_args(
    model_id: str, fields: VersionFields, parent: tuple[str, int] | None, etag: str
) -> list[object]:
    """CREATE_VERSION's arguments after the write's own: the model, the parent version that must exist (or
    none), and the new version's fields. The number comes from `models.next_version`: taking it locks the
    model row, so concurrent creates on one model get consecutive numbers, and a number is never reused
    after a delete."""
    p = fields.pricing
    parent_model, parent_number = parent or ("", 0)
    return [
        model_id,
        parent_model,
        parent_number,
        fields.description,
        fields.source_uri,
        fields.source_sha256,
        list(fields.capabilities),
        fields.context_window,
        fields.max_output_tokens,
        p.currency_code,
        p.input,
        p.output,
        p.cached_input,
        p.reasoning,
        (fields.state or VersionState.READY).value,
        json.dumps(dict(fields.labels)),
        fields.parent_version,
        fields.source_run,
        etag,
    ]


async def get_version(conn: Connection, model_id: str, version_id: int) -> ModelVersion | None:
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE v.model_id = $1 AND v.version_id = $2",
        model_id,
        version_id,
    )
    return None if row is None else _version(row)


async def get_version_at(conn: Connection, model_id: str, version_id: int) -> tuple[ModelVersion, int] | None:
    """A version with the revision it was read at (one statement, one snapshot)."""
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS}, (SELECT revision FROM revision_counter) AS revision"
        " FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE v.model_id = $1 AND v.version_id = $2",
        model_id,
        version_id,
    )
    return None if row is None else (_version(row), int(row["revision"]))


async def list_versions(
    conn: Connection, *, where: str, params: Sequence[object], order_sql: str, limit: int
) -> list[Keyed[ModelVersion]]:
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM model_versions v JOIN models m ON m.id = v.model_id"
        f" WHERE {where} ORDER BY {order_sql} LIMIT {int(limit)}",
        *params,
    )
    return [Keyed(_version(r), r) for r in rows]


async def version_of_alias(conn: Connection, model_id: str, alias: str) -> tuple[ModelVersion, int] | None:
    """The version an alias points to, with the revision it was read at (one statement, one snapshot)."""
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS}, (SELECT revision FROM revision_counter) AS revision"
        " FROM model_aliases target"
        " JOIN model_versions v ON v.model_id = target.model_id AND v.version_id = target.version_id"
        " JOIN models m ON m.id = v.model_id"
        " WHERE target.model_id = $1 AND target.alias = $2",
        model_id,
        alias,
    )
    return None if row is None else (_version(row), int(row["revision"]))


async def best_match(conn: Connection, c: Constraints) -> tuple[ModelVersion, int] | None:
    """The READY version satisfying every constraint under the documented tie-break, with the revision.

    Mirrors resolution.first_failure and resolution.choose (a property test holds them to it): labels
    are the model's overlaid with the version's; cheapest output price, then newest, then highest name.
    """
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS}, (SELECT revision FROM revision_counter) AS revision"
        " FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE v.state = 'ready'"
        " AND ($1 = '' OR v.model_id = $1)"
        " AND ($2 = '' OR m.provider = $2)"
        " AND v.capabilities @> $3::text[]"
        " AND v.context_window >= $4"
        " AND ($5::text IS NULL OR (v.currency_code = $5 AND v.input_price <= $6))"
        " AND ($7::text IS NULL OR (v.currency_code = $7 AND v.output_price <= $8))"
        " AND (m.labels || v.labels) @> $9::jsonb"
        " ORDER BY v.output_price, v.create_time DESC, v.model_id DESC, v.version_id DESC LIMIT 1",
        c.model_id,
        c.provider,
        list(c.required_capabilities),
        c.min_context_window,
        None if c.max_input_price is None else c.max_input_price.currency_code,
        None if c.max_input_price is None else c.max_input_price.micros,
        None if c.max_output_price is None else c.max_output_price.currency_code,
        None if c.max_output_price is None else c.max_output_price.micros,
        json.dumps(dict(c.labels)),
    )
    return None if row is None else (_version(row), int(row["revision"]))


async def ready_versions(
    conn: Connection, *, model_id: str, limit: int
) -> list[tuple[ModelVersion, dict[str, str]]]:
    """The READY versions (of one model when model_id is set) with their model's labels: the candidates
    of constraint resolution, newest first."""
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS}, m.labels AS model_labels"
        " FROM model_versions v JOIN models m ON m.id = v.model_id"
        " WHERE v.state = 'ready' AND ($1 = '' OR v.model_id = $1)"
        " ORDER BY v.create_time DESC, v.sort_key DESC LIMIT $2",
        model_id,
        limit,
    )
    return [(_version(r), _labels(r["model_labels"])) for r in rows]


async def update_version(
    conn: Connection,
    model_id: str,
    version_id: int,
    update: VersionUpdate,
    paths: frozenset[str],
    *,
    expected_etag: str,
    new_etag: str,
) -> ModelVersion | None:
    row = await conn.fetchrow(
        "UPDATE model_versions SET"
        " description = CASE WHEN $4 THEN $5 ELSE description END,"
        " state = CASE WHEN $6 THEN $7 ELSE state END,"
        " labels = CASE WHEN $8 THEN $9::jsonb ELSE labels END,"
        " update_time = now(), etag = $10"
        " WHERE model_id = $1 AND version_id = $2 AND ($3 = '' OR etag = $3) RETURNING version_id",
        model_id,
        version_id,
        expected_etag,
        "description" in paths,
        update.description,
        "state" in paths,
        (update.state or VersionState.READY).value,
        "labels" in paths,
        json.dumps(dict(update.labels)),
        new_etag,
    )
    return None if row is None else await get_version(conn, model_id, version_id)


async def delete_version(conn: Connection, model_id: str, version_id: int, *, expected_etag: str) -> bool:
    status = await conn.execute(
        "DELETE FROM model_versions WHERE model_id = $1 AND version_id = $2 AND ($3 = '' OR etag = $3)",
        model_id,
        version_id,
        expected_etag,
    )
    return status == "DELETE 1"


# ---- aliases


async def get_alias(conn: Connection, model_id: str, alias: str) -> Alias | None:
    row = await conn.fetchrow(
        f"SELECT {_ALIAS_COLUMNS} FROM model_aliases a WHERE a.model_id = $1 AND a.alias = $2",
        model_id,
        alias,
    )
    return None if row is None else _alias(row)


async def list_aliases(conn: Connection, model_id: str, *, after: str, limit: int) -> list[Alias]:
    rows = await conn.fetch(
        f"SELECT {_ALIAS_COLUMNS} FROM model_aliases a WHERE a.model_id = $1 AND a.alias > $2"
        " ORDER BY a.alias LIMIT $3",
        model_id,
        after,
        limit,
    )
    return [_alias(r) for r in rows]


async def aliases_of_version(conn: Connection, model_id: str, version_id: int) -> list[Alias]:
    rows = await conn.fetch(
        f"SELECT {_ALIAS_COLUMNS} FROM model_aliases a WHERE a.model_id = $1 AND a.version_id = $2"
        " ORDER BY a.alias",
        model_id,
        version_id,
    )
    return [_alias(r) for r in rows]


# The SQL function of SetAlias (schema/0014), run by store.writes.write_in_one_statement with the model, the
# alias, the version's number, the guard ("any", "absent" or "at"), the expected number and the reason.
SET_ALIAS = "registry_set_alias"


@dataclass(frozen=True)
class Refused:
    """A write's SQL function refused (see store.writes.REFUSED): the refusal's name and detail."""

    name: str
    detail: str


@dataclass(frozen=True)
class PointedAlias:
    """An alias moved in the caller's transaction, and the changes to record (the alias, and the versions
    whose alias lists changed), as Mutation.change takes them."""

    moved: Alias
    changes: list[dict[str, Any]]


async def point_alias(
    conn: Connection, model_id: str, alias: str, version_id: int, *, actor: str, reason: str, revision: int
) -> PointedAlias | Refused:
    """Points the alias at the version, whatever it points to now, with its history row (`revision` names the
    write, see Mutation.revision_for): SetAlias's own statement inside the caller's transaction."""
    try:
        row = await conn.fetchrow(
            "SELECT * FROM registry_point_alias($1, $2, $3, 'any', NULL, $4, $5, $6)",
            model_id,
            alias,
            version_id,
            reason,
            actor,
            revision,
        )
    except asyncpg.PostgresError as exc:
        refused_with = refusal(exc)
        if refused_with is None:
            raise
        return Refused(*refused_with)
    assert row is not None
    changes = [
        {"resource_type": t, "resource": r, "kind": k, "snapshot": json.loads(s)}
        for t, r, k, s in zip(
            row["resource_types"], row["resources"], row["kinds"], row["snapshots"], strict=True
        )
    ]
    return PointedAlias(from_json(Alias, json.loads(row["moved"])), changes)


async def delete_alias(conn: Connection, model_id: str, alias: str, *, expected_version: int | None) -> bool:
    status = await conn.execute(
        "DELETE FROM model_aliases WHERE model_id = $1 AND alias = $2"
        " AND ($3::bigint IS NULL OR version_id = $3)",
        model_id,
        alias,
        expected_version,
    )
    return status == "DELETE 1"


async def record_alias_move(
    conn: Connection,
    *,
    model_id: str,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    actor: str,
    reason: str,
    revision: int,
) -> None:
    await conn.execute(
        "INSERT INTO alias_history"
        " (model_id, alias, from_version, to_version, actor, reason, move_time, revision)"
        " VALUES ($1, $2, $3, $4, $5, $6, now(), $7)",
        model_id,
        alias,
        from_version,
        to_version,
        actor,
        reason,
        revision,
    )


async def list_alias_history(
    conn: Connection, model_id: str, *, alias: str, before_id: int | None, limit: int
) -> list[AliasMove]:
    rows = await conn.fetch(
        "SELECT id, model_id, alias, from_version, to_version, actor, reason, move_time, revision"
        " FROM alias_history WHERE model_id = $1 AND ($2 = '' OR alias = $2)"
        " AND ($3::bigint IS NULL OR id < $3)"
        " ORDER BY id DESC LIMIT $4",
        model_id,
        alias,
        before_id,
        limit,
    )
    return [AliasMove(**dict(r)) for r in rows]


# ---- revisions and changes


async def current_revision(conn: Connection) -> tuple[int, int]:
    """(the latest revision, the revision up to which changes have been compacted away)."""
    row = await conn.fetchrow("SELECT revision, compacted_through FROM revision_counter")
    assert row is not None
    return int(row["revision"]), int(row["compacted_through"])
