"""LogShipper against a scripted LogService on loopback: sequence numbers, drop reports, resends after lost
acknowledgements, a refused batch, unconvertible events, a stalled peer, emit from threads and both run modes.

The scripted server is a real grpc.aio server that answers StreamLogEvents as the contract says but lets a
test withhold acknowledgements or refuse a batch at will, which a store-backed server cannot be made to do
at an exact moment. The same behaviours against the real server are in test_log_shipper.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.client.channel import connect
from modelplane.client.events import InferenceEvent
from modelplane.client.log_shipper import LogShipper
from modelplane.v1 import logs_pb2, logs_pb2_grpc
from tests.support.loopback import free_port, until


class ScriptedLogService(logs_pb2_grpc.LogServiceServicer):
    """Stores events by event_id (so resends do not duplicate) and acknowledges each batch, unless told
    to withhold acknowledgements or to refuse a batch."""

    def __init__(self) -> None:
        self.batches: list[logs_pb2.LogBatch] = []
        self.stored: dict[str, logs_pb2.LogEvent] = {}
        self.streams = 0
        self.withhold_acks = False
        self.refuse_sequence = 0
        # The first `fail_streams` streams end at once with UNAVAILABLE, each with a message of its own.
        self.fail_streams = 0

    async def StreamLogEvents(
        self,
        request_iterator: AsyncIterator[logs_pb2.StreamLogEventsRequest],
        context: grpc.aio.ServicerContext[logs_pb2.StreamLogEventsRequest, logs_pb2.StreamLogEventsResponse],
    ) -> AsyncIterator[logs_pb2.StreamLogEventsResponse]:
        self.streams += 1
        if self.streams <= self.fail_streams:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage unavailable (stream {self.streams})")
        async for request in request_iterator:
            batch = request.batch
            self.batches.append(batch)
            if batch.sequence == self.refuse_sequence:
                info = error_details_pb2.ErrorInfo(
                    reason="INVALID_FIELD", domain="modelplane", metadata={"sequence": str(batch.sequence)}
                )
                status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad batch")
                status.details.add().Pack(info)
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "bad batch",
                    trailing_metadata=rpc_status.to_status(status).trailing_metadata,
                )
            for event in batch.events:
                self.stored.setdefault(event.event_id, event)
            if not self.withhold_acks:
                yield logs_pb2.StreamLogEventsResponse(
                    ack=logs_pb2.LogAck(sequence=batch.sequence, batches=1, accepted=len(batch.events))
                )

    def first_batches(self) -> dict[int, logs_pb2.LogBatch]:
        """Each sequence number's batch as first received."""
        first: dict[int, logs_pb2.LogBatch] = {}
        for batch in self.batches:
            first.setdefault(batch.sequence, batch)
        return first

    def reported_dropped(self) -> int:
        """The sum of dropped_since_last, each sequence number counted once (as the real server does)."""
        return sum(batch.dropped_since_last for batch in self.first_batches().values())


def _scripted_service() -> ScriptedLogService:
    # The methods it leaves out answer UNIMPLEMENTED, as the generated base class does.
    return ScriptedLogService()  # type: ignore[abstract]


class ScriptedServer:
    def __init__(self, service: ScriptedLogService, port: int = 0) -> None:
        self.service = service
        self.port = port
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        logs_pb2_grpc.add_LogServiceServicer_to_server(self.service, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(_scripted_service())
    await server.start()
    yield server
    await server.stop()


def _event(index: int) -> InferenceEvent:
    return InferenceEvent(
        model_version="models/chat/versions/1",
        provider="local",
        provider_model="echo",
        model_source="configured",
        status="ok",
        latency_seconds=0.001 * index,
        input_tokens=index,
        request_id=f"req-{index}",
    )


def _emit_range(shipper: LogShipper, start: int, stop: int) -> None:
    for index in range(start, stop):
        shipper.emit(_event(index))


def _emit_all(shipper: LogShipper, events: list[InferenceEvent]) -> None:
    for event in events:
        shipper.emit(event)


async def test_batches_are_numbered_acknowledged_and_stored(scripted: ScriptedServer) -> None:
    shipper = LogShipper(scripted.target, service="storyteller", batch_size=100, flush_interval=0.05)
    events = [_event(i) for i in range(250)]
    for event in events:
        shipper.emit(event)
    assert await shipper.aflush(10)
    await shipper.aclose()

    service = scripted.service
    assert set(service.stored) == {event.event_id for event in events}
    sequences = [batch.sequence for batch in service.batches]
    assert sequences == list(range(1, len(sequences) + 1))
    assert all(len(batch.events) <= 100 for batch in service.batches)
    assert {batch.client_id for batch in service.batches} == {shipper.client_id}
    stats = shipper.stats
    assert (stats.accepted, stats.acknowledged, stats.dropped, stats.unacknowledged) == (250, 250, 0, 0)
    stored = service.stored[events[7].event_id]
    assert stored.service == "storyteller"
    assert stored.instance == shipper.instance
    assert stored.inference.input_tokens == 7


async def test_drops_while_the_server_is_away_are_counted_reported_and_caught_up() -> None:
    port = free_port()
    shipper = LogShipper(
        f"127.0.0.1:{port}",
        service="inference",
        queue_size=20,
        batch_size=10,
        max_unacknowledged_batches=1,
        flush_interval=0.02,
        initial_backoff=0.02,
        max_backoff=0.1,
    )
    events = [_event(i) for i in range(100)]
    for event in events:
        shipper.emit(event)
    await until(lambda: shipper.stats.last_error != "")
    stats = shipper.stats
    # At most one batch (10) is held for resending and 20 are queued: the rest were pushed out.
    assert stats.dropped >= 70
    assert stats.queued <= 20
    assert stats.acknowledged == 0

    server = ScriptedServer(_scripted_service(), port)
    await server.start()
    try:
        assert await shipper.aflush(10)
        # A drop is reported in the batch after it, even when no event follows: wait for that batch too.
        await until(lambda: server.service.reported_dropped() == shipper.stats.dropped)
        await shipper.aclose()
    finally:
        await server.stop()

    stats = shipper.stats
    assert stats.reconnects >= 1
    assert len(server.service.stored) + stats.dropped == 100
    assert stats.acknowledged == len(server.service.stored)
    # The newest events survive an outage: the last one emitted is always stored.
    assert events[-1].event_id in server.service.stored


async def test_unacknowledged_batches_are_resent_unchanged_after_a_reconnect(
    scripted: ScriptedServer,
) -> None:
    service = scripted.service
    service.withhold_acks = True
    shipper = LogShipper(
        scripted.target,
        service="inference",
        batch_size=20,
        flush_interval=0.02,
        ack_timeout=0.5,
        initial_backoff=0.02,
        max_backoff=0.1,
    )
    events = [_event(i) for i in range(50)]
    for event in events:
        shipper.emit(event)
    # The server has committed everything but acknowledged nothing.
    await until(lambda: len(service.stored) == 50)
    assert shipper.stats.acknowledged == 0
    service.withhold_acks = False
    assert await shipper.aflush(10)
    await shipper.aclose()

    stats = shipper.stats
    assert stats.acknowledged == 50
    assert stats.batches_resent >= 1
    assert service.streams >= 2
    by_sequence: dict[int, list[logs_pb2.LogBatch]] = {}
    for batch in service.batches:
        by_sequence.setdefault(batch.sequence, []).append(batch)
    resent = [copies for copies in by_sequence.values() if len(copies) > 1]
    assert resent
    for copies in resent:
        # A resend is byte for byte the batch first sent: same sequence, same event ids and times.
        assert all(copy == copies[0] for copy in copies)
    assert len(service.stored) == 50


async def test_a_refused_batch_is_dropped_and_reported_in_the_next_one(scripted: ScriptedServer) -> None:
    service = scripted.service
    service.refuse_sequence = 1
    shipper = LogShipper(
        scripted.target, service="inference", batch_size=5, flush_interval=0.02, initial_backoff=0.02
    )
    first = [_event(i) for i in range(5)]
    for event in first:
        shipper.emit(event)
    await until(lambda: shipper.stats.rejected == 5)
    second = [_event(i) for i in range(5, 10)]
    for event in second:
        shipper.emit(event)
    assert await shipper.aflush(10)
    await shipper.aclose()

    assert set(service.stored) == {event.event_id for event in second}
    assert service.first_batches()[2].dropped_since_last == 5
    assert "INVALID_ARGUMENT" in shipper.stats.last_error or shipper.stats.last_error == ""


async def test_emit_never_raises_and_unconvertible_events_are_counted(scripted: ScriptedServer) -> None:
    shipper = LogShipper(scripted.target, service="inference", batch_size=10, flush_interval=0.02)
    good = [_event(i) for i in range(3)]
    shipper.emit(good[0])
    shipper.emit(object())
    shipper.emit(good[1])
    shipper.emit(good[2])
    assert await shipper.aflush(10)
    await shipper.aclose()
    # After close, emit still returns quietly and counts the event.
    shipper.emit(good[0])

    stats = shipper.stats
    assert stats.unconvertible == 1
    assert stats.dropped == 1
    stored = scripted.service.stored
    assert {event.event_id for event in good} <= set(stored)
    assert scripted.service.reported_dropped() >= 1


async def test_emit_stays_non_blocking_against_a_stalled_peer() -> None:
    # A peer that accepts connections and reads, but never answers: no HTTP/2 settings, no acknowledgements.
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(65536):
            pass

    listener = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    shipper = LogShipper(
        f"127.0.0.1:{port}", service="inference", queue_size=1000, batch_size=100, ack_timeout=0.5
    )
    try:
        emitted = 0

        # Emit from a plain thread, as a synchronous caller would, while the sender is stuck.
        def emit_many() -> None:
            nonlocal emitted
            for index in range(20_000):
                shipper.emit(_event(index))
                emitted += 1

        worker = threading.Thread(target=emit_many)
        worker.start()
        await asyncio.to_thread(worker.join)
        assert emitted == 20_000
        stats = shipper.stats
        assert stats.acknowledged == 0
        assert stats.queued <= 1000
        assert stats.dropped >= 20_000 - 1000 - 8 * 100
        assert not await shipper.aflush(0.2)
    finally:
        await shipper.aclose(timeout=0.2)
        for writer in connections:
            writer.transport.abort()
        listener.close()
        await listener.wait_closed()
    assert shipper.stats.abandoned + shipper.stats.dropped + shipper.stats.acknowledged >= 20_000


async def test_emit_from_many_threads_loses_nothing(scripted: ScriptedServer) -> None:
    shipper = LogShipper(scripted.target, service="inference", queue_size=50_000, flush_interval=0.02)
    threads = [
        threading.Thread(target=_emit_range, args=(shipper, base, base + 1000))
        for base in range(0, 8000, 1000)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert await shipper.aflush(10)
    await shipper.aclose()
    assert shipper.stats.accepted == 8000
    assert shipper.stats.dropped == 0
    assert len(scripted.service.stored) == 8000


async def test_a_shipper_on_a_connection_runs_on_the_callers_loop(scripted: ScriptedServer) -> None:
    async with connect(scripted.target) as connection:
        shipper = LogShipper(connection, service="storyteller", flush_interval=0.02)
        events = [_event(i) for i in range(30)]
        for event in events[:10]:
            shipper.emit(event)
        # emit from another thread reaches the loop's sender as well.
        await asyncio.to_thread(_emit_all, shipper, events[10:])
        assert await shipper.aflush(10)
        with pytest.raises(RuntimeError, match="aflush"):
            shipper.flush(1)
        await shipper.aclose()
    assert set(scripted.service.stored) == {event.event_id for event in events}


def test_a_shipper_on_a_connection_needs_a_running_loop() -> None:
    async def make_connection() -> object:
        return connect("127.0.0.1:1")

    loop = asyncio.new_event_loop()
    try:
        connection = loop.run_until_complete(make_connection())
        with pytest.raises(RuntimeError, match="event loop"):
            LogShipper(connection, service="storyteller")  # type: ignore[arg-type]
        loop.run_until_complete(connection.close())  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_a_synchronous_caller_uses_flush_and_close() -> None:
    async def serve(started: threading.Event, stop: asyncio.Event, holder: list[ScriptedServer]) -> None:
        server = ScriptedServer(_scripted_service())
        await server.start()
        holder.append(server)
        started.set()
        await stop.wait()
        await server.stop()

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: list[ScriptedServer] = []
    stop = asyncio.Event()
    runner = threading.Thread(target=loop.run_until_complete, args=(serve(started, stop, holder),))
    runner.start()
    try:
        started.wait(10)
        server = holder[0]
        with LogShipper(server.target, service="batch-job", flush_interval=0.02) as shipper:
            events = [_event(i) for i in range(10)]
            for event in events:
                shipper.emit(event)
            assert shipper.flush(10)
        assert shipper.stats.acknowledged == 10
        assert {event.event_id for event in events} <= set(server.service.stored)
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(10)
        loop.close()


async def test_an_outage_is_logged_once_as_a_warning_and_its_end_once(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.service.fail_streams = 5
    with caplog.at_level(logging.DEBUG, logger="modelplane.client"):
        shipper = LogShipper(
            scripted.target, service="inference", flush_interval=0.02, initial_backoff=0.01, max_backoff=0.02
        )
        _emit_range(shipper, 0, 10)
        assert await shipper.aflush(10)
        await shipper.aclose()
    records = [r for r in caplog.records if r.name.startswith("modelplane.client")]
    failures = [r for r in records if "log stream failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING] + [logging.DEBUG] * 4
    recovered = [r.getMessage() for r in records if "recovered" in r.getMessage()]
    assert recovered == [f"LogShipper {shipper.client_id}: log stream recovered after 5 failed attempts"]
    assert [r.levelno for r in records if "recovered" in r.getMessage()] == [logging.INFO]
