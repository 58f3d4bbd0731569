"""The records of checks that found something: one check row and its listed violations, in one transaction.

Violation rows hold spans, excerpts and a keyed hash of each matched text, never the text: the hash key is
derived per policy from a server secret kept in Postgres, so one policy's hashes compare across replicas
and never with another policy's.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import replace
from datetime import datetime

from modelplane.server.guardrails import store
from modelplane.server.guardrails.domain import Links, Policy, Verdict, stored
from modelplane.server.guardrails.engine import CheckResult
from modelplane.server.store.pool import Database


def matched_hash(key: bytes, matched_text: str) -> bytes:
    """The keyed hash a record keeps instead of a matched text."""
    return hmac.new(key, matched_text.encode(), hashlib.sha256).digest()


class CheckRecorder:
    """Writes check records; reads the server's hash key once."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._hash_key: bytes | None = None

    async def _key(self) -> bytes:
        if self._hash_key is None:
            async with self._db.connection() as conn:
                self._hash_key = await store.hash_key(conn)
        return self._hash_key

    async def policy_key(self, policy_id: str) -> bytes:
        """The HMAC key of one policy's matched texts (its records and its shadow's samples alike)."""
        # One key per policy: hashes of one policy's records compare, across policies they do not.
        return hmac.new(await self._key(), f"policy:{policy_id}".encode(), hashlib.sha256).digest()

    async def keep(
        self,
        policy: Policy,
        verdict: Verdict,
        result: CheckResult | None,
        links: Links,
        request_id: str,
        now: datetime,
    ) -> Verdict:
        """Stores the records of a check that found something or ran out of time (once per request id);
        the verdict with its check id (empty when a repeat of the request id stored nothing)."""
        key = await self.policy_key(policy.id)
        check_id = uuid.uuid4().hex
        engine_violations = result.violations if result is not None else ()
        rows = [
            store.ViolationRow(
                id=uuid.uuid4().hex,
                rule_id=v.rule_id,
                severity=stored(v.severity),
                category=v.category,
                decision=stored(v.decision),
                start=v.start,
                end=v.end,
                excerpt=v.excerpt,
                matched_hash=matched_hash(key, v.matched_text),
            )
            for v in engine_violations
        ]
        check = store.CheckRow(
            id=check_id,
            policy_id=policy.id,
            policy_revision=policy.revision,
            decision=stored(verdict.decision),
            highest_severity="" if verdict.highest_severity is None else stored(verdict.highest_severity),
            violation_count=verdict.violation_count,
            unchecked=verdict.unchecked,
            links=links,
            check_request_id=request_id,
            create_time=now,
        )
        async with self._db.transaction() as conn:
            kept = await store.insert_check(conn, check, rows)
        return replace(verdict, check_id=check_id if kept else "")
