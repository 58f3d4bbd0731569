"""How a capability's service runs one write: at most once per request id, with etags for compare-and-set.

Every mutating use case of the registry, the guardrails monitor and the deployment manager goes through
`write_once`; the transaction's own rules (revision, change rows, audit row, request id) live in
`store.mutations`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from modelplane.server import field_rules
from modelplane.server.errors import Aborted
from modelplane.server.store.mutations import Mutation, WriteRequest, mutation
from modelplane.server.store.pool import Database
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
