"""How a capability's service runs one write: at most once per request id, with etags for compare-and-set.

Every mutating use case of the registry, the guardrails monitor and the deployment manager goes through
`write_once`, whose transaction's rules (revision, change rows, audit row, request id) live in
`store.mutations`, or, for the hottest writes, through `write_in_one_statement`: one SQL function that keeps
the same rules in one round trip (schema/0014).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from modelplane.client.trace_context import current_trace_ids
from modelplane.server import field_rules
from modelplane.server.errors import Aborted, ModelplaneError
from modelplane.server.store.mutations import Mutation, WriteRequest, mutation, request_id_reused
from modelplane.server.store.pool import Connection, Database
from modelplane.server.store.publish import publisher_for
from modelplane.server.store.snapshots import from_json, to_json
from modelplane.v1.error_reason_pb2 import ErrorReason

T = TypeVar("T")


def new_etag() -> str:
    """A fresh etag for a resource's new state (opaque to clients; compared, never parsed)."""
    return uuid.uuid4().hex[:16]


def etag_mismatch(resource: str, current: str) -> Aborted:
    """The error of a compare-and-set whose expected etag is no longer the resource's."""
    return Aborted(
        f"{resource} was changed by someone else (its etag is now {current!r}); read it again and retry",
        reason=ErrorReason.ERROR_REASON_ETAG_MISMATCH,
        metadata={"resource": resource, "current_etag": current},
    )


def _ignore(revision: int) -> None:
    return None


async def write_once(
    db: Database,
    write: WriteRequest,
    body: Callable[[Mutation], Awaitable[T]],
    *,
    result_type: type[Any] | None,
    encode: Callable[[Any], Any] = to_json,
    decode: Callable[[Any], Any] | None = None,
    committed: Callable[[int], None] = _ignore,
) -> T:
    """Runs `body` in one write transaction, at most once per request id.

    A repeated request id returns the first call's result, decoded from what was stored (as `result_type`
    by default, or by `decode`); `committed` then hears of the revision the write took, so read caches can
    wait for it. A body that returns None stores None, and its repeats return None.
    """
    field_rules.check_request_id(write.request_id)
    async with mutation(db, write) as m:
        replayed = await m.replay()
        if replayed is not None:
            if replayed.result is None:
                return None  # type: ignore[return-value]
            if decode is not None:
                return decode(replayed.result)  # type: ignore[no-any-return]
            assert result_type is not None, "a write that stores a result says how to read it back"
            return from_json(result_type, replayed.result)  # type: ignore[no-any-return]
        result = await body(m)
        await m.remember(None if result is None else encode(result))
    if m.taken_revision is not None:
        committed(m.taken_revision)
    return result


# The SQLSTATE with which a write's SQL function refuses (schema/0014): its MESSAGE names the refusal, its
# DETAIL carries a value. Class "MP" is no SQL standard's.
REFUSED = "MP001"

# Turns a refusal's name and detail into the RPC's error.
Refusals = Callable[[str, str], ModelplaneError]


def refusal(exc: asyncpg.PostgresError) -> tuple[str, str] | None:
    """The name and detail of a write function's refusal; None for any other database error."""
    if exc.sqlstate != REFUSED:
        return None
    return str(getattr(exc, "message", "") or ""), str(getattr(exc, "detail", "") or "")


@dataclass(frozen=True)
class Outcome:
    """What a write's SQL function returned: its result's JSON form, and the revision it took (None when it
    repeated a request id's first call, whose result this is)."""

    result: Any
    revision: int | None


async def call_write_function(
    conn: Connection, write: WriteRequest, function: str, args: Sequence[object], refused: Refusals
) -> Outcome:
    """Calls the SQL function `function` (a name from the server's code) with the write's actor, method,
    request id, fingerprint, trace id and span id, then `args`: {"revision": r, "result": json}, or
    {"replayed": json} for a repeated request id. A refusal is raised as `refused` makes it."""
    trace_id, span_id = current_trace_ids()
    placeholders = ", ".join(f"${i}" for i in range(1, 7 + len(args)))
    try:
        text = await conn.fetchval(
            f"SELECT {function}({placeholders})",
            write.actor,
            write.method,
            write.request_id,
            write.fingerprint,
            trace_id or "",
            span_id or "",
            *args,
        )
    except asyncpg.PostgresError as exc:
        refused_with = refusal(exc)
        if refused_with is None:
            raise
        name, detail = refused_with
        if name == "request_id_reused":
            raise request_id_reused() from None
        raise refused(name, detail) from None
    outcome = json.loads(text)
    if "replayed" in outcome:
        return Outcome(outcome["replayed"], None)
    return Outcome(outcome["result"], int(outcome["revision"]))


async def write_in_one_statement(
    db: Database,
    write: WriteRequest,
    function: str,
    args: Sequence[object],
    *,
    decode: Callable[[Any], T],
    refused: Refusals,
    committed: Callable[[int], None] = _ignore,
) -> T:
    """Runs a write as one call of its SQL function (see `call_write_function`) in the statement's own
    transaction: one round trip to Postgres, with the guarantees of `write_once`.

    Once the write has committed, it returns when its revision is published, as `write_once` does, and
    `committed` hears of the revision; `decode` reads the result (the first call's, for a repeated request
    id).
    """
    field_rules.check_request_id(write.request_id)
    async with db.connection() as conn:
        outcome = await call_write_function(conn, write, function, args, refused)
    if outcome.revision is not None:
        await publisher_for(db).committed(outcome.revision)
        committed(outcome.revision)
    return decode(outcome.result)
