"""The parts of shadow evaluation that need no server: which rules differ between two results, which checks a
narrowed shadow sees, and the background runner's bounds (skipped when full, unchecked out of budget, never
holding the caller), against a fake database that records what would be written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from modelplane.server.deployments.domain import TrafficSlot
from modelplane.server.guardrails.compiled import compile_fields
from modelplane.server.guardrails.domain import FailMode, Links, Policy, PolicyFields, ShadowTarget, Verdict
from modelplane.server.guardrails.engine import BannedTerms, CompiledPolicy, Decision, RuleSpec, Severity
from modelplane.server.guardrails.shadow import ShadowChecks, ShadowJob, rule_decisions, rule_differences
from modelplane.server.store.pool import Database

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _policy(revision: int, *terms: tuple[str, str, Severity]) -> tuple[Policy, CompiledPolicy]:
    fields = PolicyFields(
        fail_mode=FailMode.CLOSED,
        rules=tuple(
            RuleSpec(rule_id, severity, "cat", BannedTerms((term,))) for rule_id, term, severity in terms
        ),
    )
    policy = Policy("p", revision, fields, NOW, NOW, "etag")
    return policy, compile_fields(fields, "policy")


def test_rule_differences_name_one_sided_and_changed_rules() -> None:
    active = {"a": Decision.BLOCK, "b": Decision.REDACT, "same": Decision.ALLOW}
    shadow = {"b": Decision.BLOCK, "c": Decision.ALLOW, "same": Decision.ALLOW}
    found = {
        rule_id: (c.active_only, c.shadow_only, c.decision_changed)
        for rule_id, c in rule_differences(active, shadow).items()
    }
    assert found == {"a": (1, 0, 0), "b": (0, 0, 1), "c": (0, 1, 0)}


def test_rule_decisions_count_rules_whose_matches_are_only_counted() -> None:
    policy, compiled = _policy(1, ("kill", "kill", Severity.CRITICAL), ("mild", "gloomy", Severity.INFO))
    result = compiled.check("kill " * 150 + "gloomy", float("inf"))
    assert result.omitted.get("kill", 0) > 0
    assert rule_decisions(policy, result) == {"kill": Decision.BLOCK, "mild": Decision.ALLOW}


def test_a_narrowed_shadow_matches_its_deployment_and_slot_only() -> None:
    canary = ShadowTarget("deployments/web", TrafficSlot.CANARY)
    web = ShadowTarget("deployments/web")
    assert canary.matches(Links(deployment="deployments/web", traffic_slot=TrafficSlot.CANARY))
    assert not canary.matches(Links(deployment="deployments/web", traffic_slot=TrafficSlot.STABLE))
    assert not canary.matches(Links(deployment="deployments/other", traffic_slot=TrafficSlot.CANARY))
    assert web.matches(Links(deployment="deployments/web", traffic_slot=TrafficSlot.STABLE))
    assert not web.matches(Links())
    assert ShadowTarget().matches(Links())


class _RecordingConnection:
    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {}

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        table = sql.split()[2]
        self.rows.setdefault(table, []).extend(rows)


class _RecordingDatabase:
    def __init__(self) -> None:
        self.conn = _RecordingConnection()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_RecordingConnection]:
        yield self.conn


def _job(active: Policy, text: str) -> ShadowJob:
    verdict = Verdict("p", active.revision, Decision.ALLOW, (), None, FailMode.CLOSED)
    return ShadowJob(active, verdict, None, 2, text, Links(), NOW)


async def _key(policy_id: str) -> bytes:
    return b"k" * 32


async def test_a_full_queue_or_too_much_text_is_skipped() -> None:
    active, _ = _policy(1, ("v", "kill", Severity.CRITICAL))
    shadow, shadow_compiled = _policy(2, ("v", "thunder", Severity.CRITICAL))
    release = asyncio.Event()

    async def load(policy_id: str, revision: int) -> tuple[Policy, CompiledPolicy]:
        await release.wait()
        return shadow, shadow_compiled

    database = _RecordingDatabase()
    checks = ShadowChecks(cast(Database, database), load, _key, max_pending=1, max_pending_chars=100)
    checks.submit(_job(active, "the thunder rolled"))  # waits on `release`
    checks.submit(_job(active, "a second text"))  # the queue is full: skipped
    assert len(checks._running) == 1
    release.set()
    await checks.drain()
    # Over the characters bound, even with the queue empty: skipped.
    checks.submit(_job(active, "x" * 101))
    await checks.drain()
    await checks.close()
    outcomes: dict[tuple[str, str], int] = {}
    for row in database.conn.rows["guardrail_shadow_counts"]:
        outcomes[row[6], row[7]] = outcomes.get((row[6], row[7]), 0) + row[8]
    assert outcomes == {("allow", "skipped"): 2, ("block", "checked"): 1}
    samples = database.conn.rows["guardrail_shadow_samples"]
    assert [(row[4], row[17]) for row in samples] == [("v", "*******")]


class _SlowCheck:
    """A compiled policy whose check outlasts any budget of a few milliseconds."""

    def check(self, text: str, deadline: float) -> None:
        time.sleep(0.2)


async def test_a_shadow_out_of_its_budget_is_counted_unchecked_with_its_fail_mode() -> None:
    active, _ = _policy(1, ("v", "kill", Severity.CRITICAL))
    shadow = replace(active, revision=2, fields=replace(active.fields, time_budget_ms=5))

    async def load(policy_id: str, revision: int) -> tuple[Policy, CompiledPolicy]:
        return shadow, cast(CompiledPolicy, _SlowCheck())

    database = _RecordingDatabase()
    checks = ShadowChecks(cast(Database, database), load, _key)
    checks.submit(_job(active, "any text"))
    await checks.drain()
    await checks.close()
    [row] = database.conn.rows["guardrail_shadow_counts"]
    # The shadow's fail mode is CLOSED: out of its budget it would have blocked.
    assert (row[6], row[7], row[8]) == ("block", "unchecked", 1)
