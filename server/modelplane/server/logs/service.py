"""The log collector's rules: batch checks, cost frozen at event time, bounded streaming ingestion,
queries, tail and aggregates."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelplane.pricing import Prices, TokenUsage, cost_micros
from modelplane.server.errors import FieldViolation, InvalidArgument, OutOfRange
from modelplane.server.field_rules import Violations
from modelplane.server.filters import (
    CompiledFilter,
    FilterSchema,
    compile_filter,
    enum_field,
    integer_field,
    map_field,
    text_field,
    timestamp_field,
)
from modelplane.server.logs import aggregates, slot_window, store, validation
from modelplane.server.logs.columns import (
    EVENT_ID,
    ROW_CACHED_INPUT_TOKENS,
    ROW_COST,
    ROW_EVENT_TIME,
    ROW_INPUT_TOKENS,
    ROW_MODEL_VERSION,
    ROW_OUTPUT_TOKENS,
    ROW_REASONING_TOKENS,
    domain_row,
)
from modelplane.server.logs.domain import (
    MAX_BATCH_EVENTS,
    MAX_RESPONSE_BYTES,
    AggregateQuery,
    EventKind,
    Inference,
    IngestionStats,
    LogAck,
    LogBatch,
    LogEvent,
    LogGroup,
    LogLevel,
    Page,
    RowBatch,
    SlotComparison,
    SlotWindowQuery,
    TrafficSlot,
)
from modelplane.server.logs.pipeline import CommitPipeline, End, InOrder, QueuedReader
from modelplane.server.pagination import OrderField, OrderSchema, plan_list
from modelplane.server.store.pg_time import from_pg_micros, pg_micros
from modelplane.server.store.pool import Database
from modelplane.v1.error_reason_pb2 import ErrorReason

# A tail's round: at most this many entries of the commit feed (ingestion transactions), events, and
# bytes of their text. The round is all a tail holds; it reads the next only once gRPC has taken every
# message of this one, so a tail far behind costs the server a round, not its lag. A round is also one
# borrowing of a connection, which a call may hold for 1.5 s at most: some 0.1 s for 2,000 events.
TAIL_FEED_ENTRIES_PER_ROUND = 100
TAIL_EVENTS_PER_ROUND = 2000
TAIL_BYTES_PER_ROUND = 4 * 1024 * 1024
# Events a tail's message carries at most (and MAX_RESPONSE_BYTES of them).
TAIL_EVENTS_PER_MESSAGE = 1000
# Transactions of one stream in flight at once: one COPYing while the one before it commits.
COMMITS_IN_FLIGHT = 2
# GetIngestionStats lists at most this many clients (the most recently active).
MAX_STATS_CLIENTS = 1000

_VERSION_NAME = re.compile(r"models/([^/]+)/versions/([0-9]{1,18})")

LOG_FILTER = FilterSchema(
    [
        timestamp_field("event_time", "event_time"),
        text_field("event_id", "event_id", operators=("=", "!=")),
        text_field("service", "service"),
        text_field("instance", "instance"),
        enum_field("level", "level", {v.name: v.value for v in LogLevel}, prefix="LOG_LEVEL_"),
        enum_field("kind", "kind", {v.name: v.value for v in EventKind}, prefix="LOG_EVENT_KIND_"),
        text_field("model_version", "model_version"),
        text_field("deployment", "deployment"),
        enum_field(
            "traffic_slot",
            "traffic_slot",
            {"STABLE": TrafficSlot.STABLE.value, "CANARY": TrafficSlot.CANARY.value, "UNSPECIFIED": ""},
            prefix="TRAFFIC_SLOT_",
        ),
        text_field("policy", "policy"),
        integer_field("policy_revision", "policy_revision"),
        text_field("trace_id", "trace_id"),
        text_field("request_id", "request_id"),
        text_field("provider", "provider"),
        map_field("attributes", "attributes"),
        text_field("message", "message"),
    ]
)
LOG_ORDER = OrderSchema(
    fields={"event_time": OrderField("event_time", datetime)},
    default="event_time",
    tiebreak=OrderField("event_id", str),
)


@dataclass(frozen=True)
class LogSettings:
    # Days events are kept; whole daily partitions older than this are dropped. 0 keeps everything.
    retention_days: int = 30
    # Days of partitions created ahead of today.
    partition_lead_days: int = 3
    # Batches one StreamLogEvents call holds before it stops reading (gRPC flow control then slows the
    # client); also the most batches committed in one transaction.
    stream_queue_batches: int = 8
    # Seconds between a tail's polls of the commit feed when nothing new arrived.
    tail_poll_interval: float = 0.2


class IngestionObserver(Protocol):
    """Told about every commit (the metrics endpoint's per-client counters)."""

    def observe(self, client_id: str, received: int, stored: store.Stored) -> None: ...


class _Keyed:
    """An event as a keyset row for pagination."""

    def __init__(self, event: LogEvent) -> None:
        self.event = event

    def __getitem__(self, key: str, /) -> Any:
        return getattr(self.event, key)


def _pricing_of(row: Any) -> Prices:
    # cost_micros is the client's pricing arithmetic; the server calls the same function so that a
    # client-side and a server-side price of one call can never differ.
    return Prices(
        currency_code=row["currency_code"],
        input=row["input_price"],
        output=row["output_price"],
        cached_input=row["cached_input_price"],
        reasoning=row["reasoning_price"],
    )


class LogService:
    def __init__(
        self,
        database: Database,
        settings: LogSettings | None = None,
        *,
        observer: IngestionObserver | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = database
        self.settings = settings or LogSettings()
        self._observer = observer
        self._clock = clock
        # A version's prices are immutable, so what was read once is right forever: no invalidation.
        self._prices: dict[tuple[str, int], Prices] = {}

    # -- ingestion ---------------------------------------------------------------------------------------

    def _window(self) -> tuple[datetime, datetime | None]:
        """The server's clock and the start of the retention window (None: everything is kept)."""
        now = self._clock()
        retention = self.settings.retention_days
        return now, (now - timedelta(days=retention) if retention > 0 else None)

    def _checked(self, batch: LogBatch | RowBatch, prefix: str, *, client_required: bool) -> RowBatch:
        """The batch as ingestion rows; InvalidArgument naming every broken rule."""
        if isinstance(batch, RowBatch):
            return self._checked_times(batch, prefix)
        if len(batch.events) > MAX_BATCH_EVENTS:
            raise InvalidArgument.field(
                f"{prefix}.events",
                f"at most {MAX_BATCH_EVENTS} events a batch, got {len(batch.events)}; split the batch",
                reason=ErrorReason.ERROR_REASON_BATCH_TOO_LARGE,
            )
        # What conversion refused first; the rules then meet a refused field's default (an epoch event time,
        # say) too, and Violations names each field once.
        v = Violations()
        v.extend(batch.refused)
        v.extend(validation.check_batch_header(batch, prefix, client_required=client_required))
        now, oldest = self._window()
        events: list[LogEvent] = []
        for i, event in enumerate(batch.events):
            found: list[FieldViolation] = []
            events.append(
                validation.checked_event(event, f"{prefix}.events[{i}]", now=now, oldest=oldest, found=found)
            )
            v.extend(found)
            if len(v.items) >= validation.MAX_REPORTED_VIOLATIONS:
                break
        if v.items:
            raise InvalidArgument(v.items[: validation.MAX_REPORTED_VIOLATIONS])
        unpriced = tuple(
            i for i, e in enumerate(events) if isinstance(e.payload, Inference) and e.payload.cost is None
        )
        return RowBatch(
            client_id=batch.client_id,
            sequence=batch.sequence,
            dropped_since_last=batch.dropped_since_last,
            rows=tuple(domain_row(e) for e in events),
            unpriced=unpriced,
        )

    def _checked_times(self, batch: RowBatch, prefix: str) -> RowBatch:
        """A batch checked on conversion, checked against the time window: the one rule that needs the
        server's clock and settings."""
        now, oldest = self._window()
        times: list[int] = [row[ROW_EVENT_TIME] for row in batch.rows]  # type: ignore[misc]
        if not times or (
            max(times) <= pg_micros(now + validation.MAX_FUTURE_SKEW)
            and (oldest is None or min(times) >= pg_micros(oldest))
        ):
            return batch
        found: list[FieldViolation] = []
        for i, micros in enumerate(times):
            violation = validation.event_time_violation(
                f"{prefix}.events[{i}].event_time", from_pg_micros(micros), now=now, oldest=oldest
            )
            if violation is not None:
                found.append(violation)
                if len(found) >= validation.MAX_REPORTED_VIOLATIONS:
                    break
        raise InvalidArgument(found)

    async def _load_prices(self, batches: Sequence[RowBatch]) -> None:
        """Reads the registry prices of the versions that unpriced events of `batches` name, once each."""
        wanted: set[tuple[str, int]] = set()
        for b in batches:
            for i in b.unpriced:
                match = _VERSION_NAME.fullmatch(str(b.rows[i][ROW_MODEL_VERSION]))
                if match:
                    key = (match.group(1), int(match.group(2)))
                    if key not in self._prices:
                        wanted.add(key)
        if wanted:
            async with self._db.connection() as conn:
                found = await store.version_prices(conn, sorted(wanted))
            for key, row in found.items():
                self._prices[key] = _pricing_of(row)

    def _price_batch(self, b: RowBatch) -> tuple[RowBatch, tuple[int, FieldViolation] | None]:
        """The batch with its unpriced events priced from the loaded prices; or the batch as it was and
        the first row whose price is beyond what a stored cost holds, with the violation naming it."""
        rows = list(b.rows)
        for i in b.unpriced:
            row = rows[i]
            match = _VERSION_NAME.fullmatch(str(row[ROW_MODEL_VERSION]))
            pricing = self._prices.get((match.group(1), int(match.group(2)))) if match else None
            if pricing is None:
                continue
            usage = TokenUsage(
                input_tokens=int(row[ROW_INPUT_TOKENS]),  # type: ignore[call-overload]
                output_tokens=int(row[ROW_OUTPUT_TOKENS]),  # type: ignore[call-overload]
                cached_input_tokens=int(row[ROW_CACHED_INPUT_TOKENS]),  # type: ignore[call-overload]
                reasoning_tokens=int(row[ROW_REASONING_TOKENS]),  # type: ignore[call-overload]
            )
            micros = cost_micros(pricing, usage)
            if micros > validation.MAX_COST_MICROS:
                # "batch" is the prefix of every ingestion path (WriteLogEvents and StreamLogEvents).
                violation = validation.unpriceable_violation(
                    f"batch.events[{i}].inference", str(row[ROW_MODEL_VERSION]), pricing, usage, micros
                )
                return b, (i, violation)
            cost = (micros, pricing.currency_code, True)
            rows[i] = row[:ROW_COST] + cost + row[ROW_COST + 3 :]
        return dataclasses.replace(b, rows=tuple(rows), unpriced=()), None

    async def _priced(self, batches: Sequence[RowBatch]) -> tuple[list[RowBatch], InvalidArgument | None]:
        """Batches whose inference events without a cost carry the registry's price of their tokens.

        A price beyond what a stored cost holds refuses its batch: returned are the batches before it,
        priced, and InvalidArgument naming the event and the batch's sequence (None when all are priced).
        """
        if not any(b.unpriced for b in batches):
            return list(batches), None
        await self._load_prices(batches)
        priced: list[RowBatch] = []
        for b in batches:
            if not b.unpriced:
                priced.append(b)
                continue
            done, refused = self._price_batch(b)
            if refused is not None:
                return priced, InvalidArgument([refused[1]], metadata={"sequence": str(b.sequence)})
            priced.append(done)
        return priced, None

    async def _commit(self, batches: Sequence[RowBatch], order: InOrder | None = None) -> LogAck:
        """Stores priced batches in one transaction (in its stream's order, with `order`)."""
        stored = await store.ingest(self._db, batches, order=order)
        received = sum(len(b.rows) for b in batches)
        if self._observer is not None:
            self._observer.observe(batches[0].client_id, received, stored)
        return LogAck(
            sequence=batches[-1].sequence,
            accepted=stored.accepted,
            duplicates=stored.duplicates,
            batches=len(batches),
        )

    async def write(self, batch: LogBatch | RowBatch) -> LogAck:
        """Stores one batch; returns after COMMIT."""
        priced, refused = await self._priced([self._checked(batch, "batch", client_required=False)])
        if refused is not None:
            raise refused
        return await self._commit(priced)

    async def write_each(self, batch: LogBatch) -> tuple[LogAck, list[tuple[int, FieldViolation]]]:
        """Stores the events of `batch` that follow every rule, in one transaction, and returns after COMMIT
        with the events left out: (their index in the batch, the first rule each broke). For receivers
        whose protocol acknowledges part of a request (OTLP's partial success); same checks, pricing,
        idempotency and acknowledgement as `write`."""
        if len(batch.events) > MAX_BATCH_EVENTS:
            raise InvalidArgument.field(
                "batch.events",
                f"at most {MAX_BATCH_EVENTS} events a batch, got {len(batch.events)}; split the batch",
                reason=ErrorReason.ERROR_REASON_BATCH_TOO_LARGE,
            )
        now, oldest = self._window()
        kept: list[tuple[int, LogEvent]] = []
        left_out: list[tuple[int, FieldViolation]] = []
        for i, event in enumerate(batch.events):
            found: list[FieldViolation] = []
            checked = validation.checked_event(
                event, f"batch.events[{i}]", now=now, oldest=oldest, found=found
            )
            if found:
                left_out.append((i, found[0]))
            else:
                kept.append((i, checked))
        rows = RowBatch(
            client_id=batch.client_id,
            sequence=batch.sequence,
            dropped_since_last=0,
            rows=tuple(domain_row(e) for _, e in kept),
            unpriced=tuple(
                n
                for n, (_, e) in enumerate(kept)
                if isinstance(e.payload, Inference) and e.payload.cost is None
            ),
        )
        await self._load_prices([rows])
        while True:
            rows, refused = self._price_batch(rows)
            if refused is None:
                break
            n, violation = refused
            index = kept.pop(n)[0]
            left_out.append(
                (
                    index,
                    FieldViolation(violation.field.replace(f"[{n}]", f"[{index}]", 1), violation.description),
                )
            )
            rows = RowBatch(
                client_id=rows.client_id,
                sequence=rows.sequence,
                dropped_since_last=0,
                rows=rows.rows[:n] + rows.rows[n + 1 :],
                unpriced=tuple(u - (u > n) for u in rows.unpriced if u != n),
            )
        left_out.sort(key=lambda item: item[0])
        if not rows.rows:
            return LogAck(sequence=batch.sequence, accepted=0, duplicates=0, batches=1), left_out
        return await self._commit([rows]), left_out

    async def stream(self, batches: AsyncIterator[LogBatch | RowBatch]) -> AsyncIterator[LogAck]:
        """Commits batches in arrival order, acknowledging after each commit.

        A QueuedReader holds at most `stream_queue_batches` batches; when it is full it stops pulling
        from gRPC, and HTTP/2 flow control pushes back on the client. Batches that queued up meanwhile
        are committed together in one transaction and one acknowledgement. COMMITS_IN_FLIGHT such
        transactions overlap in a CommitPipeline: one COPYs its rows while the one before it commits
        (the database is otherwise idle through each commit's round trips), and they commit in order.
        A bad batch ends the stream after the batches before it are committed and acknowledged; none
        after it is committed.
        """
        reader = QueuedReader(
            batches, self.settings.stream_queue_batches, name="modelplane-log-stream-reader"
        )
        commits: CommitPipeline[LogAck] = CommitPipeline(COMMITS_IN_FLIGHT, name="modelplane-log-commit")
        client_id: str | None = None
        try:
            while True:
                # Acknowledge what has committed before waiting for more: a client may wait for an
                # acknowledgement before it sends again.
                for ack in commits.take_finished():
                    yield ack
                items = await reader.take(unless=commits.oldest())
                if not items:
                    continue  # the oldest commit ended first: acknowledge it
                ready: list[RowBatch] = []
                failure: Exception | None = None
                finished = False
                for item in items:
                    if isinstance(item, End):
                        finished = True
                        break
                    if isinstance(item, Exception):
                        failure = item
                        break
                    try:
                        ready.append(self._checked_in_stream(item, client_id))
                    except InvalidArgument as exc:
                        failure = exc
                        break
                    client_id = item.client_id
                if ready:
                    priced, refused = await self._priced(ready)
                    if priced:
                        commits.start(functools.partial(self._commit, priced))
                    failure = refused or failure
                # A full pipeline, the end or a bad batch: acknowledge the oldest (at the end, all).
                while commits and (commits.full or failure is not None or finished):
                    yield await commits.take_oldest()
                if failure is not None:
                    raise failure
                if finished:
                    return
        finally:
            await reader.close()
            await commits.close()

    def _checked_in_stream(self, batch: LogBatch | RowBatch, client_id: str | None) -> RowBatch:
        """A stream's batch checked, and of the stream's client; InvalidArgument naming its sequence."""
        v = Violations()
        if client_id is not None and batch.client_id != client_id:
            v.add(
                "batch.client_id", f"changed from {client_id!r} within one stream; open a stream per client"
            )
        checked = v.collect(lambda: self._checked(batch, "batch", client_required=True), None)
        v.raise_if_any(metadata={"sequence": str(batch.sequence)})
        assert checked is not None, "raise_if_any raised when the batch was refused"
        return checked

    # -- reading -----------------------------------------------------------------------------------------

    async def query(
        self, *, filter_text: str, order_by: str, page_size: int, page_token: str
    ) -> Page[LogEvent]:
        """One page of events; its token_after ends it early, for a response that must be smaller."""
        plan = plan_list(
            filter_text=filter_text,
            filter_schema=LOG_FILTER,
            order_by=order_by or "event_time desc",
            order_schema=LOG_ORDER,
            page_size=page_size,
            page_token=page_token,
            scope_parts=("QueryLogEvents",),
        )
        async with self._db.connection() as conn:
            rows = await store.query(
                conn, where=plan.where, params=plan.params, order_sql=plan.order_sql, limit=plan.limit
            )
        kept, token = plan.page([_Keyed(store.event_of(r)) for r in rows])
        return Page(tuple(k.event for k in kept), token, lambda i: plan.next_page_token(kept[i]))

    async def tail(self, filter_text: str) -> AsyncIterator[tuple[LogEvent, ...]]:
        """Events matching the filter as their transactions commit, from now on, in commit order (within
        a transaction by event time and id), each exactly once; never ends by itself.

        Each round reads a bounded slice of the feed (TAIL_*_PER_ROUND) and goes on from the exact
        event where the round before it stopped, so a transaction of any size is split across rounds.
        The caller asks for the next slice only after it handed this one on, which is what keeps a
        slow reader's server side at one round of memory.
        """
        compiled = compile_filter(filter_text, LOG_FILTER)
        position = await self.feed_position()
        while True:
            read = await self._read_feed(position, compiled)
            moved, position = read.position != position, read.position
            for start in range(0, len(read.events), TAIL_EVENTS_PER_MESSAGE):
                yield tuple(read.events[start : start + TAIL_EVENTS_PER_MESSAGE])
            if not moved:
                await asyncio.sleep(self.settings.tail_poll_interval)

    async def feed_position(self) -> store.TailPosition:
        """The commit feed's position now: after every ingestion transaction committed so far."""
        async with self._db.connection() as conn:
            return await store.tail_position(conn)

    async def read_feed(self, position: store.TailPosition, filter_text: str = "") -> store.TailRead:
        """One bounded round of the events matching the filter committed after `position` (a tail's
        round, see `tail`), and the position after them. A position older than what the feed keeps reads
        from the oldest entry kept: compare it with `feed_start` first."""
        return await self._read_feed(position, compile_filter(filter_text, LOG_FILTER))

    async def feed_start(self) -> int:
        """The number of the oldest entry the commit feed still keeps (store.TAIL_FEED_KEEP of them); a
        position before it has missed the entries dropped since."""
        async with self._db.connection() as conn:
            return await store.tail_feed_start(conn)

    async def _read_feed(self, position: store.TailPosition, compiled: CompiledFilter) -> store.TailRead:
        async with self._db.connection() as conn:
            return await store.tail_after(
                conn,
                position,
                where=compiled.sql,
                params=compiled.params,
                entries=TAIL_FEED_ENTRIES_PER_ROUND,
                events=TAIL_EVENTS_PER_ROUND,
                text_bytes=TAIL_BYTES_PER_ROUND,
            )

    async def aggregate(self, query: AggregateQuery, *, size_of: Callable[[LogGroup], int]) -> list[LogGroup]:
        """The groups of the query; OutOfRange (TOO_MANY_GROUPS) when there are more than MAX_GROUPS or
        their encoding (measured by `size_of`) passes MAX_RESPONSE_BYTES: one response carries them all."""
        v = Violations()
        v.extend(query.refused)
        v.extend(validation.aggregate_violations(query))
        compiled = v.collect(lambda: compile_filter(query.filter_text, LOG_FILTER), None)
        v.raise_if_any()
        assert compiled is not None, "raise_if_any raised when the filter did not compile"
        async with self._db.connection() as conn:
            groups = await aggregates.aggregate(
                conn,
                where=compiled.sql,
                params=compiled.params,
                group_by=query.group_by,
                bucket_seconds=query.bucket_seconds,
                currency_code=query.currency_code,
                limit=aggregates.MAX_GROUPS + 1,
            )
        if len(groups) > aggregates.MAX_GROUPS or sum(map(size_of, groups)) > MAX_RESPONSE_BYTES:
            raise OutOfRange(
                f"the groups do not fit in one response (at most {aggregates.MAX_GROUPS}, and"
                f" {MAX_RESPONSE_BYTES} bytes); narrow the filter's time range, group by fewer keys or"
                " use a wider bucket_width",
                reason=ErrorReason.ERROR_REASON_TOO_MANY_GROUPS,
            )
        return groups

    async def compare_slots(self, query: SlotWindowQuery) -> SlotComparison:
        """A deployment's canary and stable events in a window, measured as the query says; the rollout
        gates' reading (the caller bounds the window)."""
        async with self._db.connection() as conn:
            return await slot_window.compare_slots(conn, query)

    async def ingestion_stats(self, client_id: str) -> tuple[list[IngestionStats], IngestionStats]:
        if client_id and not EVENT_ID.fullmatch(client_id):
            raise InvalidArgument([FieldViolation("client_id", "must be 1 to 128 letters, digits or '._:-'")])
        async with self._db.connection() as conn:
            return await store.ingestion_stats(conn, client_id, MAX_STATS_CLIENTS)
