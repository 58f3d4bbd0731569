"""The log ingestion benchmark: events per second into log_events by three roads, and one aggregate.

1. raw asyncpg COPY of the same rows straight into log_events (the ceiling: no gRPC, no checks);
2. StreamLogEvents through the server, batches of 500, acknowledged after commit;
3. WriteLogEvents through the server, batches of 500, four calls in flight;
each as a ratio of the raw COPY of its round (five rounds by default, after one that warms up the
server; medians printed); then AggregateLogEvents over 1,000,000 stored events grouped by model version
and hour (`--aggregate-only` measures just that); then every page of one model version's events, and one
trace found by its id.
`python -m bench.logs_ingest` starts a server process on a database (as bench/run.py does) and drives it
from a second process. It only prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from bench.registry_load import wait_serving
from bench.run import REPO, bench_database, server_process
from modelplane.client.channel import channel_options
from modelplane.server.logs.columns import EVENT_COLUMNS, domain_row
from modelplane.server.logs.domain import Inference, InferenceStatus, Links, LogEvent, LogLevel, Money
from modelplane.server.store.pool import exchange_timestamps_as_micros
from modelplane.v1 import common_pb2, logs_pb2_grpc
from modelplane.v1 import logs_pb2 as lpb

BATCH = 500
WARMUP_EVENTS = 10 * BATCH
VERSIONS = [f"models/chat/versions/{v}" for v in range(1, 9)]


def proto_event(i: int, run: str, at: datetime) -> lpb.LogEvent:
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(at)
    return lpb.LogEvent(
        event_id=f"{run}-{i}",
        event_time=when,
        service="llm-client",
        instance="bench-1",
        level=lpb.LOG_LEVEL_INFO,
        message="chat completion",
        links=common_pb2.EventLinks(trace_id=uuid.uuid4().hex),
        inference=lpb.InferencePayload(
            provider="local",
            model_version=VERSIONS[i % len(VERSIONS)],
            input_tokens=120,
            output_tokens=40,
            latency=duration_pb2.Duration(nanos=(i % 1000) * 1_000_000),
            cost=common_pb2.Money(currency_code="USD", micros=93),
            status=lpb.INFERENCE_STATUS_OK,
        ),
    )


def domain_rows(count: int, run: str, start: datetime, spread: timedelta) -> list[tuple[Any, ...]]:
    step = spread / max(count, 1)
    rows = []
    for i in range(count):
        event = LogEvent(
            event_id=f"{run}-{i}",
            event_time=start + step * i,
            service="llm-client",
            level=LogLevel.INFO,
            instance="bench-1",
            message="chat completion",
            links=Links(model_version=VERSIONS[i % len(VERSIONS)], trace_id=uuid.uuid4().hex),
            payload=Inference(
                "local",
                VERSIONS[i % len(VERSIONS)],
                120,
                40,
                0,
                0,
                (i % 1000) * 1000,
                Money("USD", 93),
                InferenceStatus.OK,
            ),
        )
        rows.append((*domain_row(event), 0))
    return rows


async def raw_copy(url: str, rows: list[tuple[Any, ...]]) -> float:
    conn = await asyncpg.connect(url)
    try:
        # The rows carry their event time as the server's ingestion connections exchange it.
        await exchange_timestamps_as_micros(conn)
        started = time.perf_counter()
        for first in range(0, len(rows), 5 * BATCH):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "log_events",
                    records=rows[first : first + 5 * BATCH],
                    columns=[*EVENT_COLUMNS, "ingest_batch"],
                )
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def stream(stub: Any, requests: list[lpb.StreamLogEventsRequest], events: int) -> float:
    async def source() -> AsyncIterator[lpb.StreamLogEventsRequest]:
        for request in requests:
            yield request

    started = time.perf_counter()
    last = 0
    async for response in stub.StreamLogEvents(source(), timeout=600):
        last = response.ack.sequence
    assert last == len(requests)
    return events / (time.perf_counter() - started)


async def write(
    stub: Any, requests: list[lpb.WriteLogEventsRequest], events: int, concurrency: int = 4
) -> float:
    queue = list(reversed(requests))

    async def worker() -> None:
        while queue:
            await stub.WriteLogEvents(queue.pop(), timeout=60)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return events / (time.perf_counter() - started)


async def drive(
    target: str,
    url: str,
    events: int,
    aggregate_events: int,
    *,
    aggregate_only: bool,
    rounds: int,
    ingest_rounds: int,
) -> dict[str, Any]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    result: dict[str, Any] = {"events": events}
    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        run = uuid.uuid4().hex[:8]
        if not aggregate_only:
            result.update(await ingestion(url, stub, run, now, events, ingest_rounds))
        # The aggregate's data: a million events in the 23 hours before `now`, stored the fastest way. The
        # ingestion roads stored theirs from `now` on, in the same partition, outside the aggregate's range.
        start = now - timedelta(hours=23)
        await store_partitions(url, start)
        await raw_copy(url, domain_rows(aggregate_events, f"agg-{run}", start, timedelta(hours=23)))
        conn = await asyncpg.connect(url)
        await conn.execute("ANALYZE log_events")
        result["stored_events"] = int(await conn.fetchval("SELECT count(*) FROM log_events"))
        await conn.close()
        request = lpb.AggregateLogEventsRequest(
            filter=f'event_time >= "{_rfc3339(start)}" AND event_time < "{_rfc3339(now)}"',
            group_by=[lpb.LOG_GROUP_BY_MODEL_VERSION, lpb.LOG_GROUP_BY_TIME_BUCKET],
            bucket_width=duration_pb2.Duration(seconds=3600),
        )
        timings = []
        for _ in range(max(1, rounds)):
            started = time.perf_counter()
            response = await stub.AggregateLogEvents(request, timeout=120)
            timings.append(time.perf_counter() - started)
        result["aggregate_timings"] = timings
        result["aggregate_events"] = sum(g.count for g in response.groups)
        result["aggregate_groups"] = len(response.groups)
        if not aggregate_only:
            result.update(await paging(stub, start))
    return result


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def paging(stub: Any, start: datetime) -> dict[str, Any]:
    """Every page of one model version's events of the last day, newest first, 1,000 a page (the
    time of each page tells whether depth costs), then one trace's events found by trace id alone."""
    request = lpb.QueryLogEventsRequest(
        filter=f'model_version = "{VERSIONS[3]}" AND event_time >= "{_rfc3339(start)}"', page_size=1000
    )
    timings: list[float] = []
    events = 0
    trace_id = ""
    while True:
        started = time.perf_counter()
        page = await stub.QueryLogEvents(request, timeout=60)
        timings.append(time.perf_counter() - started)
        events += len(page.events)
        if len(timings) == 50 and page.events:
            trace_id = page.events[-1].links.trace_id
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    started = time.perf_counter()
    found = await stub.QueryLogEvents(
        lpb.QueryLogEventsRequest(filter=f'trace_id = "{trace_id}"'), timeout=60
    )
    trace_seconds = time.perf_counter() - started
    return {
        "paging_timings": timings,
        "paged_events": events,
        "trace_seconds": trace_seconds,
        "trace_events": len(found.events),
    }


async def ingestion(url: str, stub: Any, run: str, now: datetime, events: int, rounds: int) -> dict[str, Any]:
    """Events per second by the three roads, in `rounds` rounds of all three back to back: a ratio is
    taken within its round, so a load that comes and goes on the machine moves both of its figures."""
    result: dict[str, Any] = {"raw_copy": [], "stream": [], "write": []}
    # A round nobody counts first: a fresh server opens its ingestion connections, prepares its
    # statements and fills its caches on the first batches, which would otherwise weigh on round one.
    await ingestion_round(url, stub, f"{run}-warmup", now, WARMUP_EVENTS)
    for number in range(max(1, rounds)):
        for road, rate in (await ingestion_round(url, stub, f"{run}-{number}", now, events)).items():
            result[road].append(rate)
    return result


async def ingestion_round(url: str, stub: Any, run: str, now: datetime, events: int) -> dict[str, float]:
    result = {
        "raw_copy": await raw_copy(
            url, domain_rows(events, f"raw-{uuid.uuid4().hex[:8]}", now, timedelta(minutes=30))
        )
    }
    stream_requests = [
        lpb.StreamLogEventsRequest(
            batch=lpb.LogBatch(
                client_id=f"bench-{run}",
                sequence=b + 1,
                events=[proto_event(i, f"s-{run}", now) for i in range(b * BATCH, (b + 1) * BATCH)],
            )
        )
        for b in range(events // BATCH)
    ]
    result["stream"] = await stream(stub, stream_requests, events)
    write_requests = [
        lpb.WriteLogEventsRequest(
            batch=lpb.LogBatch(
                events=[proto_event(i, f"w-{run}", now) for i in range(b * BATCH, (b + 1) * BATCH)]
            )
        )
        for b in range(events // BATCH)
    ]
    result["write"] = await write(stub, write_requests, events)
    return result


async def store_partitions(url: str, start: datetime) -> None:
    conn = await asyncpg.connect(url)
    try:
        day = start.date()
        while day <= datetime.now(UTC).date():
            await conn.execute("SELECT log_ensure_partition($1)", day)
            day += timedelta(days=1)
    finally:
        await conn.close()


def report(result: dict[str, Any]) -> str:
    lines = []
    if "raw_copy" in result:
        raw = result["raw_copy"]
        rounds = len(raw)

        def road(name: str, rates: list[float]) -> str:
            ratios = [rate / ceiling for rate, ceiling in zip(rates, raw, strict=True)]
            shown = ", ".join(f"{r:.2f}" for r in ratios)
            return (
                f"  {name:<32} {statistics.median(rates):>10,.0f} events/s  ratio"
                f" {statistics.median(ratios):.2f} (rounds: {shown})"
            )

        lines += [
            f"log ingestion, {result['events']:,} events a road, batches of {BATCH},"
            f" median of {rounds} rounds:",
            f"  {'raw asyncpg COPY (ceiling)':<32} {statistics.median(raw):>10,.0f} events/s"
            f"  ({min(raw):,.0f} to {max(raw):,.0f})",
            road("StreamLogEvents (ack on commit)", result["stream"]) + "  (targets 50,000/s, 0.5)",
            road("WriteLogEvents, 4 in flight", result["write"]),
        ]
    timings = result["aggregate_timings"]
    lines.append(
        f"AggregateLogEvents over {result['aggregate_events']:,} events by model version and hour"
        f" ({result['aggregate_groups']} groups): {statistics.median(timings):.3f} s, median of"
        f" {len(timings)} ({min(timings):.3f} to {max(timings):.3f}) (target < 1 s)"
    )
    if "paging_timings" in result:
        pages = result["paging_timings"]
        lines.append(
            f"QueryLogEvents, every page of one model version ({result['paged_events']:,} events,"
            " 1,000 a page):"
            f" first {pages[0] * 1000:.1f} ms, median {statistics.median(pages) * 1000:.1f} ms,"
            f" slowest {max(pages) * 1000:.1f} ms, last {pages[-1] * 1000:.1f} ms"
        )
        lines.append(
            f"QueryLogEvents by trace id alone ({result['trace_events']} event) among the"
            f" {result['stored_events']:,} stored: {result['trace_seconds'] * 1000:.1f} ms"
        )
    return "\n".join(lines)


async def _wait_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_serving(channel)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--aggregate-events", type=int, default=1_000_000)
    parser.add_argument(
        "--aggregate-only", action="store_true", help="measure only AggregateLogEvents, not ingestion"
    )
    parser.add_argument("--aggregate-rounds", type=int, default=3, help="AggregateLogEvents calls timed")
    parser.add_argument("--ingest-rounds", type=int, default=5, help="rounds of the three ingestion roads")
    parser.add_argument("--server-log-level", default="WARNING")
    parser.add_argument("--drive", nargs=2, metavar=("TARGET", "DATABASE_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        target, url = args.drive
        measured = drive(
            target,
            url,
            args.events,
            args.aggregate_events,
            aggregate_only=args.aggregate_only,
            rounds=args.aggregate_rounds,
            ingest_rounds=args.ingest_rounds,
        )
        print(json.dumps(asyncio.run(measured)))
        return 0
    with (
        bench_database(args.database_url, embedded_only=args.embedded) as database,
        tempfile.TemporaryFile("w+") as log_file,
        server_process(database.url, args.server_log_level, log_file) as target,
    ):
        asyncio.run(_wait_serving(target))
        command = [sys.executable, "-m", "bench.logs_ingest", "--drive", target, database.url]
        command += ["--events", str(args.events), "--aggregate-events", str(args.aggregate_events)]
        command += [
            "--aggregate-rounds",
            str(args.aggregate_rounds),
            "--ingest-rounds",
            str(args.ingest_rounds),
        ]
        command += ["--aggregate-only"] if args.aggregate_only else []
        finished = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
        if finished.returncode != 0:
            log_file.seek(0)
            print("bench: the load failed; server log:", *log_file.read().splitlines()[-30:], sep="\n  ")
            return 1
    print(report(json.loads(finished.stdout.strip().splitlines()[-1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
