"""One write transaction: the global revision, the change log, the audit row, request ids and the wake-up.

Every mutating RPC of every capability runs in a `Mutation` (through `store.writes.write_once`), except the
registry's hottest writes, whose SQL functions (schema/0014) keep the same rules in one statement by calling
this module's SQL half (`mutation_finish`); so what the README promises of every write ("Running the
server") holds in one place: a revision per write
transaction, read by watchers only once every smaller one has committed or rolled back (so a reader of
`revision > N` never misses a change that commits later), a change row per resource changed, an audit row
in the same transaction, at-most-once execution per request id, and a NOTIFY that wakes the watchers once
the revision is published (`store.publish`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from modelplane.client.trace_context import current_trace_ids
from modelplane.server.errors import InvalidArgument
from modelplane.server.store.pool import Connection, Database
from modelplane.server.store.publish import publisher_for
from modelplane.v1.error_reason_pb2 import ErrorReason


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


@dataclass(frozen=True)
class _Change:
    resource_type: str
    resource: str
    kind: str
    # The snapshot's JSON text; None on delete.
    snapshot: str | None


class Mutation:
    """The open write transaction of one mutating RPC.

    The change rows, audit rows, log events and the request id's stored result are kept here and written
    by one statement (`mutation_finish`, see schema/0011) when the block ends, just before COMMIT, which
    also takes the revision unless the body asked for it earlier. Taking it locks nothing another writer
    waits for: the revision's own advisory lock, held until COMMIT, only holds back the published horizon.
    """

    def __init__(self, conn: Connection, write: WriteRequest) -> None:
        self.conn = conn
        self.write = write
        self._revision: int | None = None
        self._pending: list[_Change] = []
        # Changes written so far: the seq of the next one.
        self._written = 0
        self._response: str | None = None
        # Tables with rows written with the revision placeholder.
        self._placeholder_tables: list[str] = []
        self._placeholder = -1 - secrets.randbits(62)
        # Whether `begin` claimed the request id for this call.
        self._claimed = False

    @property
    def taken_revision(self) -> int | None:
        """The revision this transaction took, if it changed anything."""
        return self._revision

    async def revision(self) -> int:
        """The revision of this transaction, taken now if it was not yet, for a body that writes it into
        its own rows. Call it as late as the body allows: no revision above it is published (seen by
        watchers) from here until this transaction ends.
        """
        if self._revision is None:
            self._revision = int(await self.conn.fetchval("SELECT take_revision()"))
        return self._revision

    def revision_for(self, table: str) -> int:
        """What to write into the `revision` column of a row of `table` that names this write's revision,
        without taking the revision now: the revision itself when it was taken already, else a placeholder
        (a negative number, unique to this transaction) that the statement ending the write replaces with
        the revision. The table needs an index on `revision` for its negative values (see schema/0008)."""
        if self._revision is not None:
            return self._revision
        if table not in self._placeholder_tables:
            self._placeholder_tables.append(table)
        return self._placeholder

    def change(
        self,
        *,
        resource_type: str,
        resource: str,
        kind: str,
        snapshot: Mapping[str, Any] | None,
    ) -> None:
        """Adds one change, written with its audit row and log event when the block ends (in revision order,
        under the transaction's revision)."""
        self._pending.append(
            _Change(resource_type, resource, kind, None if snapshot is None else json.dumps(snapshot))
        )

    async def record(
        self,
        *,
        resource_type: str,
        resource: str,
        kind: str,
        snapshot: Mapping[str, Any] | None,
    ) -> int:
        """`change()`, for a body that needs the revision now: takes it (see `revision()`) and returns it."""
        self.change(resource_type=resource_type, resource=resource, kind=kind, snapshot=snapshot)
        return await self.revision()

    async def finish(self) -> None:
        """Writes what the block recorded, in one statement; `mutation()` calls it before COMMIT."""
        remember = self._response is not None
        if not self._pending and not remember and not self._placeholder_tables:
            return
        pending, self._pending = self._pending, []
        trace_id, span_id = current_trace_ids()
        if trace_id and pending:
            # The control-plane events of these changes (written by mutation_finish, schema/0013) name the
            # traced call that made them; one statement more, and only when the call is traced.
            await self.conn.execute(
                "SELECT set_config('modelplane.trace_id', $1, true),"
                " set_config('modelplane.span_id', $2, true)",
                trace_id,
                span_id,
            )
        revision = await self.conn.fetchval(
            "SELECT mutation_finish($1, $2, $3, $4, $5, $6, $7, $8, $9::text[]::jsonb[], $10, $11, $12, $13)",
            self._revision,
            self.write.actor,
            self.write.method,
            self.write.request_id,
            self._written,
            [c.resource_type for c in pending],
            [c.resource for c in pending],
            [c.kind for c in pending],
            [c.snapshot for c in pending],
            remember,
            self._response,
            self._placeholder,
            self._placeholder_tables,
        )
        self._written += len(pending)
        if revision is not None:
            self._revision = int(revision)

    async def begin(self) -> None:
        """Opens the transaction and claims the request id, in one round trip.

        The claim's INSERT waits on a concurrent first call's uncommitted row, so of several concurrent
        calls with one id exactly one runs; the others find its row once it commits (or claim it themselves
        if it rolled back) and `replay` returns its result. The values go into the text of the statement (one
        round trip takes no parameters) as hexadecimal, so no value can end its literal.
        """
        write = self.write
        if not write.request_id:
            await self.conn.execute("BEGIN")
            return
        try:
            await self.conn.execute(
                "BEGIN; INSERT INTO request_ids (method, request_id, fingerprint) VALUES ("
                f"convert_from('\\x{write.method.encode().hex()}'::bytea, 'UTF8'),"
                f" convert_from('\\x{write.request_id.encode().hex()}'::bytea, 'UTF8'),"
                f" '\\x{write.fingerprint.hex()}'::bytea)"
            )
        except asyncpg.UniqueViolationError:
            # A first call with this id has committed: read its result in a transaction of this call's own.
            await self.conn.execute("ROLLBACK; BEGIN")
        else:
            self._claimed = True

    async def replay(self) -> Replayed | None:
        """The first call's stored result when this call repeats a request id (`begin` claimed it, else).

        A repeat whose request differs from the first call's is refused: INVALID_ARGUMENT on request_id.
        """
        if not self.write.request_id or self._claimed:
            return None
        row = await self.conn.fetchrow(
            "SELECT fingerprint, response FROM request_ids WHERE method = $1 AND request_id = $2",
            self.write.method,
            self.write.request_id,
        )
        assert row is not None, "a request id row is never deleted while its key is claimed"
        if bytes(row["fingerprint"]) != self.write.fingerprint:
            raise request_id_reused()
        return Replayed(None if row["response"] is None else json.loads(row["response"]))

    async def remember(self, result: Any) -> None:
        """Keeps the JSON form of the result for repeats of this request id (stored when the block ends)."""
        if self.write.request_id:
            self._response = json.dumps(result)


def request_id_reused() -> InvalidArgument:
    """The error of a request id sent again with a different request."""
    return InvalidArgument.field(
        "request_id",
        "was already used for a different request; send a new request id for a new request",
        reason=ErrorReason.ERROR_REASON_REQUEST_ID_REUSED,
    )


@asynccontextmanager
async def mutation(database: Database, write: WriteRequest) -> AsyncIterator[Mutation]:
    """Opens a write transaction; it commits when the block ends and rolls back on any error.

    After COMMIT the block ends once the write's revision is published (bounded by PUBLISH_WAIT): a watch or
    a read that starts after the call returned sees it. The connection goes back to the pool first.
    """
    # connection() turns a lost database into StorageUnavailable, here as around any borrowed connection.
    async with database.connection() as conn:
        m = Mutation(conn, write)
        try:
            await m.begin()
            yield m
            await m.finish()
            await conn.execute("COMMIT")
        except Exception:
            await _roll_back(conn)
            raise
    if m.taken_revision is not None:
        await publisher_for(database).committed(m.taken_revision)


async def _roll_back(conn: Connection) -> None:
    """Ends the transaction of a write that failed (a refusal is an error raised in the block), so that the
    connection goes back to the pool clean. The pool's reset would roll it back too, but says so each time as
    an asyncio ERROR, one for every refused write. A connection that was cancelled mid-statement, lost or
    terminated is left to the pool, which closes it."""
    if conn.is_closed() or not conn.is_in_transaction():
        return
    with contextlib.suppress(Exception):
        await conn.execute("ROLLBACK")
