"""One write transaction: the global revision, the change log, the audit row, request ids and the wake-up.

Every mutating RPC of every capability runs in a `Mutation`, so the rules of DESIGN.md hold in one
place: a revision per write transaction (commit order = revision order), a change row per resource
changed, an audit row in the same transaction, at-most-once execution per request id, and a NOTIFY
that wakes the watchers once the transaction commits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from modelplane.server.errors import InvalidArgument
from modelplane.server.store.pool import Connection, Database
from modelplane.v1.error_reason_pb2 import ErrorReason

# The LISTEN/NOTIFY channel: only a wake-up hint carrying the revision; watchers read the change table.
CHANGES_CHANNEL = "modelplane_changes"


@dataclass(frozen=True)
class WriteRequest:
    """Who writes, through which method, and the request id that makes the write idempotent."""

    actor: str
    method: str
    # The request's request_id field; empty: not idempotent.
    request_id: str = ""
    # A digest of the request without its request_id: the same id with another body is refused.
    fingerprint: bytes = b""


@dataclass(frozen=True)
class Replayed:
    """The stored result of the first call with a request id (the JSON form its capability chose)."""

    result: Any


class Mutation:
    """The open write transaction of one mutating RPC."""

    def __init__(self, conn: Connection, write: WriteRequest) -> None:
        self.conn = conn
        self.write = write
        self._revision: int | None = None
        self._changes = 0

    @property
    def taken_revision(self) -> int | None:
        """The revision this transaction took, if it changed anything."""
        return self._revision

    async def revision(self) -> int:
        """The revision of this transaction, taken on first use.

        The UPDATE holds the counter's row lock until COMMIT, so the next writer waits: revisions are
        handed out in commit order and a reader of `revision > N` never sees a gap filled later.
        """
        if self._revision is None:
            value = await self.conn.fetchval(
                "UPDATE revision_counter SET revision = revision + 1 RETURNING revision"
            )
            self._revision = int(value)
            await self.conn.execute("SELECT pg_notify($1, $2)", CHANGES_CHANNEL, str(self._revision))
        return self._revision

    async def record(
        self,
        *,
        resource_type: str,
        resource: str,
        kind: str,
        snapshot: Mapping[str, Any] | None,
    ) -> int:
        """Appends one change and its audit row; returns the revision."""
        revision = await self.revision()
        await self.conn.execute(
            "INSERT INTO changes (revision, seq, resource_type, resource, kind, snapshot, actor)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            revision,
            self._changes,
            resource_type,
            resource,
            kind,
            None if snapshot is None else json.dumps(snapshot),
            self.write.actor,
        )
        self._changes += 1
        await self.conn.execute(
            "INSERT INTO audit_log (revision, actor, method, resource, request_id) VALUES ($1,"
            " $2, $3, $4, $5)",
            revision,
            self.write.actor,
            self.write.method,
            resource,
            self.write.request_id,
        )
        # The change is also a control-plane event in the log store, committed or rolled back with it,
        # so alias moves, policy revisions and rollouts show up next to the services' own events.
        await self.conn.execute(
            "SELECT log_control_plane_change($1, $2, $3, $4, $5, $6)",
            revision,
            self._changes - 1,
            resource_type,
            resource,
            kind,
            self.write.actor,
        )
        return revision

    async def replay(self) -> Replayed | None:
        """Claims the request id; returns the first call's stored result when this call is a repeat.

        The INSERT waits on a concurrent first call's uncommitted row, so of several concurrent calls
        with one id exactly one runs; the others return its result once it commits (or run themselves
        if it rolled back).
        """
        if not self.write.request_id:
            return None
        claimed = await self.conn.fetchval(
            "INSERT INTO request_ids (method, request_id, fingerprint) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true",
            self.write.method,
            self.write.request_id,
            self.write.fingerprint,
        )
        if claimed:
            return None
        row = await self.conn.fetchrow(
            "SELECT fingerprint, response FROM request_ids WHERE method = $1 AND request_id = $2",
            self.write.method,
            self.write.request_id,
        )
        assert row is not None, "a request id row is never deleted while its key is claimed"
        if bytes(row["fingerprint"]) != self.write.fingerprint:
            raise InvalidArgument.field(
                "request_id",
                "was already used for a different request; send a new request id for a new request",
                reason=ErrorReason.ERROR_REASON_REQUEST_ID_REUSED,
            )
        return Replayed(None if row["response"] is None else json.loads(row["response"]))

    async def remember(self, result: Any) -> None:
        """Stores the JSON form of the result for repeats of this request id."""
        if self.write.request_id:
            await self.conn.execute(
                "UPDATE request_ids SET response = $3 WHERE method = $1 AND request_id = $2",
                self.write.method,
                self.write.request_id,
                json.dumps(result),
            )


@asynccontextmanager
async def mutation(database: Database, write: WriteRequest) -> AsyncIterator[Mutation]:
    """Opens a write transaction; it commits when the block ends and rolls back on any error."""
    async with database.transaction() as conn:
        yield Mutation(conn, write)
