"""The deployment manager's SQL: the only module of the deployment manager that talks to Postgres.

Every function takes the connection of the caller's transaction. Every change to a deployment or its
rollouts happens with the deployment's row locked (`get_deployment(..., for_update=True)`), which
serializes the RPCs, the health reports and the drivers of every replica on one deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from modelplane.server.deployments.domain import (
    Deployment,
    EndpointHealth,
    GateEvaluation,
    HistoryEntry,
    HistoryRecord,
    Rollout,
    RolloutState,
    TrafficTable,
    Transition,
)
from modelplane.server.store.pool import Connection
from modelplane.server.store.snapshots import from_json, to_json

_COLUMNS = (
    "d.id, d.model_id, d.environment, d.description, d.labels, d.traffic, d.active_rollout, d.revision,"
    " d.create_time, d.update_time, d.etag"
)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _deployment(row: asyncpg.Record) -> Deployment:
    return Deployment(
        id=row["id"],
        environment=row["environment"],
        model_id=row["model_id"],
        traffic=from_json(TrafficTable, _json(row["traffic"])),
        description=row["description"],
        labels=dict(_json(row["labels"])),
        active_rollout=row["active_rollout"],
        revision=int(row["revision"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
        etag=row["etag"],
    )


def _rollout(row: asyncpg.Record) -> Rollout:
    return from_json(Rollout, _json(row["body"]))


async def insert_deployment(conn: Connection, d: Deployment) -> bool:
    """False when the id, or the (model, environment) pair, is taken."""
    row = await conn.fetchval(
        "INSERT INTO deployments (id, model_id, environment, description, labels, traffic, revision,"
        " create_time, update_time, etag) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)"
        " ON CONFLICT DO NOTHING RETURNING true",
        d.id,
        d.model_id,
        d.environment,
        d.description,
        json.dumps(dict(d.labels)),
        json.dumps(to_json(d.traffic)),
        d.revision,
        d.create_time,
        d.etag,
    )
    return bool(row)


async def deployment_of_environment(conn: Connection, model_id: str, environment: str) -> str | None:
    value = await conn.fetchval(
        "SELECT id FROM deployments WHERE model_id = $1 AND environment = $2", model_id, environment
    )
    return None if value is None else str(value)


async def get_deployment(
    conn: Connection, deployment_id: str, *, for_update: bool = False, skip_locked: bool = False
) -> Deployment | None:
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM deployments d WHERE d.id = $1{lock}", deployment_id)
    return None if row is None else _deployment(row)


async def get_deployment_at(conn: Connection, deployment_id: str) -> tuple[Deployment | None, int]:
    """The deployment (or None) and the latest revision, read in one snapshot."""
    row = await conn.fetchrow(
        f"SELECT r.revision AS latest, {_COLUMNS} FROM revision_counter r"
        " LEFT JOIN deployments d ON d.id = $1",
        deployment_id,
    )
    assert row is not None
    return (None if row["id"] is None else _deployment(row)), int(row["latest"])


async def save_deployment(conn: Connection, d: Deployment) -> None:
    await conn.execute(
        "UPDATE deployments SET description = $2, labels = $3, traffic = $4, active_rollout = $5,"
        " revision = $6, update_time = $7, etag = $8 WHERE id = $1",
        d.id,
        d.description,
        json.dumps(dict(d.labels)),
        json.dumps(to_json(d.traffic)),
        d.active_rollout,
        d.revision,
        d.update_time,
        d.etag,
    )


async def delete_deployment(conn: Connection, deployment_id: str) -> None:
    await conn.execute("DELETE FROM deployments WHERE id = $1", deployment_id)


async def list_deployments(conn: Connection, *, model_id: str, after: str, limit: int) -> list[Deployment]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deployments d WHERE ($1 = '' OR d.model_id = $1) AND d.id > $2"
        " ORDER BY d.id LIMIT $3",
        model_id,
        after,
        limit,
    )
    return [_deployment(r) for r in rows]


async def lock_version_state(conn: Connection, model_id: str, version_id: int) -> str | None:
    """The version's stored state, with the row share-locked until commit: it cannot be archived or
    deleted under a rollout that is about to point an alias at it."""
    value = await conn.fetchval(
        "SELECT state FROM model_versions WHERE model_id = $1 AND version_id = $2 FOR SHARE",
        model_id,
        version_id,
    )
    return None if value is None else str(value)


async def model_exists(conn: Connection, model_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM models WHERE id = $1", model_id))


# ---- rollouts


async def take_rollout_number(conn: Connection, deployment_id: str) -> int:
    value = await conn.fetchval(
        "UPDATE deployments SET next_rollout = next_rollout + 1 WHERE id = $1 RETURNING next_rollout - 1",
        deployment_id,
    )
    return int(value)


async def save_rollout(conn: Connection, r: Rollout) -> None:
    """Inserts or replaces the rollout."""
    await conn.execute(
        "INSERT INTO rollouts (deployment_id, number, state, next_step_time, body)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (deployment_id, number) DO UPDATE SET state = EXCLUDED.state,"
        " next_step_time = EXCLUDED.next_step_time, body = EXCLUDED.body",
        r.deployment_id,
        r.number,
        r.state.value,
        r.next_step_time,
        json.dumps(to_json(r)),
    )


async def get_rollout(conn: Connection, deployment_id: str, number: int) -> Rollout | None:
    row = await conn.fetchrow(
        "SELECT body FROM rollouts WHERE deployment_id = $1 AND number = $2", deployment_id, number
    )
    return None if row is None else _rollout(row)


async def list_rollouts(
    conn: Connection, deployment_id: str, *, before: int | None, limit: int
) -> list[Rollout]:
    rows = await conn.fetch(
        "SELECT body FROM rollouts WHERE deployment_id = $1 AND ($2::bigint IS NULL OR number < $2)"
        " ORDER BY number DESC LIMIT $3",
        deployment_id,
        before,
        limit,
    )
    return [_rollout(r) for r in rows]


@dataclass(frozen=True)
class DueRollout:
    deployment_id: str
    number: int
    current_step: int


async def lock_due_rollout(conn: Connection) -> DueRollout | None:
    """A rollout whose timed step is due, with its deployment's row locked; rows another replica holds
    are skipped, so replicas share the work and never wait on each other."""
    row = await conn.fetchrow(
        "SELECT d.id, r.number, (r.body->>'current_step')::int AS current_step"
        " FROM rollouts r JOIN deployments d ON d.id = r.deployment_id"
        " WHERE r.next_step_time <= now() AND r.state IN ('progressing', 'rolling_back')"
        " ORDER BY r.next_step_time LIMIT 1 FOR UPDATE OF d SKIP LOCKED"
    )
    if row is None:
        return None
    return DueRollout(row["id"], int(row["number"]), int(row["current_step"]))


# ---- endpoint health


async def health_of(
    conn: Connection, deployment_id: str, addresses: Iterable[str]
) -> dict[str, EndpointHealth]:
    rows = await conn.fetch(
        "SELECT address, health FROM endpoint_health WHERE deployment_id = $1 AND address = ANY($2)",
        deployment_id,
        list(addresses),
    )
    return {r["address"]: EndpointHealth(r["health"]) for r in rows}


async def set_health(conn: Connection, deployment_id: str, address: str, health: EndpointHealth) -> None:
    await conn.execute(
        "INSERT INTO endpoint_health (deployment_id, address, health, report_time) VALUES ($1, $2, $3, now())"
        " ON CONFLICT (deployment_id, address) DO UPDATE SET health = EXCLUDED.health,"
        " report_time = EXCLUDED.report_time",
        deployment_id,
        address,
        health.value,
    )


async def unlisted_health_reports(
    conn: Connection, deployment_id: str, listed: Iterable[str], max_age_seconds: int
) -> int:
    """Deletes the deployment's reports older than `max_age_seconds` for addresses not in `listed`, and
    counts the ones younger (those that stay)."""
    count = await conn.fetchval(
        "WITH stale AS (DELETE FROM endpoint_health WHERE deployment_id = $1 AND NOT address = ANY($2)"
        " AND report_time < now() - make_interval(secs => $3))"
        " SELECT count(*) FROM endpoint_health WHERE deployment_id = $1 AND NOT address = ANY($2)"
        " AND report_time >= now() - make_interval(secs => $3)",
        deployment_id,
        list(listed),
        max_age_seconds,
    )
    return int(count)


# ---- history


async def append_history(
    conn: Connection,
    *,
    deployment_id: str,
    entry: HistoryEntry,
    rollout: int | None,
    actor: str,
    revision: int,
) -> None:
    await conn.execute(
        "INSERT INTO deployment_history (deployment_id, transition, rollout, rollout_state, actor, reason,"
        " traffic_before, traffic_after, revision, create_time, gate_evaluations)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10)",
        deployment_id,
        entry.transition.value,
        rollout,
        None if entry.rollout_state is None else entry.rollout_state.value,
        actor,
        entry.reason,
        None if entry.traffic_before is None else json.dumps(to_json(entry.traffic_before)),
        json.dumps(to_json(entry.traffic_after)),
        revision,
        json.dumps(to_json(entry.gate_evaluations)) if entry.gate_evaluations else None,
    )


async def list_history(
    conn: Connection, deployment_id: str, *, before: int | None, limit: int
) -> list[HistoryRecord]:
    rows = await conn.fetch(
        "SELECT id, deployment_id, transition, rollout, rollout_state, actor, reason, traffic_before,"
        " traffic_after, revision, create_time, gate_evaluations FROM deployment_history"
        " WHERE deployment_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        deployment_id,
        before,
        limit,
    )
    return [
        HistoryRecord(
            id=int(r["id"]),
            deployment_id=r["deployment_id"],
            transition=Transition(r["transition"]),
            rollout=r["rollout"],
            rollout_state=None if r["rollout_state"] is None else RolloutState(r["rollout_state"]),
            actor=r["actor"],
            reason=r["reason"],
            traffic_before=(
                None if r["traffic_before"] is None else from_json(TrafficTable, _json(r["traffic_before"]))
            ),
            traffic_after=from_json(TrafficTable, _json(r["traffic_after"])),
            revision=int(r["revision"]),
            create_time=r["create_time"],
            gate_evaluations=tuple(
                from_json(GateEvaluation, e) for e in _json(r["gate_evaluations"] or "[]")
            ),
        )
        for r in rows
    ]


async def db_now(conn: Connection) -> Any:
    """The transaction's time on the database clock, the clock the driver's due check uses too."""
    return await conn.fetchval("SELECT now()")
