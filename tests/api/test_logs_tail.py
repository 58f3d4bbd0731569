"""TailLogEvents behind a large backlog: every event once and in commit order, and a server whose memory
does not grow with how far behind its tail is."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from modelplane.server.logs import service as service_module
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import logs_pb2_grpc
from tests.support.loopback import free_port
from tests.support.processes import SHUTDOWN_GRACE, launched, wait_serving

# Bounds one read of the tail so that a hang fails the test; not a performance bound.
READ_LIMIT = 60.0


def small(event_id: str, service: str) -> lpb.LogEvent:
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    return lpb.LogEvent(
        event_id=event_id,
        event_time=now,
        service=service,
        level=lpb.LOG_LEVEL_INFO,
        message=f"backlog {event_id} " + "x" * 600,
        attributes={"region": "eu", "zone": "eu-west-1b", "tenant": "acme", "route": "/v1/chat"},
    )


async def synced(stub: logs_pb2_grpc.LogServiceAsyncStub, tail: object, service: str) -> None:
    """Returns once the tail has sent one event of `service`: from then on it sees every commit. The tail
    starts from the moment the server runs it, which the client cannot observe otherwise."""
    assert isinstance(tail, grpc.aio.UnaryStreamCall)

    async def keep_writing() -> None:
        for n in itertools.count():
            batch = lpb.LogBatch(events=[small(f"marker-{n}", service)])
            await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=batch))
            await asyncio.sleep(0.1)

    writer = asyncio.create_task(keep_writing())
    try:
        message = await asyncio.wait_for(tail.read(), timeout=READ_LIMIT)
        assert isinstance(message, lpb.TailLogEventsResponse), message
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def read_ids(tail: object, prefix: str, wanted: int, *, until: str = "") -> list[str]:
    """The ids starting with `prefix` the tail sends, in the order sent, until `wanted` of them came (and,
    with `until`, the event of that id came)."""
    assert isinstance(tail, grpc.aio.UnaryStreamCall)
    seen: list[str] = []
    ended = not until
    while len(seen) < wanted or not ended:
        message = await asyncio.wait_for(tail.read(), timeout=READ_LIMIT)
        assert isinstance(message, lpb.TailLogEventsResponse), message
        seen += [e.event_id for e in message.events if e.event_id.startswith(prefix)]
        ended = ended or any(e.event_id == until for e in message.events)
    return seen


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


async def streamed(stub: logs_pb2_grpc.LogServiceAsyncStub, batches: Sequence[lpb.LogBatch]) -> None:
    """Sends the batches on one StreamLogEvents call, as fast as the server takes them (so it commits
    several in each transaction), and returns once all are acknowledged."""
    requests = [
        lpb.StreamLogEventsRequest(batch=lpb.LogBatch(client_id="backlog", sequence=n, events=b.events))
        for n, b in enumerate(batches, start=1)
    ]
    acknowledged = 0
    async for response in stub.StreamLogEvents(iter(requests)):
        acknowledged = response.ack.sequence
    assert acknowledged == len(requests)


def batches_of(ids: Sequence[str], service: str, size: int) -> list[lpb.LogBatch]:
    return [
        lpb.LogBatch(events=[small(i, service) for i in ids[start : start + size]])
        for start in range(0, len(ids), size)
    ]


# Events in a tail's round in the test below.
ROUND_EVENTS = 700


async def test_a_backlog_in_big_transactions_reaches_a_tail_once_each_in_order(
    channel: grpc.aio.Channel, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream's transactions hold 1000 to 8000 events, as the server happens to queue them; rounds
    # smaller than the smallest make every one of them span rounds, whatever the timing.
    monkeypatch.setattr(service_module, "TAIL_EVENTS_PER_ROUND", ROUND_EVENTS)
    stub = logs_pb2_grpc.LogServiceStub(channel)
    tail = stub.TailLogEvents(lpb.TailLogEventsRequest(filter='service = "burst"'))
    try:
        await synced(stub, tail, "burst")
        # 60,000 events on one stream, which the server commits several batches to a transaction.
        ids = [f"b-{n:06d}-{uuid.uuid4().hex[:8]}" for n in range(60_000)]
        await streamed(stub, batches_of(ids, "burst", 1000))
        # Then one more: everything the tail sends before it is all it will ever send of the backlog.
        end = lpb.LogBatch(events=[small("end", "burst")])
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=end))
        seen = await read_ids(tail, "", len(ids), until="end")
    finally:
        tail.cancel()
    assert [i for i in seen if i.startswith("b-")] == ids
    # What makes this test: transactions larger than a tail's round, so rounds stopped inside them.
    conn = await asyncpg.connect(database_url)
    try:
        largest = await conn.fetchval(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM log_events WHERE service = 'burst'"
            " GROUP BY ingest_batch) AS t"
        )
    finally:
        await conn.close()
    assert largest > ROUND_EVENTS, largest


# 100 transactions of 1000 small events, which a tail that read up to 100 transactions a round held at
# once when it caught up: some 150 MB of server memory.
BACKLOG_EVENTS = 100_000
# What the server may grow by while the backlog is written and its tail catches up: the ingestion, a round
# of events and its messages, the buffers of gRPC and the pool, the allocator's slack.
PEAK_GROWTH_LIMIT = 64 * 1024 * 1024


async def test_a_tail_far_behind_catches_up_in_bounded_server_memory(
    database_url: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = ["serve", "--address", address, "--database-url", database_url, "--no-auth", "--workers", "1"]
    with launched([*args, "--shutdown-grace", str(SHUTDOWN_GRACE)], tmp_path, log_path) as process:
        with grpc.insecure_channel(address) as probe:
            wait_serving(process, probe, log_path)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = logs_pb2_grpc.LogServiceStub(channel)
            tail = stub.TailLogEvents(lpb.TailLogEventsRequest(filter='service = "backlog"'))
            try:
                await synced(stub, tail, "backlog")
                before = peak_rss_bytes(process.pid)
                # The tail is not read while the backlog is written: flow control holds its server side,
                # which must then not read ahead of what gRPC has sent.
                ids = [f"b-{n:06d}-{uuid.uuid4().hex[:8]}" for n in range(BACKLOG_EVENTS)]
                for batch in batches_of(ids, "backlog", 1000):
                    await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=batch))
                seen = await read_ids(tail, "b-", len(ids))
                growth = peak_rss_bytes(process.pid) - before
            finally:
                tail.cancel()
    assert seen == ids
    assert growth < PEAK_GROWTH_LIMIT, f"the server grew by {growth / 2**20:.0f} MiB"
