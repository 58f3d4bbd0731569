"""SQL of the log collector: idempotent batch ingestion, partitions, retention, queries and tail.

Ingestion COPYs a group of batches straight into the partitioned `log_events`, on a connection of the
bulk pool (rows carry their event time in Postgres's form, store/pg_time.py). When one of the rows is
stored already (a resend), the transaction runs again through a per-connection staging table and one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING`: a resent event (same event_time and event_id) is
skipped, so the difference between rows staged and rows inserted is the number of duplicates. The
per-client counters and the tail feed's entry are written in the same transaction, so what a client is
told after COMMIT is exactly what is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from modelplane.server.errors import StorageUnavailable
from modelplane.server.logs.columns import EVENT_COLUMNS, ROW_EVENT_TIME
from modelplane.server.logs.domain import (
    ControlPlaneChange,
    Decision,
    EventKind,
    Guardrail,
    Inference,
    InferenceStatus,
    IngestionStats,
    Links,
    LogEvent,
    LogLevel,
    Money,
    Routing,
    RoutingOutcome,
    Row,
    RowBatch,
    Severity,
    TrafficSlot,
)
from modelplane.server.logs.pipeline import InOrder
from modelplane.server.store.pg_time import pg_utc_day
from modelplane.server.store.pool import CONNECTION_ERRORS, Connection, Database

# Serialises maintenance across replicas (a transaction-level try-lock: one replica works, the rest skip).
MAINTENANCE_LOCK_KEY = 0x6D706C6F6773  # "mplogs"
PARTITION_PREFIX = "log_events_p"
_PARTITION_NAME = re.compile(r"log_events_p(\d{8})")
# Tail feed entries are needed only by tails running now; a day is a generous margin.
TAIL_FEED_KEEP = timedelta(days=1)

# Columns written by ingestion, in COPY order; ingest_time and ingest_batch come from their defaults
# (now() and the session's currval of log_ingest_batches), or from the staging path's INSERT.
_COLUMNS = EVENT_COLUMNS
_COLUMN_LIST = ", ".join(_COLUMNS)
SELECT_COLUMNS = f"{_COLUMN_LIST}, ingest_time"

# Backend pids whose session already has the staging table. A pid reused by a new session is caught
# by the UndefinedTableError retry in `ingest`.
_staged_sessions: set[int] = set()


def partition_name(day: date) -> str:
    """The partition of a UTC day, named as log_ensure_partition names it (the year always in four
    digits, which strftime's %Y does not promise before 1000)."""
    return f"{PARTITION_PREFIX}{day.year:04d}{day.month:02d}{day.day:02d}"


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def event_of(row: Any) -> LogEvent:
    """The domain event of a selected row (selected with SELECT_COLUMNS)."""
    kind = EventKind(row["kind"])
    payload: Inference | Routing | Guardrail | ControlPlaneChange | None = None
    if kind is EventKind.INFERENCE:
        cost = None
        if row["cost_micros"] is not None:
            cost = Money(row["cost_currency"], int(row["cost_micros"]))
        payload = Inference(
            provider=row["provider"] or "",
            model_version=row["model_version"],
            input_tokens=int(row["input_tokens"] or 0),
            output_tokens=int(row["output_tokens"] or 0),
            cached_input_tokens=int(row["cached_input_tokens"] or 0),
            reasoning_tokens=int(row["reasoning_tokens"] or 0),
            latency_us=row["latency_us"],
            cost=cost,
            status=InferenceStatus(row["status"]),
            cost_from_registry=bool(row["cost_from_registry"]),
        )
    elif kind is EventKind.ROUTING:
        payload = Routing(
            deployment=row["deployment"],
            rollout=row["rollout"] or "",
            slot=TrafficSlot(row["traffic_slot"]),
            endpoint=row["endpoint"] or "",
            outcome=RoutingOutcome(row["status"]),
            latency_us=row["latency_us"],
        )
    elif kind is EventKind.GUARDRAIL:
        highest = row["highest_severity"] or ""
        payload = Guardrail(
            policy=row["policy"],
            revision=int(row["policy_revision"]),
            decision=Decision[row["decision"].upper()],
            violation_count=int(row["violation_count"] or 0),
            highest_severity=Severity[highest.upper()] if highest else None,
        )
    elif kind is EventKind.CONTROL_PLANE_CHANGE:
        payload = ControlPlaneChange(
            resource=row["change_resource"] or "",
            action=row["change_action"] or "",
            actor=row["change_actor"] or "",
            revision=int(row["change_revision"] or 0),
        )
    attributes = row["attributes"]
    return LogEvent(
        event_id=row["event_id"],
        event_time=row["event_time"],
        service=row["service"],
        level=LogLevel(row["level"]),
        instance=row["instance"],
        message=row["message"],
        links=Links(
            model_version=row["model_version"],
            deployment=row["deployment"],
            traffic_slot=TrafficSlot(row["traffic_slot"]),
            policy=row["policy"],
            policy_revision=int(row["policy_revision"]),
            trace_id=row["trace_id"],
            request_id=row["request_id"],
            span_id=row["span_id"],
        ),
        attributes=json.loads(attributes) if isinstance(attributes, str) else dict(attributes or {}),
        payload=payload,
        ingest_time=row["ingest_time"],
    )


# ---------------------------------------------------------------------------------------------------------
# Partitions and retention


async def ensure_partitions(database: Database, days: Iterable[date]) -> None:
    """Creates the daily partitions of `days` that do not exist, in a short transaction of its own.

    Kept out of the ingestion transaction: creating a partition locks the parent table, and holding
    that lock through an ingestion would stall every other writer.
    """
    async with database.transaction() as conn:
        for day in sorted(set(days)):
            await _ensure_partition(conn, day)


async def _ensure_partition(conn: Connection, day: date) -> None:
    # As text: asyncpg sends date.min and date.max as -infinity and infinity, and an event may be
    # from 0001-01-01.
    await conn.execute("SELECT log_ensure_partition($1::text::date)", day.isoformat())


async def partition_days(conn: Connection) -> list[date]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'log_events'::regclass"
    )
    days: list[date] = []
    for row in rows:
        match = _PARTITION_NAME.fullmatch(row["relname"])
        if match:
            days.append(datetime.strptime(match.group(1), "%Y%m%d").date())
    return sorted(days)


@dataclass(frozen=True)
class MaintenanceReport:
    created: tuple[date, ...]
    dropped: tuple[date, ...]


async def maintain(
    database: Database, *, now: datetime, retention_days: int, lead_days: int
) -> MaintenanceReport | None:
    """Creates partitions through `lead_days` ahead and drops every partition wholly older than the
    retention window; None when another replica holds the maintenance lock (it does the work)."""
    async with database.transaction() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MAINTENANCE_LOCK_KEY):
            return None
        today = utc_day(now)
        existing = set(await partition_days(conn))
        wanted = [today + timedelta(days=d) for d in range(-1, lead_days + 1)]
        created = tuple(day for day in wanted if day not in existing)
        for day in created:
            await _ensure_partition(conn, day)
        dropped: list[date] = []
        if retention_days > 0:
            cutoff = now - timedelta(days=retention_days)
            for day in sorted(existing):
                # A partition holds [day, day + 1); it goes only when all of it is older than the cutoff.
                end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
                if end <= cutoff:
                    await conn.execute(f'DROP TABLE "{partition_name(day)}"')
                    dropped.append(day)
            await conn.execute("DELETE FROM log_ingestion_clients WHERE last_batch_time < $1", cutoff)
        await conn.execute("DELETE FROM log_tail_batches WHERE commit_time < $1", now - TAIL_FEED_KEEP)
        return MaintenanceReport(created=created, dropped=tuple(dropped))


# ---------------------------------------------------------------------------------------------------------
# Ingestion


@dataclass(frozen=True)
class Stored:
    """What one ingestion transaction did; dropped and gaps as counted for the client (resends: 0)."""

    accepted: int
    duplicates: int
    dropped: int = 0
    gaps: int = 0


async def _ensure_staging(conn: Connection) -> None:
    pid = conn.get_server_pid()
    if pid in _staged_sessions:
        return
    # ON COMMIT DELETE ROWS: the staging rows vanish with each transaction, the table stays for the next.
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS log_staging ON COMMIT DELETE ROWS"
        f" AS SELECT {_COLUMN_LIST} FROM log_events WITH NO DATA"
    )
    _staged_sessions.add(pid)


async def _copy_direct(conn: Connection, rows: Sequence[Row]) -> int:
    """COPYs the rows straight into log_events, where each takes the transaction's batch number from
    the column's default (the session's currval); the number stored. Raises UniqueViolationError when
    one of them is stored already, which aborts the transaction."""
    status = await conn.copy_records_to_table("log_events", records=rows, columns=_COLUMNS)
    return int(status.rpartition(" ")[2])


async def _copy_deduplicated(conn: Connection, rows: Sequence[Row], batch_id: int) -> tuple[int, Any, Any]:
    """Stores the rows that are not stored yet; their number and the range of their event times."""
    await conn.copy_records_to_table("log_staging", records=rows, columns=_COLUMNS)
    result = await conn.fetchrow(
        "WITH ins AS ("
        f" INSERT INTO log_events ({_COLUMN_LIST}, ingest_batch)"
        f" SELECT {_COLUMN_LIST}, $1 FROM log_staging"
        " ON CONFLICT DO NOTHING RETURNING event_time)"
        " SELECT count(*) AS n, min(event_time) AS lo, max(event_time) AS hi FROM ins",
        batch_id,
    )
    assert result is not None
    return int(result["n"]), result["lo"], result["hi"]


async def _store(
    conn: Connection, batches: Sequence[RowBatch], *, deduplicate: bool, order: InOrder | None
) -> Stored:
    client_id = batches[0].client_id
    # Also the session's currval, which the direct COPY's rows take as their ingest_batch.
    batch_id = int(await conn.fetchval("SELECT nextval('log_ingest_batches')"))
    rows = [row for batch in batches for row in batch.rows]
    inserted = 0
    lo = hi = None
    if rows:
        if deduplicate:
            inserted, lo, hi = await _copy_deduplicated(conn, rows, batch_id)
        else:
            inserted = await _copy_direct(conn, rows)
            times: list[int] = [row[ROW_EVENT_TIME] for row in rows]  # type: ignore[misc]
            lo, hi = min(times), max(times)
    duplicates = len(rows) - inserted
    if order is not None:
        order.rows_in.set()
        await order.may_commit()
    gaps = dropped = 0
    if client_id:
        last = int(
            await conn.fetchval(
                "SELECT last_sequence FROM log_ingestion_clients WHERE client_id = $1 FOR UPDATE", client_id
            )
            or 0
        )
        for batch in batches:
            if batch.sequence == 0:
                dropped += batch.dropped_since_last
            elif batch.sequence > last:
                gaps += batch.sequence - last - 1
                dropped += batch.dropped_since_last
                last = batch.sequence
            # else: a resend; its drops were counted when it first arrived.
        await conn.execute(
            "INSERT INTO log_ingestion_clients AS c (client_id, received, accepted, duplicates, dropped,"
            " sequence_gaps, batches, last_sequence, last_batch_time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())"
            " ON CONFLICT (client_id) DO UPDATE SET received = c.received + EXCLUDED.received,"
            " accepted = c.accepted + EXCLUDED.accepted, duplicates = c.duplicates + EXCLUDED.duplicates,"
            " dropped = c.dropped + EXCLUDED.dropped,"
            " sequence_gaps = c.sequence_gaps + EXCLUDED.sequence_gaps,"
            " batches = c.batches + EXCLUDED.batches,"
            " last_sequence = greatest(c.last_sequence, EXCLUDED.last_sequence), last_batch_time = now()",
            client_id,
            len(rows),
            inserted,
            duplicates,
            dropped,
            gaps,
            len(batches),
            last,
        )
    if inserted:
        # Last, so the tail counter's row lock is held only through COMMIT.
        await conn.execute("SELECT log_publish_batch($1, $2, $3)", batch_id, lo, hi)
    return Stored(accepted=inserted, duplicates=duplicates, dropped=dropped, gaps=gaps)


async def ingest(database: Database, batches: Sequence[RowBatch], *, order: InOrder | None = None) -> Stored:
    """Stores the rows of `batches` (all of one client) in one transaction; returns after COMMIT.

    The rows are first COPYed straight into log_events, the cheapest way in; resends are rare, so
    only when that COPY meets an event stored already does the transaction run again through the
    staging table, which skips what is stored. A missing daily partition (an event from a day not
    created yet) is created in its own transaction and the ingestion runs again; nothing of a failed
    attempt was kept.

    With `order`, this ingestion overlaps the one before it in its stream and commits after it (see
    pipeline.InOrder, whose caller finishes it); PredecessorFailed, with nothing kept, when that one did
    not commit.
    """
    deduplicate = False
    for attempt in range(4):
        if order is not None:
            await order.rows_may_go_in()
        try:
            async with database.bulk_connection() as conn:
                try:
                    if deduplicate:
                        await _ensure_staging(conn)
                    async with conn.transaction():
                        return await _store(conn, batches, deduplicate=deduplicate, order=order)
                except CONNECTION_ERRORS as exc:
                    raise StorageUnavailable("the database is unavailable; retry shortly") from exc
        except asyncpg.UniqueViolationError:
            if deduplicate:
                raise
            deduplicate = True
        except asyncpg.CheckViolationError:
            # The only check on log_events is partition routing: "no partition of relation found".
            if attempt == 3:
                raise
            await ensure_partitions(
                database,
                (pg_utc_day(row[ROW_EVENT_TIME]) for b in batches for row in b.rows),  # type: ignore[arg-type]
            )
        except asyncpg.UndefinedTableError:
            # A new session reusing a pid we knew: forget it, create the staging table, try again.
            _staged_sessions.clear()
    raise AssertionError("unreachable")


async def version_prices(conn: Connection, versions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """TokenPricing columns of the given (model id, version number) pairs that exist."""
    rows = await conn.fetch(
        "SELECT model_id, version_id, currency_code, input_price, output_price, cached_input_price,"
        " reasoning_price FROM model_versions"
        " WHERE (model_id, version_id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))",
        [m for m, _ in versions],
        [v for _, v in versions],
    )
    return {(r["model_id"], int(r["version_id"])): r for r in rows}


# ---------------------------------------------------------------------------------------------------------
# Reading


async def query(
    conn: Connection, *, where: str, params: Sequence[object], order_sql: str, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {SELECT_COLUMNS} FROM log_events WHERE {where} ORDER BY {order_sql} LIMIT {int(limit)}",
        *params,
    )


@dataclass(frozen=True)
class TailPosition:
    """Where a tail is in the commit feed (log_tail_batches): it has sent every event of the entries
    numbered up to `number`, except that of entry `number` itself, when `event_time` is set, only the
    events up to (event_time, event_id) in (event_time, event_id) order. Entries are read in their
    number's order, which is commit order, so a position is exact: resuming from it skips and repeats
    nothing, inside one ingestion transaction too."""

    number: int
    event_time: datetime | None = None
    event_id: str = ""


@dataclass(frozen=True)
class TailRead:
    """One round of a tail: the events read, in order, and the position after the last of them."""

    position: TailPosition
    events: list[LogEvent]


async def tail_position(conn: Connection) -> TailPosition:
    """The position of a tail that starts now: after every transaction committed so far."""
    return TailPosition(int(await conn.fetchval("SELECT number FROM log_tail_counter")))


async def tail_feed_start(conn: Connection) -> int:
    """The number of the oldest feed entry kept; the next number to be taken when the feed is empty."""
    oldest = await conn.fetchval("SELECT min(number) FROM log_tail_batches")
    if oldest is not None:
        return int(oldest)
    return int(await conn.fetchval("SELECT number FROM log_tail_counter")) + 1


async def tail_after(
    conn: Connection,
    position: TailPosition,
    *,
    where: str,
    params: Sequence[object],
    entries: int,
    events: int,
    text_bytes: int,
) -> TailRead:
    """The events matching `where` committed after `position`, in commit order and within one
    transaction by (event_time, event_id), and the position after them.

    A round looks at most `entries` feed entries and stops after `events` events or before the bytes of
    their messages and attributes pass `text_bytes` (the rest of an event is a few short, bounded
    fields), whichever comes first, though it always takes one event when there is one. The rows come
    in small steps through a cursor, so no more than that is ever held. An ingestion transaction of
    many events is thus read over several rounds, each going on where the one before it stopped.
    """
    partial = position.event_time is not None
    feed = await conn.fetch(
        "SELECT number, ingest_batch, min_time, max_time FROM log_tail_batches"
        f" WHERE number {'>=' if partial else '>'} $1 ORDER BY number LIMIT $2",
        position.number,
        entries,
    )
    if not feed:
        return TailRead(position, [])
    first = len(params) + 1
    arguments = [*params, *_feed_arrays(feed), position.number, position.event_time, position.event_id]
    # The feed entries in number order, and each entry's events in key order behind it; the LIMIT in
    # the lateral subquery keeps Postgres's sort of a big transaction to a round's worth of its rows (a
    # top-N sort), and the outer sort, incremental on the entry's number, stops at the outer LIMIT.
    feed_sql = (
        f"SELECT * FROM unnest(${first}::bigint[], ${first + 1}::bigint[], ${first + 2}::timestamptz[],"
        f" ${first + 3}::timestamptz[]) AS u (tail_number, tail_batch, tail_min, tail_max)"
        " ORDER BY tail_number"
    )
    events_sql = (
        f"SELECT {SELECT_COLUMNS} FROM log_events WHERE ({where}) AND ingest_batch = f.tail_batch"
        # In the entry a round stopped in, the index starts at the last event's time (greatest() skips
        # the NULL of every other entry), so no round reads again what the ones before it sent.
        f" AND event_time >= greatest(f.tail_min, CASE WHEN f.tail_number = ${first + 4}"
        f" THEN ${first + 5}::timestamptz END) AND event_time <= f.tail_max"
        f" AND (f.tail_number <> ${first + 4} OR ${first + 5}::timestamptz IS NULL"
        f" OR (event_time, event_id) > (${first + 5}, ${first + 6}))"
        f" ORDER BY event_time, event_id LIMIT {int(events)}"
    )
    # Sized outside the subquery: only the rows the LIMIT lets through, not every row its sort looks at.
    size_sql = "octet_length(e.message) + octet_length(e.attributes::text)"
    sql = (
        f"SELECT f.tail_number, {size_sql} AS tail_bytes, e.* FROM ({feed_sql}) AS f"
        f" CROSS JOIN LATERAL ({events_sql}) AS e"
        f" ORDER BY f.tail_number, e.event_time, e.event_id LIMIT {int(events)}"
    )
    found: list[LogEvent] = []
    used = 0
    last: Any = None
    async with conn.transaction(readonly=True):
        async for row in conn.cursor(sql, *arguments, prefetch=_TAIL_PREFETCH):
            size = int(row["tail_bytes"])
            if found and used + size > text_bytes:
                break
            found.append(event_of(row))
            used += size
            last = row
            if len(found) == events:
                break
        else:
            # Every matching event of these entries is read: the position passes all of them.
            return TailRead(TailPosition(int(feed[-1]["number"])), found)
    return TailRead(TailPosition(int(last["tail_number"]), last["event_time"], last["event_id"]), found)


# Rows a tail's cursor fetches per round trip: a step small enough that it never fetches far past where
# its byte budget stops it.
_TAIL_PREFETCH = 200


def _feed_arrays(feed: Sequence[Any]) -> list[list[Any]]:
    return [
        [entry[column] for entry in feed] for column in ("number", "ingest_batch", "min_time", "max_time")
    ]


def _stats(row: Any, client_id: str | None = None) -> IngestionStats:
    return IngestionStats(
        client_id=row["client_id"] if client_id is None else client_id,
        received=int(row["received"] or 0),
        accepted=int(row["accepted"] or 0),
        duplicates=int(row["duplicates"] or 0),
        dropped=int(row["dropped"] or 0),
        sequence_gaps=int(row["sequence_gaps"] or 0),
        batches=int(row["batches"] or 0),
        last_sequence=int(row["last_sequence"] or 0),
        last_batch_time=row["last_batch_time"],
    )


async def ingestion_stats(
    conn: Connection, client_id: str, limit: int
) -> tuple[list[IngestionStats], IngestionStats]:
    rows = await conn.fetch(
        "SELECT * FROM (SELECT * FROM log_ingestion_clients WHERE ($1 = '' OR client_id = $1)"
        " ORDER BY last_batch_time DESC LIMIT $2) AS recent ORDER BY client_id",
        client_id,
        limit,
    )
    total = await conn.fetchrow(
        "SELECT sum(received) AS received, sum(accepted) AS accepted, sum(duplicates) AS duplicates,"
        " sum(dropped) AS dropped, sum(sequence_gaps) AS sequence_gaps, sum(batches) AS batches,"
        " max(last_sequence) AS last_sequence, max(last_batch_time) AS last_batch_time"
        " FROM log_ingestion_clients WHERE ($1 = '' OR client_id = $1)",
        client_id,
    )
    assert total is not None
    return [_stats(r) for r in rows], _stats(total, client_id="")
