"""The log collector's rules: batch checks, cost frozen at event time, bounded streaming ingestion,
queries, tail and aggregates."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelplane.inference.pricing import cost_micros
from modelplane.inference.providers import TokenUsage
from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.filters import (
    FilterSchema,
    compile_filter,
    enum_field,
    integer_field,
    map_field,
    text_field,
    timestamp_field,
)
from modelplane.server.logs import store, validation
from modelplane.server.logs.domain import (
    MAX_BATCH_EVENTS,
    AggregateQuery,
    EventKind,
    Inference,
    IngestionStats,
    LogAck,
    LogBatch,
    LogEvent,
    LogGroup,
    LogLevel,
    Money,
    Page,
    TrafficSlot,
)
from modelplane.server.pagination import OrderField, OrderSchema, plan_list
from modelplane.server.store.pool import Database
from modelplane.v1 import registry_pb2

# Tail reads at most this many committed batches per round, and sends at most this many events a message.
TAIL_BATCHES_PER_ROUND = 100
TAIL_EVENTS_PER_MESSAGE = 1000
# GetIngestionStats lists at most this many clients (the most recently active).
MAX_STATS_CLIENTS = 1000

_VERSION_NAME = re.compile(r"models/([^/]+)/versions/([0-9]{1,18})")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

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


def _pricing_of(row: Any) -> registry_pb2.TokenPricing:
    # cost_micros is the client's pricing arithmetic; the server calls the same function so that a
    # client-side and a server-side price of one call can never differ.
    pricing = registry_pb2.TokenPricing(
        currency_code=row["currency_code"],
        input_micros_per_million=row["input_price"],
        output_micros_per_million=row["output_price"],
    )
    if row["cached_input_price"] is not None:
        pricing.cached_input_micros_per_million = row["cached_input_price"]
    if row["reasoning_price"] is not None:
        pricing.reasoning_micros_per_million = row["reasoning_price"]
    return pricing


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
        self._prices: dict[tuple[str, int], registry_pb2.TokenPricing] = {}

    # -- ingestion ---------------------------------------------------------------------------------------

    def _checked(self, batch: LogBatch, prefix: str, *, client_required: bool) -> LogBatch:
        if len(batch.events) > MAX_BATCH_EVENTS:
            raise InvalidArgument.field(
                f"{prefix}.events",
                f"at most {MAX_BATCH_EVENTS} events a batch, got {len(batch.events)}; split the batch",
                reason="BATCH_TOO_LARGE",
            )
        found = validation.check_batch_header(batch, prefix, client_required=client_required)
        now = self._clock()
        retention = self.settings.retention_days
        oldest = now - timedelta(days=retention) if retention > 0 else None
        events: list[LogEvent] = []
        for i, event in enumerate(batch.events):
            events.append(
                validation.checked_event(event, f"{prefix}.events[{i}]", now=now, oldest=oldest, found=found)
            )
            if len(found) >= validation.MAX_REPORTED_VIOLATIONS:
                break
        if found:
            raise InvalidArgument(found[: validation.MAX_REPORTED_VIOLATIONS])
        return dataclasses.replace(batch, events=tuple(events))

    async def _priced(self, batches: Sequence[LogBatch]) -> list[LogBatch]:
        """Batches whose inference events without a cost carry the registry's price of their tokens."""
        wanted: set[tuple[str, int]] = set()
        for b in batches:
            for e in b.events:
                p = e.payload
                if isinstance(p, Inference) and p.cost is None:
                    match = _VERSION_NAME.fullmatch(e.links.model_version)
                    if match:
                        key = (match.group(1), int(match.group(2)))
                        if key not in self._prices:
                            wanted.add(key)
        if wanted:
            async with self._db.connection() as conn:
                found = await store.version_prices(conn, sorted(wanted))
            for key, row in found.items():
                self._prices[key] = _pricing_of(row)
        priced: list[LogBatch] = []
        for b in batches:
            events = list(b.events)
            for i, e in enumerate(events):
                p = e.payload
                if not isinstance(p, Inference) or p.cost is not None:
                    continue
                match = _VERSION_NAME.fullmatch(e.links.model_version)
                pricing = self._prices.get((match.group(1), int(match.group(2)))) if match else None
                if pricing is None:
                    continue
                usage = TokenUsage(
                    input_tokens=p.input_tokens,
                    output_tokens=p.output_tokens,
                    cached_input_tokens=p.cached_input_tokens,
                    reasoning_tokens=p.reasoning_tokens,
                )
                cost = Money(pricing.currency_code, cost_micros(pricing, usage))
                events[i] = dataclasses.replace(
                    e, payload=dataclasses.replace(p, cost=cost, cost_from_registry=True)
                )
            priced.append(dataclasses.replace(b, events=tuple(events)))
        return priced

    async def _commit(self, batches: Sequence[LogBatch]) -> LogAck:
        priced = await self._priced(batches)
        stored = await store.ingest(self._db, priced)
        received = sum(len(b.events) for b in batches)
        if self._observer is not None:
            self._observer.observe(batches[0].client_id, received, stored)
        return LogAck(
            sequence=batches[-1].sequence,
            accepted=stored.accepted,
            duplicates=stored.duplicates,
            batches=len(batches),
        )

    async def write(self, batch: LogBatch) -> LogAck:
        """Stores one batch; returns after COMMIT."""
        return await self._commit([self._checked(batch, "batch", client_required=False)])

    async def stream(self, batches: AsyncIterator[LogBatch]) -> AsyncIterator[LogAck]:
        """Commits batches in arrival order, acknowledging after each commit.

        A reader task moves batches into a queue of `stream_queue_batches`; when it is full the reader
        waits, stops pulling from gRPC, and HTTP/2 flow control pushes back on the client. Batches
        that queued up meanwhile are committed together in one transaction and one acknowledgement.
        """
        bound = max(1, self.settings.stream_queue_batches)
        queue: asyncio.Queue[LogBatch | Exception | None] = asyncio.Queue(maxsize=bound)

        async def read() -> None:
            try:
                async for item in batches:
                    await queue.put(item)
                await queue.put(None)
            except asyncio.CancelledError:
                raise
            except (
                Exception
            ) as exc:  # handed to the writer, which raises it after committing what came before
                await queue.put(exc)

        reader = asyncio.create_task(read(), name="modelplane-log-stream-reader")
        client_id: str | None = None
        try:
            while True:
                items = [await queue.get()]
                while len(items) < bound and isinstance(items[-1], LogBatch) and not queue.empty():
                    items.append(queue.get_nowait())
                ready: list[LogBatch] = []
                failure: Exception | None = None
                finished = False
                for item in items:
                    if item is None:
                        finished = True
                        break
                    if isinstance(item, Exception):
                        failure = item
                        break
                    try:
                        checked = self._checked(item, "batch", client_required=True)
                        if client_id is not None and item.client_id != client_id:
                            raise InvalidArgument.field(
                                "batch.client_id",
                                f"changed from {client_id!r} within one stream; open a stream per client",
                            )
                    except InvalidArgument as exc:
                        exc.metadata["sequence"] = str(item.sequence)
                        failure = exc
                        break
                    client_id = item.client_id
                    ready.append(checked)
                if ready:
                    yield await self._commit(ready)
                if failure is not None:
                    raise failure
                if finished:
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # -- reading -----------------------------------------------------------------------------------------

    async def query(
        self, *, filter_text: str, order_by: str, page_size: int, page_token: str
    ) -> Page[LogEvent]:
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
        return Page(tuple(k.event for k in kept), token)

    async def tail(self, filter_text: str) -> AsyncIterator[tuple[LogEvent, ...]]:
        """Events matching the filter as their transactions commit, from now on; never ends by itself."""
        compiled = compile_filter(filter_text, LOG_FILTER)
        async with self._db.connection() as conn:
            position = await store.tail_position(conn)
        while True:
            async with self._db.connection() as conn:
                before = position
                position, rows = await store.tail_after(
                    conn, position, where=compiled.sql, params=compiled.params, limit=TAIL_BATCHES_PER_ROUND
                )
            for start in range(0, len(rows), TAIL_EVENTS_PER_MESSAGE):
                yield tuple(store.event_of(r) for r in rows[start : start + TAIL_EVENTS_PER_MESSAGE])
            if position == before:
                await asyncio.sleep(self.settings.tail_poll_interval)

    async def aggregate(self, query: AggregateQuery) -> list[LogGroup]:
        compiled = compile_filter(query.filter_text, LOG_FILTER)
        async with self._db.connection() as conn:
            return await store.aggregate(
                conn,
                where=compiled.sql,
                params=compiled.params,
                group_by=query.group_by,
                bucket_seconds=query.bucket_seconds,
                currency_code=query.currency_code,
            )

    async def ingestion_stats(self, client_id: str) -> tuple[list[IngestionStats], IngestionStats]:
        if client_id and not _CLIENT_ID.fullmatch(client_id):
            raise InvalidArgument([FieldViolation("client_id", "must be 1 to 128 letters, digits or '._:-'")])
        async with self._db.connection() as conn:
            return await store.ingestion_stats(conn, client_id, MAX_STATS_CLIENTS)
