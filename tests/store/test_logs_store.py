"""The log store on real Postgres: idempotent ingestion, per-client counters, flow control, retention,
exact aggregates (equal to the plain SQL definition under any collation) and control-plane change events."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from modelplane.server.errors import InvalidArgument, OutOfRange
from modelplane.server.filters import compile_filter
from modelplane.server.logs import aggregates, convert, store
from modelplane.server.logs import rows as logs_rows
from modelplane.server.logs.domain import (
    CONTROL_PLANE_EVENT_ID_PREFIX,
    CONTROL_PLANE_SERVICE,
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
    LogGroup,
    LogLevel,
    Money,
    Payload,
    Routing,
    RoutingOutcome,
    RowBatch,
    Severity,
    TrafficSlot,
)
from modelplane.server.logs.service import COMMITS_IN_FLIGHT, LOG_FILTER, LogService, LogSettings
from modelplane.server.store.migrations import migrate
from modelplane.server.store.mutations import WriteRequest, mutation
from modelplane.server.store.pool import Database
from modelplane.server.store.urls import with_database
from modelplane.v1 import logs_pb2 as pb

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
        # Watched from outside the blocker's transaction, which would see one snapshot of the activity.
        async with database.connection() as watcher:
            for _ in range(1000):
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
        assert waiting, "no ingestion came to wait on the tail counter's lock"
        # Give a reader that ignored the bound time to run ahead; it must not.
        await asyncio.sleep(0.2)
        # The commits in flight (each of at most the queue's size), the queue full, one batch in the
        # reader's hand.
        assert pulled <= COMMITS_IN_FLIGHT * 2 + 2 + 1
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
    page = await service.query(
        filter_text='event_id = "priced-1"',
        order_by="",
        page_size=0,
        page_token="",
    )
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
    groups = await service.aggregate(
        size_of=convert.group_size,
        query=AggregateQuery("kind = INFERENCE", (GroupBy.MODEL_VERSION,), 0, "USD"),
    )
    by_version = {g.model_version: g for g in groups}
    v1 = by_version["models/chat/versions/1"]
    assert (v1.count, v1.error_count, v1.latency_count) == (100, 4, 100)
    assert (v1.latency_p50_us, v1.latency_p95_us, v1.latency_p99_us) == (50_000, 95_000, 99_000)
    assert v1.error_rate == 0.04
    assert (v1.input_tokens, v1.output_tokens, v1.cost) == (10_000, 1_000, Money("USD", 700))
    v2 = by_version["models/chat/versions/2"]
    assert (v2.count, v2.latency_p50_us, v2.latency_p99_us) == (3, 10_000, 10_000)
    (checks,) = await service.aggregate(
        size_of=convert.group_size, query=AggregateQuery("kind = GUARDRAIL", (GroupBy.POLICY,), 0, "USD")
    )
    assert (checks.policy, checks.guardrail_checks, checks.guardrail_blocks) == ("policies/kids", 4, 1)
    assert checks.guardrail_block_rate == 0.25
    assert checks.latency_p50_us is None
    buckets = await service.aggregate(
        size_of=convert.group_size,
        query=AggregateQuery("kind = INFERENCE", (GroupBy.KIND, GroupBy.TIME_BUCKET), 86_400, "USD"),
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


# Instants around which the bulk connections' integer form of a timestamptz could go wrong: the first
# representable microsecond, either side of Postgres's epoch and of the Unix epoch, and the latest time
# the service accepts (a day ahead of its clock).
EDGES_OF_TIME = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    NOW + timedelta(hours=23, microseconds=123_457),
]


async def test_event_times_at_the_edges_are_stored_exactly_by_both_ingestion_paths(
    database: Database,
) -> None:
    service = LogService(database, LogSettings(retention_days=0))
    # The long way: domain events, checked and turned into rows one by one.
    long_way = [
        LogEvent(event_id=f"long-{i}", event_time=moment, service="svc", level=LogLevel.INFO)
        for i, moment in enumerate(EDGES_OF_TIME)
    ]
    assert (await service.write(batch(0, long_way, client=""))).accepted == len(EDGES_OF_TIME)
    # The hot path: protobuf events straight to rows.
    message = pb.LogBatch()
    for i, moment in enumerate(EDGES_OF_TIME):
        event = message.events.add(event_id=f"hot-{i}", service="svc", level=pb.LOG_LEVEL_INFO)
        event.event_time.FromDatetime(moment)
    converted = logs_rows.batch_rows(message, "batch", client_required=False)
    assert isinstance(converted, RowBatch)
    assert (await service.write(converted)).accepted == len(EDGES_OF_TIME)

    page = await service.query(filter_text="", order_by="event_time asc", page_size=100, page_token="")
    stored: dict[str, datetime] = {e.event_id: e.event_time for e in page.items}
    for i, moment in enumerate(EDGES_OF_TIME):
        assert stored[f"long-{i}"] == moment
        assert stored[f"hot-{i}"] == moment
    # Each event went to the partition of its own UTC day.
    async with database.connection() as conn:
        placed = await conn.fetch(
            "SELECT event_id, tableoid::regclass::text AS part FROM log_events WHERE event_id LIKE '%-%'"
        )
    for row in placed:
        moment = EDGES_OF_TIME[int(row["event_id"].rpartition("-")[2])]
        assert row["part"] == store.partition_name(moment.date())


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
        filter_text="kind = CONTROL_PLANE_CHANGE",
        order_by="",
        page_size=0,
        page_token="",
    )
    (event,) = page.items
    # The SQL function writes what the domain reserves for the server (and refuses from clients).
    assert event.event_id == f"{CONTROL_PLANE_EVENT_ID_PREFIX}{revision}-0"
    assert event.service == CONTROL_PLANE_SERVICE
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


# ---------------------------------------------------------------------------------------------------------
# Aggregates against their definition


def _reference(
    where: str, params: Sequence[object], group_by: Sequence[GroupBy], bucket_seconds: int, currency: str
) -> tuple[str, list[object]]:
    """AggregateLogEvents as plainly as SQL can say it: one GROUP BY over the rows, percentile_disc over each
    group's latencies, groups in the order of their keys under the columns' own collation. The service may
    compute it any way it likes, but must give exactly these figures in exactly this order."""
    args: list[object] = [*params, currency]
    keys: list[str] = []
    for group in group_by:
        if group is GroupBy.TIME_BUCKET:
            args.append(timedelta(seconds=bucket_seconds))
            keys.append(f"date_bin(${len(args)}::interval, event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00')")
        else:
            keys.append(group.value)
    names = [f"k{n}" for n in range(len(keys))]
    sql = (
        "SELECT "
        + "".join(f"{key} AS {name}, " for key, name in zip(keys, names, strict=True))
        + "count(*), count(*) FILTER (WHERE is_error), count(latency_us),"
        " percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_us),"
        " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " coalesce(sum(cached_input_tokens), 0), coalesce(sum(reasoning_tokens), 0),"
        f" coalesce(sum(cost_micros) FILTER (WHERE cost_currency = ${len(params) + 1}), 0),"
        " count(*) FILTER (WHERE kind = 'guardrail'),"
        " count(*) FILTER (WHERE kind = 'guardrail' AND decision = 'block')"
        f" FROM log_events WHERE {where}"
        + (f" GROUP BY {', '.join(names)} ORDER BY {', '.join(names)}" if keys else " HAVING count(*) > 0")
    )
    return sql, args


def _figures(group: LogGroup, group_by: Sequence[GroupBy]) -> tuple[object, ...]:
    keys: dict[GroupBy, object] = {
        GroupBy.SERVICE: group.service,
        GroupBy.MODEL_VERSION: group.model_version,
        GroupBy.DEPLOYMENT: group.deployment,
        GroupBy.TRAFFIC_SLOT: group.traffic_slot.value,
        GroupBy.POLICY: group.policy,
        GroupBy.KIND: group.kind.value if group.kind else None,
        GroupBy.TIME_BUCKET: group.bucket_start,
    }
    return (
        *(keys[g] for g in group_by),
        group.count,
        group.error_count,
        group.latency_count,
        group.latency_p50_us,
        group.latency_p95_us,
        group.latency_p99_us,
        group.input_tokens,
        group.output_tokens,
        group.cached_input_tokens,
        group.reasoning_tokens,
        group.cost.micros,
        group.guardrail_checks,
        group.guardrail_blocks,
    )


def _reference_figures(row: Any, group_by: Sequence[GroupBy]) -> tuple[object, ...]:
    values = list(row)
    keys, rest = values[: len(group_by)], values[len(group_by) :]
    pct = rest[3] or [None, None, None]
    return (*keys, *rest[:3], *pct, *(int(v) for v in rest[4:9]), *rest[9:])


# Ids that sort differently under a locale than byte by byte (case, accents, the empty link), and differ
# only in case, which must stay separate groups.
_VERSIONS = [
    "models/chat/versions/1",
    "models/Chat/versions/2",
    "models/äpfel/versions/1",
    "models/b/versions/10",
    "",
]
_DEPLOYMENTS = ["deployments/web", "deployments/Web", "deployments/émile", ""]
_POLICIES = ["policies/kids", "policies/Kids", "policies/zoo", ""]
_SERVICES = ["llm-client", "storyteller", "a", "b-2"]


def _latency(rng: random.Random) -> int | None:
    # NULLs, many ties (whole milliseconds) and values that are all distinct (microseconds).
    return rng.choice([None, rng.randrange(0, 40) * 1000, rng.randrange(10**7)])


def _random_event(rng: random.Random, i: int, start: datetime, span: timedelta) -> LogEvent:
    moment = start + timedelta(microseconds=rng.randrange(int(span / timedelta(microseconds=1))))
    # Control-plane changes are the server's own (written by Mutation.record), never a client's.
    kind = rng.choice([k for k in EventKind if k is not EventKind.CONTROL_PLANE_CHANGE])
    links = Links(
        model_version=rng.choice(_VERSIONS),
        deployment=rng.choice(_DEPLOYMENTS),
        traffic_slot=rng.choice(list(TrafficSlot)),
        policy=rng.choice(_POLICIES),
    )
    payload: Payload = None
    if kind is EventKind.INFERENCE:
        tokens_in, tokens_out = rng.randrange(5000), rng.randrange(2000)
        currency = rng.choice(["USD", "EUR", "JPY"])
        payload = Inference(
            provider="local",
            model_version=links.model_version,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cached_input_tokens=rng.randrange(tokens_in + 1),
            reasoning_tokens=rng.randrange(tokens_out + 1),
            latency_us=_latency(rng),
            # No registry prices here: an event without a cost keeps none.
            cost=rng.choice([None, Money(currency, rng.randrange(10**6))]),
            status=rng.choice(list(InferenceStatus)),
        )
    elif kind is EventKind.ROUTING:
        links = Links(
            links.model_version, links.deployment, rng.choice([TrafficSlot.STABLE, TrafficSlot.CANARY])
        )
        payload = Routing(
            deployment=links.deployment,
            rollout="r-1",
            slot=links.traffic_slot,
            endpoint="http://10.0.0.1:8080",
            outcome=rng.choice(list(RoutingOutcome)),
            latency_us=_latency(rng),
        )
    elif kind is EventKind.GUARDRAIL:
        links = Links(links.model_version, links.deployment, links.traffic_slot, links.policy, 2)
        payload = Guardrail(
            policy=links.policy,
            revision=2,
            decision=rng.choice(list(Decision)),
            violation_count=rng.randrange(4),
            highest_severity=rng.choice([None, Severity.CRITICAL]),
        )
    return LogEvent(
        event_id=f"r-{i}",
        event_time=moment,
        service=rng.choice(_SERVICES),
        level=rng.choice(list(LogLevel)),
        message=rng.choice(["chat call", "timeout talking to provider", ""]),
        links=links,
        attributes=rng.choice([{}, {"region": "eu"}, {"region": "us"}]),
        payload=payload,
    )


# Filters the aggregates must agree on: none, on group keys, on fields that are not keys, on times that
# fall inside buckets, on text.
_FILTERS = [
    "",
    "kind = INFERENCE",
    'service = "storyteller" OR kind = ROUTING',
    "level = ERROR OR level = FATAL",
    'model_version = "models/Chat/versions/2"',
    'deployment = "deployments/Web" OR policy = "policies/Kids"',
    'service != "storyteller"',
    "traffic_slot = CANARY",
    'attributes.region = "eu"',
    'message:"timeout"',
    "NOT kind = MESSAGE AND policy_revision > 1",
    'event_time >= "{start}"',
    'event_time < "{end}" AND kind = GUARDRAIL',
]
_BUCKETS = [1, 7, 60, 90, 3600, 3601, 86_400, 31 * 86_400]


async def _assert_aggregates_agree(database: Database, seed: int) -> None:
    rng = random.Random(seed)
    service = LogService(database, LogSettings(retention_days=0))
    start = NOW - timedelta(days=2, hours=7)
    events = [_random_event(rng, i, start, timedelta(days=2, hours=6)) for i in range(900)]
    for first in range(0, len(events), 300):
        await service.write(batch(0, events[first : first + 300], client=""))
    # Inside buckets of every width, not on any boundary.
    inside = {
        "start": (start + timedelta(hours=13, seconds=17.25)).isoformat().replace("+00:00", "Z"),
        "end": (NOW - timedelta(hours=3, seconds=41.5)).isoformat().replace("+00:00", "Z"),
    }
    checked = groups = 0
    for filter_text in _FILTERS:
        for _ in range(5):
            group_by = tuple(rng.sample(list(GroupBy), rng.randrange(4)))
            bucket = rng.choice(_BUCKETS) if GroupBy.TIME_BUCKET in group_by else 0
            currency = rng.choice(["USD", "EUR", "JPY", "XTS"])
            query = AggregateQuery(filter_text.format(**inside), group_by, bucket, currency)
            got = await service.aggregate(size_of=convert.group_size, query=query)
            compiled = compile_filter(query.filter_text, LOG_FILTER)
            sql, args = _reference(compiled.sql, compiled.params, group_by, bucket, currency)
            async with database.connection() as conn:
                expected = [_reference_figures(row, group_by) for row in await conn.fetch(sql, *args)]
            assert [_figures(g, group_by) for g in got] == expected, query
            assert all(g.cost.currency_code == currency for g in got)
            checked += 1
            groups += len(got)
    # The draw reaches many groups, and latencies of both kinds.
    assert (checked, groups > 1000) == (len(_FILTERS) * 5, True)


async def test_aggregates_equal_their_definition(database: Database) -> None:
    await _assert_aggregates_agree(database, seed=1)


@pytest.fixture
async def icu_database(admin_url: str) -> AsyncIterator[Database]:
    """A migrated database whose default collation is ICU's en-US, under which "a" sorts before "B" and
    "Ä" near "A" (byte order puts "B" first and "Ä" last)."""
    name = f"mp_test_icu_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        )
    except asyncpg.FeatureNotSupportedError:
        pytest.skip("this Postgres is built without ICU (the embedded one is)")
    finally:
        await admin.close()
    url = with_database(admin_url, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        db = Database(url)
        await db.open()
        try:
            yield db
        finally:
            await db.close()
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_aggregates_equal_their_definition_under_a_locale_collation(icu_database: Database) -> None:
    async with icu_database.connection() as conn:
        assert await conn.fetchval("SELECT 'a' < 'B' AND 'Ä' < 'b'")
    await _assert_aggregates_agree(icu_database, seed=2)
    groups = await LogService(icu_database).aggregate(
        size_of=convert.group_size, query=AggregateQuery('deployment != ""', (GroupBy.DEPLOYMENT,), 0, "USD")
    )
    assert [g.deployment for g in groups] == ["deployments/émile", "deployments/web", "deployments/Web"]


async def test_aggregates_leave_out_the_days_retention_dropped(database: Database) -> None:
    service = LogService(database, LogSettings(retention_days=0))
    today = NOW.date()
    days = [today - timedelta(days=d) for d in (3, 2, 1)]
    # Three events at noon of each day, with a latency of 10, 20 and 30 ms by day.
    events = [
        dataclasses.replace(
            inference(d * 100 + i, latency_ms=10 * (d + 1)),
            event_time=datetime(day.year, day.month, day.day, 12, i, tzinfo=UTC),
        )
        for d, day in enumerate(days)
        for i in range(3)
    ]
    await service.write(batch(0, events, client=""))
    query = AggregateQuery("kind = INFERENCE", (GroupBy.TIME_BUCKET,), 86_400, "USD")
    before = await service.aggregate(size_of=convert.group_size, query=query)
    assert [(g.count, g.latency_p50_us) for g in before] == [(3, 10_000), (3, 20_000), (3, 30_000)]
    now = datetime(today.year, today.month, today.day, 6, tzinfo=UTC)
    # The cutoff, two days before, falls inside the middle day: only the oldest goes.
    report = await store.maintain(database, now=now, retention_days=2, lead_days=1)
    assert report is not None
    assert report.dropped == (days[0],)
    after = await service.aggregate(size_of=convert.group_size, query=query)
    assert after == before[1:]


async def test_a_sum_beyond_int64_is_out_of_range_and_finer_groups_fit(database: Database) -> None:
    service = LogService(database)
    big = [
        LogEvent(
            event_id=f"big-{i}",
            event_time=NOW - timedelta(hours=2 * i),
            service="svc",
            level=LogLevel.INFO,
            payload=Inference(
                "local", "", 2**63 - 1, 0, 0, 0, None, Money("USD", 2**63 - 1), InferenceStatus.OK
            ),
        )
        for i in range(2)
    ]
    await service.write(batch(0, big, client=""))
    with pytest.raises(OutOfRange) as caught:
        await service.aggregate(
            size_of=convert.group_size, query=AggregateQuery("", (GroupBy.SERVICE,), 0, "EUR")
        )
    assert caught.value.reason == "SUM_OUT_OF_RANGE"
    assert caught.value.metadata == {"field": "input_tokens"}
    assert "of service 'svc'" in caught.value.message
    assert "group more finely" in caught.value.message
    with pytest.raises(OutOfRange) as caught:
        await service.aggregate(
            size_of=convert.group_size, query=AggregateQuery("kind = INFERENCE", (), 0, "USD")
        )
    assert caught.value.metadata == {"field": "input_tokens"}
    # One event an hour: by the hour, every sum fits.
    hourly = await service.aggregate(
        size_of=convert.group_size, query=AggregateQuery("", (GroupBy.TIME_BUCKET,), 3600, "USD")
    )
    assert [(g.input_tokens, g.cost.micros) for g in hourly] == [(2**63 - 1, 2**63 - 1)] * 2


async def test_an_aggregate_currency_follows_the_rule_of_events(database: Database) -> None:
    service = LogService(database)
    for code in ("ÄÖÜ", "usd", "US", "USDX", "U$D"):
        with pytest.raises(InvalidArgument) as caught:
            await service.aggregate(size_of=convert.group_size, query=AggregateQuery("", (), 0, code))
        assert [v.field for v in caught.value.violations] == ["currency_code"], code


async def _add_priced_version(database: Database, model_id: str) -> None:
    async with database.transaction() as conn:
        await conn.execute(
            "INSERT INTO models (id, provider, create_time, update_time, etag)"
            " VALUES ($1, 'local', now(), now(), 'e')",
            model_id,
        )
        await conn.execute(
            "INSERT INTO model_versions (model_id, version_id, source_uri, context_window, max_output_tokens,"
            " currency_code, input_price, output_price, cached_input_price, reasoning_price, state,"
            " create_time, update_time, etag)"
            " VALUES ($1, 1, 's3://x', 1000, 100, 'USD', 3000000, 15000000, NULL, NULL, 'ready',"
            " now(), now(), 'e')",
            model_id,
        )


def _unpriced(event_id: str, input_tokens: int, output_tokens: int) -> LogEvent:
    return LogEvent(
        event_id=event_id,
        event_time=NOW,
        service="llm-client",
        level=LogLevel.INFO,
        payload=Inference(
            "local",
            "models/priced/versions/1",
            input_tokens,
            output_tokens,
            0,
            0,
            None,
            None,
            InferenceStatus.OK,
        ),
    )


async def test_a_registry_price_beyond_int64_refuses_its_batch_by_path(database: Database) -> None:
    await _add_priced_version(database, "priced")
    service = LogService(database)
    # 3 USD/M input, 15 USD/M output: output tokens make most of this cost.
    huge = _unpriced("huge", 10**12, 2**62)
    with pytest.raises(InvalidArgument) as caught:
        await service.write(batch(4, [_unpriced("fine", 10, 10), huge]))
    (violation,) = caught.value.violations
    assert violation.field == "batch.events[1].inference.output_tokens"
    assert "models/priced/versions/1" in violation.description
    assert caught.value.metadata["sequence"] == "4"
    assert await count(database) == 0

    async def two_batches() -> AsyncIterator[LogBatch]:
        # Queued before the first commit, so both go to one commit, which must still keep the first.
        yield batch(1, [_unpriced("first", 10, 10)], client="c2")
        yield batch(2, [_unpriced("second", 10, 10), _unpriced("third", 2**62, 0)], client="c2")

    acks: list[LogAck] = []

    async def stream() -> None:
        async for ack in service.stream(two_batches()):
            acks.append(ack)

    with pytest.raises(InvalidArgument) as caught:
        await stream()
    assert caught.value.violations[0].field == "batch.events[1].inference.input_tokens"
    assert caught.value.metadata["sequence"] == "2"
    # The batch before the refused one is committed and acknowledged, as before any bad batch.
    assert [ack.sequence for ack in acks] == [1]
    assert await count(database, "SELECT count(*) FROM log_events WHERE service = 'llm-client'") == 1
    assert await count(database, "SELECT count(*) FROM log_events WHERE event_id = 'first'") == 1


async def test_aggregates_hash_the_rows_and_sort_only_the_groups(database: Database) -> None:
    # Sorting every row by its group keys took twice as long as the whole hashed query over a million
    # events; Postgres guesses one group per row for a time bucket and, left to itself, often sorts.
    service = LogService(database)
    rows = [
        dataclasses.replace(inference(i, version=f"models/chat/versions/{i % 8}"), event_id=f"h-{i}")
        for i in range(20_000)
    ]
    for first in range(0, len(rows), 1000):
        await service.write(batch(0, rows[first : first + 1000], client=""))
    compiled = compile_filter("", LOG_FILTER)
    async with database.connection() as conn:
        await conn.execute("ANALYZE log_events")
        for group_by in (
            (GroupBy.MODEL_VERSION, GroupBy.TIME_BUCKET),
            (GroupBy.TIME_BUCKET, GroupBy.SERVICE),
            (GroupBy.KIND,),
        ):
            sql, args = aggregates.aggregate_sql(compiled.sql, compiled.params, group_by, 60, "USD", 10)
            async with conn.transaction():
                await conn.execute(aggregates._SETTINGS)
                plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *args))
            assert "HashAggregate" in plan, plan
            assert plan.count("Sort Key") == 1, plan


async def _drain(
    database: Database, start: store.TailPosition, filter_text: str, *, events: int, text_bytes: int
) -> list[list[str]]:
    """The event ids of each round of a tail from `start` until it has caught up."""
    compiled = compile_filter(filter_text, LOG_FILTER)
    rounds: list[list[str]] = []
    position = start
    while True:
        async with database.connection() as conn:
            read = await store.tail_after(
                conn,
                position,
                where=compiled.sql,
                params=compiled.params,
                entries=2,
                events=events,
                text_bytes=text_bytes,
            )
        if read.position == position:
            assert read.events == []
            return rounds
        position = read.position
        rounds.append([e.event_id for e in read.events])


async def test_a_tail_reads_bounded_rounds_and_resumes_inside_a_transaction(database: Database) -> None:
    service = LogService(database)
    async with database.connection() as conn:
        start = await store.tail_position(conn)
    # Transactions of 7, 1, 0 matching (all "quiet") and 5 events; every third event is "quiet".
    sizes = [7, 1, 3, 5]
    written: list[LogEvent] = []
    for sequence, size in enumerate(sizes, start=1):
        events = [
            dataclasses.replace(
                inference(len(written) + i),
                event_id=f"t-{len(written) + i:03d}",
                # Pairs of events at one time: a round may stop between the two.
                event_time=NOW - timedelta(minutes=1) + timedelta(milliseconds=(len(written) + i) // 2),
                service="quiet" if sequence == 3 else "llm-client",
                message="m" * (len(written) + i),
            )
            for i in range(size)
        ]
        await service.write(batch(sequence, events))
        written += events
    wanted = [e.event_id for e in written if e.service == "llm-client"]

    # By events: rounds of 3, each going on inside a transaction where the one before stopped; a round
    # also ends at its last feed entry (2 a round here), and one past a transaction of no match.
    rounds = await _drain(database, start, 'service = "llm-client"', events=3, text_bytes=10**6)
    assert [i for r in rounds for i in r] == wanted
    assert max(len(r) for r in rounds) == 3

    # By bytes: messages of growing length, at most 20 bytes of them a round, but one event always.
    rounds = await _drain(database, start, 'service = "llm-client"', events=100, text_bytes=20 + len("{}"))
    assert [i for r in rounds for i in r] == wanted
    for ids in rounds:
        lengths = [int(i.removeprefix("t-")) for i in ids]
        assert len(ids) == 1 or sum(lengths) + len(ids) * len("{}") <= 22, ids
