"""The guardrails monitor's SQL: the only module of the guardrails wing that talks to Postgres.

Every function takes the connection of the caller's transaction; compare-and-set lives in the `WHERE`
of the `UPDATE`. Nothing here ever receives the checked text or a matched text: records arrive with
their spans, masked excerpts and keyed hashes already computed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from modelplane.server.deployments.domain import TrafficSlot
from modelplane.server.guardrails.domain import (
    AggregateQuery,
    GroupBy,
    Links,
    Policy,
    PolicyFields,
    RuleDifference,
    ShadowCount,
    ShadowQuery,
    ShadowReport,
    ShadowSample,
    ShadowTarget,
    ViolationGroup,
    ViolationRecord,
    decision_of,
    fields_from_json,
    fields_to_json,
    severity_of,
)
from modelplane.server.guardrails.domain import stored as stored_form
from modelplane.server.store.keyed import Keyed
from modelplane.server.store.pool import Connection

T = TypeVar("T")

HASH_KEY_NAME = "violation_hash_key"

_POLICY_COLUMNS = """
    p.id, r.revision, r.body, p.create_time, r.create_time AS update_time, p.etag, p.shadow_revision,
    p.shadow_deployment, p.shadow_traffic_slot
"""

_VIOLATION_COLUMNS = """
    v.id, v.check_id, v.policy_id, v.policy_revision, v.rule_id, v.severity, v.category, v.decision,
    v.check_decision, v.model_version, v.deployment, v.traffic_slot, v.trace_id, v.request_id, v.span_start,
    v.span_end,
    v.excerpt, v.matched_hash, v.create_time
"""


@dataclass(frozen=True)
class PolicyHead:
    """Where a live policy stands: its active revision, the first and the last revision that belong to it
    (a shadow candidate may come after the active one), and its shadow revision (0: none)."""

    revision: int
    first_revision: int
    last_revision: int = 0
    shadow_revision: int = 0
    shadow_target: ShadowTarget = field(default_factory=ShadowTarget)

    @property
    def highest(self) -> int:
        return max(self.revision, self.last_revision)


@dataclass(frozen=True)
class CheckRow:
    """One check record, written only for checks that found something or ran out of time."""

    id: str
    policy_id: str
    policy_revision: int
    decision: str
    highest_severity: str
    violation_count: int
    unchecked: bool
    links: Links
    # The check's own request id: a repeat stores nothing.
    check_request_id: str
    create_time: datetime


@dataclass(frozen=True)
class ViolationRow:
    id: str
    rule_id: str
    severity: str
    category: str
    decision: str
    start: int
    end: int
    excerpt: str
    matched_hash: bytes


@dataclass(frozen=True)
class CountKey:
    """What clean checks are counted by: the second they were made in, the policy revision, the links."""

    bucket_time: datetime
    policy_id: str
    policy_revision: int
    model_version: str
    deployment: str
    traffic_slot: str


def _body(value: Any) -> Mapping[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def _policy(row: asyncpg.Record) -> Policy:
    return Policy(
        id=row["id"],
        revision=row["revision"],
        fields=fields_from_json(_body(row["body"])),
        create_time=row["create_time"],
        update_time=row["update_time"],
        etag=row["etag"],
        shadow_revision=row["shadow_revision"],
        shadow_target=_target(row),
    )


def _target(row: asyncpg.Record) -> ShadowTarget:
    return ShadowTarget(row["shadow_deployment"], TrafficSlot(row["shadow_traffic_slot"]))


def _head(row: asyncpg.Record) -> PolicyHead:
    return PolicyHead(
        row["revision"], row["first_revision"], row["last_revision"], row["shadow_revision"], _target(row)
    )


# ---- the hash key


async def hash_key(conn: Connection) -> bytes:
    """The HMAC key of matched texts, created by the first replica to ask; every replica reads the same."""
    await conn.execute(
        "INSERT INTO server_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        HASH_KEY_NAME,
        secrets.token_bytes(32),
    )
    value = await conn.fetchval("SELECT secret FROM server_secrets WHERE name = $1", HASH_KEY_NAME)
    return bytes(value)


# ---- policies


async def insert_policy(conn: Connection, policy_id: str, fields: PolicyFields, etag: str) -> Policy | None:
    """Creates a policy at the revision after any of a deleted policy of the same id; None if it exists."""
    row = await conn.fetchrow(
        "INSERT INTO policies (id, revision, first_revision, last_revision, display_name, description,"
        " create_time, update_time, etag)"
        " SELECT $1, n, n, n, $2, $3, now(), now(), $4 FROM (SELECT coalesce(max(revision), 0) + 1 AS n"
        "  FROM policy_revisions WHERE policy_id = $1) AS next"
        " ON CONFLICT (id) DO NOTHING RETURNING revision",
        policy_id,
        fields.display_name,
        fields.description,
        etag,
    )
    if row is None:
        return None
    await _insert_revision(conn, policy_id, row["revision"], fields)
    return await get_policy(conn, policy_id)


async def _insert_revision(conn: Connection, policy_id: str, revision: int, fields: PolicyFields) -> None:
    await conn.execute(
        "INSERT INTO policy_revisions (policy_id, revision, body, create_time) VALUES ($1, $2, $3, now())",
        policy_id,
        revision,
        json.dumps(fields_to_json(fields)),
    )


async def get_head(conn: Connection, policy_id: str, *, for_update: bool = False) -> PolicyHead | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        "SELECT revision, first_revision, last_revision, shadow_revision, shadow_deployment,"
        f" shadow_traffic_slot FROM policies WHERE id = $1{lock}",
        policy_id,
    )
    return None if row is None else _head(row)


async def get_head_at(conn: Connection, policy_id: str) -> tuple[PolicyHead | None, int]:
    """A policy's head with the revision it was read at (one statement, one snapshot)."""
    row = await conn.fetchrow(
        "SELECT p.revision, p.first_revision, p.last_revision, p.shadow_revision, p.shadow_deployment,"
        " p.shadow_traffic_slot, c.revision AS read_revision"
        " FROM revision_counter c LEFT JOIN policies p ON p.id = $1",
        policy_id,
    )
    assert row is not None, "revision_counter has one row"
    head = None if row["revision"] is None else _head(row)
    return head, int(row["read_revision"])


async def get_policy(conn: Connection, policy_id: str, revision: int = 0) -> Policy | None:
    """A live policy at `revision` (0: the latest); None if the policy or that revision of it is unknown."""
    row = await conn.fetchrow(
        f"SELECT {_POLICY_COLUMNS} FROM policies p JOIN policy_revisions r ON r.policy_id = p.id"
        " AND r.revision = CASE WHEN $2::bigint = 0 THEN p.revision ELSE $2::bigint END"
        " WHERE p.id = $1 AND r.revision >= p.first_revision",
        policy_id,
        revision,
    )
    return None if row is None else _policy(row)


async def list_policies(
    conn: Connection, *, where: str, params: Sequence[object], order_sql: str, limit: int
) -> list[Keyed[Policy]]:
    rows = await conn.fetch(
        f"SELECT {_POLICY_COLUMNS} FROM policies p JOIN policy_revisions r"
        " ON r.policy_id = p.id AND r.revision = p.revision"
        f" WHERE {where} ORDER BY {order_sql} LIMIT {int(limit)}",
        *params,
    )
    return [Keyed(_policy(r), r) for r in rows]


async def list_revisions(
    conn: Connection, policy_id: str, *, before: int | None, limit: int
) -> list[Keyed[Policy]]:
    """Revisions of a live policy, newest first, older than `before` when given."""
    rows = await conn.fetch(
        f"SELECT {_POLICY_COLUMNS} FROM policies p JOIN policy_revisions r ON r.policy_id = p.id"
        " WHERE p.id = $1 AND r.revision >= p.first_revision AND ($2::bigint IS NULL OR r.revision < $2)"
        f" ORDER BY r.revision DESC LIMIT {int(limit)}",
        policy_id,
        before,
    )
    return [Keyed(_policy(r), r) for r in rows]


async def update_policy(
    conn: Connection, policy_id: str, fields: PolicyFields, *, expected_etag: str, new_etag: str
) -> Policy | None:
    """Makes the next revision with `fields`; None if the policy is missing or its etag does not match."""
    row = await conn.fetchrow(
        "UPDATE policies SET revision = last_revision + 1, last_revision = last_revision + 1,"
        " display_name = $2, description = $3, update_time = now(), etag = $4"
        " WHERE id = $1 AND ($5 = '' OR etag = $5) RETURNING revision",
        policy_id,
        fields.display_name,
        fields.description,
        new_etag,
        expected_etag,
    )
    if row is None:
        return None
    await _insert_revision(conn, policy_id, row["revision"], fields)
    return await get_policy(conn, policy_id)


async def delete_policy(conn: Connection, policy_id: str) -> None:
    await conn.execute("DELETE FROM policies WHERE id = $1", policy_id)


# ---- records


async def insert_check(conn: Connection, check: CheckRow, violations: Sequence[ViolationRow]) -> bool:
    """Stores a check and its violations; False (storing nothing) when its request id was seen before."""
    links = check.links
    stored = await conn.fetchval(
        "INSERT INTO guardrail_checks (id, policy_id, policy_revision, decision, highest_severity,"
        " violation_count, unchecked, model_version, deployment, traffic_slot, trace_id, request_id,"
        " check_request_id, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT (check_request_id) WHERE check_request_id <> '' DO NOTHING RETURNING true",
        check.id,
        check.policy_id,
        check.policy_revision,
        check.decision,
        check.highest_severity,
        check.violation_count,
        check.unchecked,
        links.model_version,
        links.deployment,
        links.traffic_slot.value,
        links.trace_id,
        links.request_id,
        check.check_request_id,
        check.create_time,
    )
    if not stored:
        return False
    if violations:
        await conn.executemany(
            "INSERT INTO guardrail_violations (id, check_id, policy_id, policy_revision, rule_id, severity,"
            " category, decision, check_decision, model_version, deployment, traffic_slot, trace_id,"
            " request_id, span_start, span_end, excerpt, matched_hash, create_time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
            [
                (
                    v.id,
                    check.id,
                    check.policy_id,
                    check.policy_revision,
                    v.rule_id,
                    v.severity,
                    v.category,
                    v.decision,
                    check.decision,
                    links.model_version,
                    links.deployment,
                    links.traffic_slot.value,
                    links.trace_id,
                    links.request_id,
                    v.start,
                    v.end,
                    v.excerpt,
                    v.matched_hash,
                    check.create_time,
                )
                for v in violations
            ],
        )
    return True


async def add_check_counts(conn: Connection, counts: Mapping[CountKey, int]) -> None:
    """Adds counts of clean checks to their buckets."""
    await conn.executemany(
        "INSERT INTO guardrail_check_counts (bucket_time, policy_id, policy_revision, model_version,"
        " deployment, traffic_slot, checks) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (bucket_time, policy_id, policy_revision, model_version, deployment, traffic_slot)"
        " DO UPDATE SET checks = guardrail_check_counts.checks + EXCLUDED.checks",
        [
            (k.bucket_time, k.policy_id, k.policy_revision, k.model_version, k.deployment, k.traffic_slot, n)
            for k, n in counts.items()
        ],
    )


def _links(row: asyncpg.Record) -> Links:
    """The links stored with a record (violation or shadow sample)."""
    return Links(
        model_version=row["model_version"],
        deployment=row["deployment"],
        traffic_slot=TrafficSlot(row["traffic_slot"]),
        trace_id=row["trace_id"],
        request_id=row["request_id"],
    )


def _violation(row: asyncpg.Record) -> ViolationRecord:
    return ViolationRecord(
        id=row["id"],
        check_id=row["check_id"],
        policy_id=row["policy_id"],
        policy_revision=row["policy_revision"],
        rule_id=row["rule_id"],
        severity=severity_of(row["severity"]),
        category=row["category"],
        decision=decision_of(row["decision"]),
        check_decision=decision_of(row["check_decision"]),
        links=_links(row),
        start=row["span_start"],
        end=row["span_end"],
        excerpt=row["excerpt"],
        matched_hash=bytes(row["matched_hash"]),
        create_time=row["create_time"],
    )


async def list_violations(
    conn: Connection, *, where: str, params: Sequence[object], order_sql: str, limit: int
) -> list[Keyed[ViolationRecord]]:
    rows = await conn.fetch(
        f"SELECT {_VIOLATION_COLUMNS} FROM guardrail_violations v"
        f" WHERE {where} ORDER BY {order_sql} LIMIT {int(limit)}",
        *params,
    )
    return [Keyed(_violation(r), r) for r in rows]


# Facts the aggregate sums: one row per recorded check (or per check and rule when grouping by rule),
# plus the per-second counts of clean checks.
_CHECK_FACTS = """
    SELECT policy_id, '' AS rule_id, highest_severity AS severity, model_version, deployment, traffic_slot,
           create_time AS t, 1::bigint AS checks, (violation_count > 0)::int AS with_violations,
           violation_count::bigint AS violations, (decision = 'block')::int AS blocked
    FROM guardrail_checks
    UNION ALL
    SELECT policy_id, '', '', model_version, deployment, traffic_slot, bucket_time, checks, 0, 0, 0
    FROM guardrail_check_counts
"""
_RULE_FACTS = """
    SELECT c.policy_id, v.rule_id, min(v.severity) AS severity, c.model_version, c.deployment,
           c.traffic_slot, c.create_time AS t, 1::bigint AS checks, 1 AS with_violations,
           count(*) AS violations, (c.decision = 'block')::int AS blocked
    FROM guardrail_violations v JOIN guardrail_checks c ON c.id = v.check_id
    GROUP BY c.id, v.rule_id
"""
_GROUP_COLUMNS: Mapping[GroupBy, str] = {
    GroupBy.POLICY: "policy_id",
    GroupBy.RULE: "rule_id",
    GroupBy.SEVERITY: "severity",
    GroupBy.MODEL_VERSION: "model_version",
    GroupBy.DEPLOYMENT: "deployment",
    GroupBy.TRAFFIC_SLOT: "traffic_slot",
    GroupBy.TIME_BUCKET: "date_bin($4::interval, t, TIMESTAMPTZ '1970-01-01 00:00:00+00')",
}


async def aggregate(conn: Connection, query: AggregateQuery) -> list[ViolationGroup]:
    groups = list(query.group_by)
    if GroupBy.RULE in groups and GroupBy.POLICY not in groups:
        # A rule id is only unique within its policy.
        groups.insert(0, GroupBy.POLICY)
    facts = _RULE_FACTS if GroupBy.RULE in groups else _CHECK_FACTS
    keys = [f"{_GROUP_COLUMNS[g]} AS {g.value}" for g in groups]
    group_sql = f" GROUP BY {', '.join(g.value for g in groups)}" if groups else ""
    order_sql = f" ORDER BY {', '.join(g.value for g in groups)}" if groups else ""
    params: list[object] = [query.start_time, query.end_time, query.policy_id]
    if GroupBy.TIME_BUCKET in groups:
        params.append(timedelta(seconds=query.bucket_seconds))
    rows = await conn.fetch(
        f"SELECT {', '.join([*keys, ''])} sum(checks) AS checks, sum(with_violations) AS with_violations,"
        " sum(violations) AS violations, sum(blocked) AS blocked"
        f" FROM ({facts}) AS f"
        " WHERE ($1::timestamptz IS NULL OR t >= $1) AND ($2::timestamptz IS NULL OR t < $2)"
        f" AND ($3 = '' OR policy_id = $3){group_sql} HAVING sum(checks) > 0{order_sql}",
        *params,
    )
    result: list[ViolationGroup] = []
    for row in rows:
        values = dict(row)
        severity = values.get("severity") or ""
        result.append(
            ViolationGroup(
                policy_id=values.get("policy", "") or "",
                rule_id=values.get("rule", "") or "",
                severity=severity_of(severity) if severity else None,
                model_version=values.get("model_version", "") or "",
                deployment=values.get("deployment", "") or "",
                traffic_slot=TrafficSlot(values.get("traffic_slot", "") or ""),
                bucket_start=values.get("time_bucket"),
                checks=int(values["checks"]),
                checks_with_violations=int(values["with_violations"]),
                violations=int(values["violations"]),
                blocked_checks=int(values["blocked"]),
            )
        )
    return result


# ---- shadow revisions


async def set_shadow(
    conn: Connection,
    policy_id: str,
    revision: int,
    target: ShadowTarget,
    *,
    expected_etag: str,
    new_etag: str,
) -> bool:
    """Sets (or, with 0 and an empty target, clears) the shadow revision; False if the etag does not match."""
    row = await conn.fetchrow(
        "UPDATE policies SET shadow_revision = $2, shadow_deployment = $3, shadow_traffic_slot = $4,"
        " etag = $5 WHERE id = $1 AND ($6 = '' OR etag = $6) RETURNING 1",
        policy_id,
        revision,
        target.deployment,
        target.traffic_slot.value,
        new_etag,
        expected_etag,
    )
    return row is not None


async def insert_candidate(
    conn: Connection,
    policy_id: str,
    fields: PolicyFields,
    target: ShadowTarget,
    *,
    expected_etag: str,
    new_etag: str,
) -> int | None:
    """Writes `fields` as the next revision without making it active, and shadows it; its number, or None
    if the etag does not match."""
    row = await conn.fetchrow(
        "UPDATE policies SET last_revision = last_revision + 1, shadow_revision = last_revision + 1,"
        " shadow_deployment = $4, shadow_traffic_slot = $5,"
        " etag = $2 WHERE id = $1 AND ($3 = '' OR etag = $3) RETURNING last_revision",
        policy_id,
        new_etag,
        expected_etag,
        target.deployment,
        target.traffic_slot.value,
    )
    if row is None:
        return None
    revision = int(row["last_revision"])
    await _insert_revision(conn, policy_id, revision, fields)
    return revision


@dataclass(frozen=True)
class ShadowCountKey:
    """What checks under a shadow are counted by."""

    bucket_time: datetime
    policy_id: str
    active_revision: int
    shadow_revision: int
    active_decision: str
    active_unchecked: bool
    shadow_decision: str
    # 'checked', 'unchecked' or 'skipped'
    shadow_outcome: str


@dataclass(frozen=True)
class ShadowRuleKey:
    bucket_time: datetime
    policy_id: str
    active_revision: int
    shadow_revision: int
    rule_id: str


@dataclass(frozen=True)
class ShadowRuleCounts:
    active_only: int = 0
    shadow_only: int = 0
    decision_changed: int = 0

    def __add__(self, other: ShadowRuleCounts) -> ShadowRuleCounts:
        return ShadowRuleCounts(
            self.active_only + other.active_only,
            self.shadow_only + other.shadow_only,
            self.decision_changed + other.decision_changed,
        )


_SAMPLE_COLUMNS = (
    "id, policy_id, active_revision, shadow_revision, rule_id, severity, category, decision, shadow_decision,"
    " active_decision, model_version, deployment, traffic_slot, trace_id, request_id, span_start, span_end,"
    " excerpt, matched_hash, create_time"
)


async def add_shadow_counts(
    conn: Connection,
    counts: Mapping[ShadowCountKey, int],
    rules: Mapping[ShadowRuleKey, ShadowRuleCounts],
    samples: Sequence[ShadowSample],
) -> None:
    """Adds counts of checks under shadows, their rule differences and sample violations."""
    if counts:
        await conn.executemany(
            "INSERT INTO guardrail_shadow_counts (bucket_time, policy_id, active_revision, shadow_revision,"
            " active_decision, active_unchecked, shadow_decision, shadow_outcome, checks)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (policy_id, shadow_revision, bucket_time, active_revision, active_decision,"
            " active_unchecked, shadow_decision, shadow_outcome)"
            " DO UPDATE SET checks = guardrail_shadow_counts.checks + EXCLUDED.checks",
            [
                (
                    k.bucket_time,
                    k.policy_id,
                    k.active_revision,
                    k.shadow_revision,
                    k.active_decision,
                    k.active_unchecked,
                    k.shadow_decision,
                    k.shadow_outcome,
                    n,
                )
                for k, n in counts.items()
            ],
        )
    if rules:
        await conn.executemany(
            "INSERT INTO guardrail_shadow_rule_counts (bucket_time, policy_id, active_revision,"
            " shadow_revision, rule_id, active_only, shadow_only, decision_changed)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (policy_id, shadow_revision, bucket_time, active_revision, rule_id) DO UPDATE SET"
            " active_only = guardrail_shadow_rule_counts.active_only + EXCLUDED.active_only,"
            " shadow_only = guardrail_shadow_rule_counts.shadow_only + EXCLUDED.shadow_only,"
            " decision_changed = guardrail_shadow_rule_counts.decision_changed + EXCLUDED.decision_changed",
            [
                (
                    k.bucket_time,
                    k.policy_id,
                    k.active_revision,
                    k.shadow_revision,
                    k.rule_id,
                    c.active_only,
                    c.shadow_only,
                    c.decision_changed,
                )
                for k, c in rules.items()
            ],
        )
    if samples:
        await conn.executemany(
            f"INSERT INTO guardrail_shadow_samples ({_SAMPLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
            [
                (
                    s.id,
                    s.policy_id,
                    s.active_revision,
                    s.shadow_revision,
                    s.rule_id,
                    stored_form(s.severity),
                    s.category,
                    stored_form(s.decision),
                    stored_form(s.shadow_decision),
                    stored_form(s.active_decision),
                    s.links.model_version,
                    s.links.deployment,
                    s.links.traffic_slot.value,
                    s.links.trace_id,
                    s.links.request_id,
                    s.start,
                    s.end,
                    s.excerpt,
                    s.matched_hash,
                    s.create_time,
                )
                for s in samples
            ],
        )


_WINDOW = "policy_id = $1 AND shadow_revision = $2 AND ($3::timestamptz IS NULL OR {t} >= $3)" + (
    " AND ($4::timestamptz IS NULL OR {t} < $4)"
)


async def shadow_report(
    conn: Connection, query: ShadowQuery, *, max_rules: int, max_samples: int
) -> ShadowReport:
    """The counts, rule differences and newest samples of one shadow revision over a window."""
    params = (query.policy_id, query.shadow_revision, query.start_time, query.end_time)
    count_rows = await conn.fetch(
        "SELECT active_revision, active_decision, active_unchecked, shadow_decision, shadow_outcome,"
        " sum(checks) AS checks FROM guardrail_shadow_counts WHERE "
        + _WINDOW.format(t="bucket_time")
        + " GROUP BY 1, 2, 3, 4, 5",
        *params,
    )
    rule_rows = await conn.fetch(
        "SELECT rule_id, sum(active_only) AS active_only, sum(shadow_only) AS shadow_only,"
        " sum(decision_changed) AS decision_changed FROM guardrail_shadow_rule_counts WHERE "
        + _WINDOW.format(t="bucket_time")
        + " GROUP BY rule_id"
        " HAVING sum(active_only) + sum(shadow_only) + sum(decision_changed) > 0"
        f" ORDER BY sum(active_only) + sum(shadow_only) + sum(decision_changed) DESC, rule_id"
        f" LIMIT {int(max_rules)}",
        *params,
    )
    sample_rows = await conn.fetch(
        f"SELECT {_SAMPLE_COLUMNS} FROM guardrail_shadow_samples WHERE "
        + _WINDOW.format(t="create_time")
        + f" ORDER BY create_time DESC, id DESC LIMIT {int(max_samples)}",
        *params,
    )
    return ShadowReport(
        policy_id=query.policy_id,
        shadow_revision=query.shadow_revision,
        counts=tuple(
            ShadowCount(
                active_revision=r["active_revision"],
                active_decision=decision_of(r["active_decision"]),
                active_unchecked=r["active_unchecked"],
                shadow_decision=decision_of(r["shadow_decision"]),
                shadow_outcome=r["shadow_outcome"],
                checks=int(r["checks"]),
            )
            for r in count_rows
        ),
        rule_differences=tuple(
            RuleDifference(
                r["rule_id"], int(r["active_only"]), int(r["shadow_only"]), int(r["decision_changed"])
            )
            for r in rule_rows
        ),
        samples=tuple(_sample(r) for r in sample_rows),
    )


def _sample(row: asyncpg.Record) -> ShadowSample:
    return ShadowSample(
        id=row["id"],
        policy_id=row["policy_id"],
        active_revision=row["active_revision"],
        shadow_revision=row["shadow_revision"],
        rule_id=row["rule_id"],
        severity=severity_of(row["severity"]),
        category=row["category"],
        decision=decision_of(row["decision"]),
        shadow_decision=decision_of(row["shadow_decision"]),
        active_decision=decision_of(row["active_decision"]),
        links=_links(row),
        start=row["span_start"],
        end=row["span_end"],
        excerpt=row["excerpt"],
        matched_hash=bytes(row["matched_hash"]),
        create_time=row["create_time"],
    )
