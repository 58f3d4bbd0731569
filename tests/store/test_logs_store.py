"""The log store on real Postgres: idempotent ingestion, per-client counters, flow control, retention,
exact aggregates and control-plane change events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

from modelplane.server.logs import store
from modelplane.server.logs.domain import (
    AggregateQuery,
    ControlPlaneChange,
    Decision,
    EventKind,
    GroupBy,
    Guardrail,
    Inference,
    InferenceStatus,
    Links,
    LogAck,
    LogBatch,
    LogEvent,
    LogLevel,
    Money,
)
from modelplane.server.logs.service import LogService, LogSettings
from modelplane.server.store.mutations import WriteRequest, mutation
from modelplane.server.store.pool import Database

NOW = datetime.now(UTC).replace(microsecond=0)


def inference(
    i: int, *, latency_ms: int = 10, version: str = "models/chat/versions/1", ok: bool = True
) -> LogEvent:
    return LogEvent(
        event_id=f"e-{i}",
        event_time=NOW - timedelta(minutes=1) + timedelta(milliseconds=i),
        service="llm-client",
        level=LogLevel.INFO,
        links=Links(model_version=version),
        payload=Inference(
            provider="local",
            model_version=version,
            input_tokens=100,
            output_tokens=10,
            cached_input_tokens=0,
            reasoning_tokens=0,
            latency_us=latency_ms * 1000,
            cost=Money("USD", 7),
            status=InferenceStatus.OK if ok else InferenceStatus.ERROR,
        ),
    )


def batch(sequence: int, events: list[LogEvent], *, client: str = "c1", dropped: int = 0) -> LogBatch:
    return LogBatch(client_id=client, sequence=sequence, dropped_since_last=dropped, events=tuple(events))


async def count(
    database: Database, sql: str = "SELECT count(*) FROM log_events WHERE kind <> 'control_plane_change'"
) -> int:
    async with database.connection() as conn:
        return int(await conn.fetchval(sql))


async def test_a_resent_batch_is_stored_once_and_counted_as_duplicates(database: Database) -> None:
    service = LogService(database)
    events = [inference(i) for i in range(50)]
    first = await service.write(batch(1, events))
    again = await service.write(batch(1, events))
    assert (first.accepted, first.duplicates) == (50, 0)
    assert (again.accepted, again.duplicates) == (0, 50)
    assert await count(database) == 50
    clients, total = await service.ingestion_stats("c1")
    assert [(c.received, c.accepted, c.duplicates, c.batches) for c in clients] == [(100, 50, 50, 2)]
    assert total.accepted == 50


async def test_drops_and_sequence_gaps_are_counted_once_per_batch(database: Database) -> None:
    service = LogService(database)
    await service.write(batch(1, [inference(1)], dropped=3))
    # Batches 2 and 3 never arrived: two gaps. Batch 4 reports 5 drops.
    await service.write(batch(4, [inference(2)], dropped=5))
    # A resend of batch 4: neither its drops nor a gap count again.
    await service.write(batch(4, [inference(2)], dropped=5))
    await service.write(batch(5, [], dropped=1))
    (stats,), total = await service.ingestion_stats("c1")
    assert (stats.dropped, stats.sequence_gaps, stats.last_sequence) == (9, 2, 5)
    assert (stats.accepted, stats.duplicates) == (2, 1)
    assert total.dropped == 9


async def test_stream_reads_only_as_fast_as_it_commits(database: Database) -> None:
    """While commits are blocked, the stream stops pulling batches after its bounded queue is full."""
    service = LogService(database, LogSettings(stream_queue_batches=2))
    pulled = 0

    async def source() -> AsyncIterator[LogBatch]:
        nonlocal pulled
        for sequence in range(1, 101):
            pulled += 1
            yield batch(sequence, [inference(sequence)])

    acks: list[LogAck] = []

    async def consume() -> None:
        async for ack in service.stream(source()):
            acks.append(ack)

    async with database.connection() as blocker:
        # Every ingestion ends by taking this row's lock: holding it keeps each commit waiting.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT number FROM log_tail_counter FOR UPDATE")
        task = asyncio.create_task(consume())
        for _ in range(1000):
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        # Give a reader that ignored the bound time to run ahead; it must not.
        await asyncio.sleep(0.2)
        # One group in its commit (at most the queue's size), the queue full, one batch in the reader's hand.
        assert pulled <= 2 + 2 + 1
        assert acks == []
        await tx.rollback()
    await task
    assert pulled == 100
    assert acks[-1].sequence == 100
    assert sum(a.accepted for a in acks) == 100
    assert sum(a.batches for a in acks) == 100


async def test_cost_is_priced_from_the_registry_when_absent(database: Database) -> None:
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO models (id, provider, create_time, update_time, etag)"
            " VALUES ('priced', 'local', now(), now(), 'e')"
        )
        await conn.execute(
            "INSERT INTO model_versions (model_id, version_id, source_uri, context_window, max_output_tokens,"
            " currency_code, input_price, output_price, cached_input_price, reasoning_price, state,"
            " create_time, update_time, etag)"
            " VALUES ('priced', 1, 's3://x', 1000, 100, 'USD', 3000000, 15000000, 300000, NULL, 'ready',"
            " now(), now(), 'e')"
        )
    service = LogService(database)
    event = LogEvent(
        event_id="priced-1",
        event_time=NOW,
        service="llm-client",
        level=LogLevel.INFO,
        payload=Inference(
            provider="local",
            model_version="models/priced/versions/1",
            input_tokens=1000,
            output_tokens=200,
            cached_input_tokens=400,
            reasoning_tokens=50,
            latency_us=None,
            cost=None,
            status=InferenceStatus.OK,
        ),
    )
    await service.write(batch(0, [event], client=""))
    page = await service.query(filter_text='event_id = "priced-1"', order_by="", page_size=0, page_token="")
    (stored,) = page.items
    assert isinstance(stored.payload, Inference)
    # 600 input at 3 USD/M + 400 cached at 0.3 + 150 output at 15 + 50 reasoning at 15 (output price).
    assert stored.payload.cost == Money(
        "USD", (600 * 3_000_000 + 400 * 300_000 + 200 * 15_000_000 + 500_000) // 1_000_000
    )
    assert stored.payload.cost_from_registry
    assert stored.links.model_version == "models/priced/versions/1"


async def test_aggregates_are_exact_including_nearest_rank_percentiles(database: Database) -> None:
    service = LogService(database)
    # Latencies 1..100 ms on version 1, four errors; 10 ms constant on version 2.
    events = [inference(i, latency_ms=i, ok=i % 25 != 0) for i in range(1, 101)]
    events += [inference(1000 + i, version="models/chat/versions/2") for i in range(3)]
    events += [
        LogEvent(
            event_id=f"g-{i}",
            event_time=NOW,
            service="storyteller",
            level=LogLevel.INFO,
            payload=Guardrail("policies/kids", 2, Decision.BLOCK if i < 1 else Decision.ALLOW, i, None),
        )
        for i in range(4)
    ]
    await service.write(batch(1, events))
    groups = await service.aggregate(AggregateQuery("kind = INFERENCE", (GroupBy.MODEL_VERSION,), 0, "USD"))
    by_version = {g.model_version: g for g in groups}
    v1 = by_version["models/chat/versions/1"]
    assert (v1.count, v1.error_count, v1.latency_count) == (100, 4, 100)
    assert (v1.latency_p50_us, v1.latency_p95_us, v1.latency_p99_us) == (50_000, 95_000, 99_000)
    assert v1.error_rate == 0.04
    assert (v1.input_tokens, v1.output_tokens, v1.cost) == (10_000, 1_000, Money("USD", 700))
    v2 = by_version["models/chat/versions/2"]
    assert (v2.count, v2.latency_p50_us, v2.latency_p99_us) == (3, 10_000, 10_000)
    (checks,) = await service.aggregate(AggregateQuery("kind = GUARDRAIL", (GroupBy.POLICY,), 0, "USD"))
    assert (checks.policy, checks.guardrail_checks, checks.guardrail_blocks) == ("policies/kids", 4, 1)
    assert checks.guardrail_block_rate == 0.25
    assert checks.latency_p50_us is None
    buckets = await service.aggregate(
        AggregateQuery("kind = INFERENCE", (GroupBy.KIND, GroupBy.TIME_BUCKET), 86_400, "USD")
    )
    assert sum(b.count for b in buckets) == 103
    assert {b.kind for b in buckets} == {EventKind.INFERENCE}


async def test_retention_drops_only_whole_expired_partitions(database: Database) -> None:
    today = NOW.date()
    days = [today - timedelta(days=d) for d in (5, 4, 3, 2)]
    await store.ensure_partitions(database, days)
    service = LogService(database, LogSettings(retention_days=0))
    events = [
        LogEvent(
            event_id=f"old-{d}",
            event_time=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
            service="svc",
            level=LogLevel.INFO,
        )
        for d, day in enumerate(days)
    ]
    await service.write(batch(0, events, client=""))
    # The cutoff falls inside the day 3 days ago: that partition still holds younger rows, so it stays.
    now = datetime(today.year, today.month, today.day, 6, tzinfo=UTC)
    report = await store.maintain(database, now=now, retention_days=3, lead_days=2)
    assert report is not None
    assert sorted(report.dropped) == sorted([today - timedelta(days=5), today - timedelta(days=4)])
    remaining = set(await _partition_days(database))
    assert today - timedelta(days=3) in remaining
    assert {today + timedelta(days=d) for d in range(0, 3)} <= remaining
    left = await count(database, "SELECT count(*) FROM log_events WHERE event_id LIKE 'old-%'")
    assert left == 2


async def _partition_days(database: Database) -> list[date]:
    async with database.connection() as conn:
        return await store.partition_days(conn)


async def test_maintenance_runs_on_one_replica_at_a_time(database: Database) -> None:
    async with database.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", store.MAINTENANCE_LOCK_KEY)
        assert await store.maintain(database, now=NOW, retention_days=1, lead_days=1) is None
    assert await store.maintain(database, now=NOW, retention_days=1, lead_days=1) is not None


async def test_late_events_get_their_partition_on_demand(database: Database) -> None:
    service = LogService(database, LogSettings(retention_days=0))
    long_ago = datetime(2001, 2, 3, 4, 5, tzinfo=UTC)
    event = LogEvent(event_id="late", event_time=long_ago, service="svc", level=LogLevel.WARNING)
    ack = await service.write(batch(0, [event], client=""))
    assert ack.accepted == 1
    assert date(2001, 2, 3) in await _partition_days(database)


async def test_every_control_plane_change_is_a_log_event_in_the_same_transaction(database: Database) -> None:
    async with mutation(database, WriteRequest(actor="alice", method="SetAlias")) as m:
        revision = await m.record(
            resource_type="model_version", resource="models/chat/versions/3", kind="updated", snapshot={}
        )
    try:
        async with mutation(database, WriteRequest(actor="bob", method="SetAlias")) as m:
            await m.record(
                resource_type="policy", resource="policies/rolled-back", kind="created", snapshot={}
            )
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    page = await LogService(database).query(
        filter_text="kind = CONTROL_PLANE_CHANGE", order_by="", page_size=0, page_token=""
    )
    (event,) = page.items
    assert event.event_id == f"revision-{revision}-0"
    assert event.service == "modelplane"
    assert event.links.model_version == "models/chat/versions/3"
    assert event.kind is EventKind.CONTROL_PLANE_CHANGE
    change = event.payload
    assert isinstance(change, ControlPlaneChange)
    assert (change.resource, change.action, change.actor, change.revision) == (
        "models/chat/versions/3",
        "updated",
        "alice",
        revision,
    )
