"""LogShipper against the real server on loopback: acknowledged events are in the database once each, even
when acknowledgements are lost after the commit and the batches are resent; drops while the server is
down are counted by both sides and the shipper catches up when it is back; emit stays non-blocking while
the server is stalled behind a proxy that forwards nothing; a synchronous service emits, flushes and reads
the counters from many threads at once and every event is stored once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import asyncpg
import pytest

from modelplane.client import connect
from modelplane.client.events import InferenceEvent
from modelplane.client.log_shipper import LogShipper
from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.config import ServerConfig
from tests.support.loopback import free_port, until
from tests.support.tcp_proxy import TcpProxy


def _event(index: int) -> InferenceEvent:
    return InferenceEvent(
        model_version="models/chat/versions/1",
        provider="local",
        provider_model="echo",
        model_source="configured",
        status="ok",
        latency_seconds=0.001 * (index % 100),
        input_tokens=index,
        output_tokens=1,
        cost_micros=10,
        cost_currency_code="USD",
        request_id=f"req-{index}",
    )


class Servers:
    """Starts modelplane servers on one database, each stopped at the end of the test."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._running: list[ModelplaneServer] = []

    async def start(self, port: int = 0) -> ModelplaneServer:
        config = ServerConfig(
            address=f"127.0.0.1:{port}", database_url=self.database_url, auth=False, shutdown_grace=0.5
        )
        server = build_server(config)
        await server.start()
        self._running.append(server)
        await server.wait_serving(timeout=30)
        return server

    async def stop(self, server: ModelplaneServer) -> None:
        await server.stop(grace=0)
        self._running.remove(server)

    async def stop_all(self) -> None:
        for server in reversed(self._running):
            await server.stop(grace=0)
        self._running.clear()


@pytest.fixture
async def servers(database_url: str) -> AsyncIterator[Servers]:
    started = Servers(database_url)
    yield started
    await started.stop_all()


async def _stored(database_url: str, client_ids: list[str] | None = None) -> tuple[int, int]:
    """(rows, distinct event ids) in log_events."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM log_events")
        assert row is not None
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


async def test_acknowledged_events_are_in_the_database(servers: Servers, database_url: str) -> None:
    server = await servers.start()
    shipper = LogShipper(server.target, service="inference", instance="pod-1", flush_interval=0.05)
    events = [_event(i) for i in range(1200)]
    for event in events:
        shipper.emit(event)
    assert await shipper.aflush(20)
    # Acknowledged means committed: every acknowledged event is readable at once.
    assert shipper.stats.acknowledged == 1200
    assert await _stored(database_url) == (1200, 1200)
    await shipper.aclose()

    async with connect(server.target) as connection:
        stats = await connection.logs.get_ingestion_stats(client_id=shipper.client_id)
        (mine,) = stats.clients
        assert (mine.received, mine.accepted, mine.duplicates, mine.dropped, mine.sequence_gaps) == (
            1200,
            1200,
            0,
            0,
            0,
        )
        page = await connection.logs.query_log_events_page(filter=f'request_id = "{events[42].request_id}"')
        (stored,) = page.events
        assert stored.event_id == events[42].event_id
        assert stored.service == "inference"
        assert stored.instance == "pod-1"
        assert stored.inference.input_tokens == 42
        assert stored.inference.cost.micros == 10
        assert stored.links.model_version == "models/chat/versions/1"


async def test_a_synchronous_service_uses_one_shipper_from_many_threads(
    servers: Servers, database_url: str
) -> None:
    server = await servers.start()
    shipper = LogShipper(server.target, service="batch-job", batch_size=100, flush_interval=0.02)
    workers, per_worker = 8, 400
    start = threading.Barrier(workers)
    flushed: list[bool] = []
    seen_accepted: list[int] = []
    emitted: list[list[str]] = [[] for _ in range(workers)]

    def work(worker: int) -> None:
        # Each worker emits, reads the counters and flushes, all while the others do the same.
        start.wait()
        for index in range(per_worker):
            event = _event(worker * per_worker + index)
            emitted[worker].append(event.event_id)
            shipper.emit(event)
            if index % 100 == 99:
                seen_accepted.append(shipper.stats.accepted)
                flushed.append(shipper.flush(30))

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    await asyncio.to_thread(shipper.close, 30)

    total = workers * per_worker
    ids = [event_id for ids in emitted for event_id in ids]
    assert len(set(ids)) == total
    assert flushed == [True] * (workers * per_worker // 100)
    assert max(seen_accepted) <= total
    stats = shipper.stats
    assert (stats.accepted, stats.acknowledged, stats.dropped, stats.abandoned) == (total, total, 0, 0)
    assert await _stored(database_url) == (total, total)
    async with connect(server.target) as connection:
        ingestion = await connection.logs.get_ingestion_stats(client_id=shipper.client_id)
        (mine,) = ingestion.clients
        assert (mine.accepted, mine.duplicates, mine.dropped, mine.sequence_gaps) == (total, 0, 0, 0)


async def test_lost_acknowledgements_lead_to_resends_without_duplicates(
    servers: Servers, database_url: str
) -> None:
    server = await servers.start()
    upstream = int(server.target.rsplit(":", 1)[1])
    async with TcpProxy("127.0.0.1", upstream) as proxy:
        shipper = LogShipper(
            proxy.target,
            service="inference",
            batch_size=50,
            flush_interval=0.02,
            ack_timeout=1.0,
            initial_backoff=0.05,
            max_backoff=0.2,
        )
        # The stream is up (gRPC needs the server's HTTP/2 settings to get through once)...
        shipper.emit(_event(0))
        assert await shipper.aflush(20)
        # ...then the server keeps committing batches, but no acknowledgement reaches the shipper...
        proxy.hold_responses()
        events = [_event(i) for i in range(1, 300)]
        for event in events:
            shipper.emit(event)
        async with asyncio.timeout(20):
            while (committed := (await _stored(database_url))[0]) < 101:  # noqa: ASYNC110 -- a database poll
                await asyncio.sleep(0.05)
        assert shipper.stats.acknowledged == 1
        # ...and then the connection dies between those commits and their acknowledgements.
        await proxy.cut()
        committed_unacknowledged = (await _stored(database_url))[0] - 1
        proxy.resume()
        await proxy.restore()
        assert await shipper.aflush(20)
        await shipper.aclose()

    stats = shipper.stats
    assert stats.acknowledged == 300
    assert stats.batches_resent >= 1
    assert await _stored(database_url) == (300, 300)
    async with connect(server.target) as connection:
        ingestion = await connection.logs.get_ingestion_stats(client_id=shipper.client_id)
        (mine,) = ingestion.clients
        assert mine.accepted == 300
        # Every event committed but not acknowledged was sent again and recognised as already stored.
        assert mine.duplicates == mine.received - 300
        assert mine.duplicates >= committed_unacknowledged >= committed - 1 >= 100
        assert mine.sequence_gaps == 0


async def test_drops_while_the_server_is_down_are_counted_and_the_shipper_catches_up(
    servers: Servers, database_url: str
) -> None:
    port = free_port()
    server = await servers.start(port)
    shipper = LogShipper(
        server.target,
        service="inference",
        queue_size=1000,
        batch_size=100,
        flush_interval=0.02,
        initial_backoff=0.05,
        max_backoff=0.2,
    )
    for index in range(100):
        shipper.emit(_event(index))
    assert await shipper.aflush(20)

    await servers.stop(server)
    outage = [_event(index) for index in range(100, 5100)]
    for event in outage:
        shipper.emit(event)
    stats = shipper.stats
    # The queue holds 1000 and the unacknowledged window at most 8 batches of 100: the rest is dropped.
    assert stats.queued <= 1000
    assert stats.dropped >= 5000 - 1000 - 800
    await until(lambda: shipper.stats.last_error != "")

    server = await servers.start(port)
    assert await shipper.aflush(20)
    # The last drops are reported by the batch after them, which may follow the last event.
    after = _event(9999)
    shipper.emit(after)
    assert await shipper.aflush(20)
    await shipper.aclose()

    stats = shipper.stats
    rows, distinct = await _stored(database_url)
    assert rows == distinct == stats.acknowledged
    assert rows + stats.dropped == 100 + 5000 + 1
    async with connect(server.target) as connection:
        ingestion = await connection.logs.get_ingestion_stats(client_id=shipper.client_id)
        (mine,) = ingestion.clients
        assert mine.dropped == stats.dropped
        assert mine.accepted == rows
        assert mine.sequence_gaps == 0
        newest = await connection.logs.query_log_events_page(filter=f'request_id = "{outage[-1].request_id}"')
        # Drop-oldest: the newest events of the outage survive it.
        assert [event.event_id for event in newest.events] == [outage[-1].event_id]


async def test_emit_stays_non_blocking_while_the_server_is_stalled(
    servers: Servers, database_url: str
) -> None:
    server = await servers.start()
    upstream = int(server.target.rsplit(":", 1)[1])
    async with TcpProxy("127.0.0.1", upstream) as proxy:
        shipper = LogShipper(
            proxy.target,
            service="inference",
            queue_size=2000,
            batch_size=100,
            flush_interval=0.02,
            ack_timeout=0.5,
            initial_backoff=0.05,
            max_backoff=0.2,
        )
        shipper.emit(_event(0))
        assert await shipper.aflush(20)
        proxy.stall()
        emitted = 0

        def emit_many() -> None:
            nonlocal emitted
            for index in range(1, 20_001):
                shipper.emit(_event(index))
                emitted += 1

        # From a plain thread, as a synchronous service would; it finishes although nothing is sent.
        await asyncio.to_thread(emit_many)
        assert emitted == 20_000
        stats = shipper.stats
        assert stats.queued <= 2000
        assert stats.dropped >= 20_000 - 2000 - 800
        assert not await shipper.aflush(0.3)

        proxy.resume()
        assert await shipper.aflush(20)
        await shipper.aclose()

    stats = shipper.stats
    rows, distinct = await _stored(database_url)
    assert rows == distinct == stats.acknowledged
    assert rows + stats.dropped == 20_001
