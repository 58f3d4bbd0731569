"""The watch loop every watch RPC shares: changes from a revision on, in order, with progress marks when idle.

A capability names the resource types (and optionally the one resource) it streams and turns each
change row's JSON snapshot into its own domain value; the rules (etcd's start_revision: inclusive, 0 for
"from now"; OUT_OF_RANGE when a change it asks for was compacted away; no gaps; a progress mark after
`progress_interval` idle seconds) live here once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelplane.server.errors import InvalidArgument, OutOfRange
from modelplane.server.field_rules import Violations
from modelplane.server.store.pool import Connection, Database
from modelplane.server.store.watch import ChangeFeed
from modelplane.v1.error_reason_pb2 import ErrorReason

WATCH_BATCH = 500
END_OF_REVISION = 2**31 - 1


@dataclass(frozen=True)
class ChangeRow:
    """One committed change, its snapshot still in the JSON form its capability wrote."""

    revision: int
    seq: int
    resource_type: str
    resource: str
    kind: str
    snapshot: Any
    change_time: datetime


@dataclass(frozen=True)
class ProgressMark:
    """Every change up to `revision` has been sent."""

    revision: int


async def current_revision(conn: Connection) -> tuple[int, int]:
    """(the latest revision, the revision up to which changes have been compacted away)."""
    row = await conn.fetchrow("SELECT revision, compacted_through FROM revision_counter")
    assert row is not None
    return int(row["revision"]), int(row["compacted_through"])


async def changes_after(
    conn: Connection,
    *,
    revision: int,
    seq: int,
    resource_types: Sequence[str],
    resource: str | None,
    limit: int,
) -> tuple[int, list[ChangeRow]]:
    """The changes after (revision, seq) up to the published revision, and that revision, read in one
    snapshot.

    Every revision up to the published one had committed or rolled back before it was published, so the
    snapshot that sees it sees all of their changes; changes above it that have committed are left for a
    later read, as a smaller revision may still commit. So every change up to the returned revision is
    either in the list or after its last entry, and none is ever found later below it.
    """
    rows = await conn.fetch(
        "WITH cur AS (SELECT revision FROM revision_counter)"
        " SELECT cur.revision AS latest, c.revision, c.seq, c.resource_type, c.resource, c.kind, c.snapshot,"
        " c.change_time FROM cur LEFT JOIN LATERAL ("
        "   SELECT * FROM changes WHERE (revision, seq) > ($1, $2) AND revision <= cur.revision"
        "   AND resource_type = ANY($3) AND ($5::text IS NULL OR resource = $5)"
        "   ORDER BY revision, seq LIMIT $4) c ON true",
        revision,
        seq,
        list(resource_types),
        limit,
        resource,
    )
    latest = int(rows[0]["latest"]) if rows else 0
    changes = [
        ChangeRow(
            revision=int(r["revision"]),
            seq=int(r["seq"]),
            resource_type=r["resource_type"],
            resource=r["resource"],
            kind=r["kind"],
            snapshot=None if r["snapshot"] is None else json.loads(r["snapshot"]),
            change_time=r["change_time"],
        )
        for r in rows
        if r["revision"] is not None
    ]
    return latest, changes


def check_start_revision(start_revision: int, v: Violations | None = None) -> None:
    """A watch's start revision is zero or more; the violation goes into `v` when given (else raised)."""
    if start_revision < 0:
        description = "must be zero (from now) or the first revision to send (1 for every change)"
        if v is None:
            raise InvalidArgument.field("start_revision", description)
        v.add("start_revision", description)


async def watch_changes(
    database: Database,
    feed: ChangeFeed,
    *,
    start_revision: int,
    resource_types: Sequence[str],
    resource: str | None = None,
    progress_interval: float,
) -> AsyncIterator[ChangeRow | ProgressMark]:
    """Every change whose revision is start_revision or later, in revision order (as etcd's start_revision:
    inclusive, so 1 replays everything kept); 0 means from now: the changes after the current revision,
    announced by a progress mark carrying it."""
    check_start_revision(start_revision)
    async with database.connection() as conn:
        latest, compacted = await current_revision(conn)
    if 0 < start_revision <= compacted:
        raise OutOfRange(
            f"changes up to revision {compacted} are no longer kept; read the current state and watch"
            " from the revision after the one it was read at",
            reason=ErrorReason.ERROR_REASON_REVISION_COMPACTED,
            metadata={"compacted_through": str(compacted)},
        )
    # The stream's position: (revision, seq) of the last change sent; END_OF_REVISION: all of it.
    position = (latest if start_revision == 0 else start_revision - 1, END_OF_REVISION)
    clock = asyncio.get_running_loop().time
    if start_revision == 0:
        yield ProgressMark(latest)
    last_sent = clock()
    while True:
        async with database.connection() as conn:
            latest, rows = await changes_after(
                conn,
                revision=position[0],
                seq=position[1],
                resource_types=resource_types,
                resource=resource,
                limit=WATCH_BATCH,
            )
        for row in rows:
            yield row
            position = (row.revision, row.seq)
            last_sent = clock()
        if len(rows) == WATCH_BATCH:
            continue
        # The rows were read in the snapshot that saw `latest`: everything up to it has been sent.
        if latest > position[0]:
            position = (latest, END_OF_REVISION)
        if clock() - last_sent >= progress_interval:
            yield ProgressMark(position[0])
            last_sent = clock()
        await feed.wait_after(position[0], max_wait=max(0.0, progress_interval - (clock() - last_sent)))
