"""LogService through a real server: acknowledgement after commit, resends after a lost server, bad
input with field paths, the tail, control-plane events and the metrics endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.server.app import ModelplaneServer
from modelplane.v1 import common_pb2, logs_pb2_grpc, registry_pb2_grpc
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import registry_pb2 as rpb
from tests.support import StartServer
from tests.support.rich_errors import rich


def event(i: int, *, service: str = "llm-client", level: int = lpb.LOG_LEVEL_INFO) -> lpb.LogEvent:
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    return lpb.LogEvent(
        event_id=f"{uuid.uuid4()}-{i}",
        event_time=now,
        service=service,
        level=level,  # type: ignore[arg-type]
        message=f"call {i}",
        links=common_pb2.EventLinks(trace_id="0af7651916cd43dd8448eb211c80319c"),
        attributes={"region": "eu"},
        inference=lpb.InferencePayload(
            provider="local",
            model_version="models/chat/versions/1",
            input_tokens=10,
            output_tokens=5,
            latency=duration_pb2.Duration(nanos=2_000_000),
            status=lpb.INFERENCE_STATUS_OK,
        ),
    )


async def stored(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM log_events WHERE service = 'llm-client'"))
    finally:
        await conn.close()


async def test_an_unacknowledged_batch_resent_after_the_server_died_is_not_duplicated(
    start_server: StartServer, database_url: str
) -> None:
    first = await start_server()
    batch = lpb.LogBatch(client_id="shipper-1", sequence=1, events=[event(i) for i in range(20)])
    async with grpc.aio.insecure_channel(first.target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        never = asyncio.Event()

        async def one_batch() -> AsyncIterator[lpb.StreamLogEventsRequest]:
            yield lpb.StreamLogEventsRequest(batch=batch)
            await never.wait()

        call = stub.StreamLogEvents(one_batch())
        # The batch commits; its acknowledgement is never read: the server goes away first.
        for _ in range(500):
            if await stored(database_url) == 20:
                break
            await asyncio.sleep(0.02)
        await first.stop(grace=0)
        call.cancel()
    second = await start_server()
    async with grpc.aio.insecure_channel(second.target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)

        async def resend() -> AsyncIterator[lpb.StreamLogEventsRequest]:
            yield lpb.StreamLogEventsRequest(batch=batch)
            yield lpb.StreamLogEventsRequest(
                batch=lpb.LogBatch(client_id="shipper-1", sequence=2, events=[event(100)])
            )

        acks = [response.ack async for response in stub.StreamLogEvents(resend())]
        stats = await stub.GetIngestionStats(lpb.GetIngestionStatsRequest(client_id="shipper-1"))
    assert acks[-1].sequence == 2
    assert sum(a.accepted for a in acks) == 1
    assert sum(a.duplicates for a in acks) == 20
    assert await stored(database_url) == 21
    (client,) = stats.clients
    assert (client.received, client.accepted, client.duplicates, client.sequence_gaps) == (41, 21, 20, 0)


async def test_a_bad_event_is_refused_with_its_path_and_nothing_of_the_batch_is_stored(
    channel: grpc.aio.Channel, database_url: str
) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)
    bad = event(1, level=lpb.LOG_LEVEL_UNSPECIFIED)
    worse = event(2)
    worse.attributes.update({f"k{i}": "v" for i in range(20)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[event(0), bad])))
    error = rich(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_paths == ["batch.events[1].level"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[worse])))
    assert rich(caught.value).field_paths == ["batch.events[0].attributes"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[event(0)] * 1001)))
    assert rich(caught.value).reason == "BATCH_TOO_LARGE"
    assert await stored(database_url) == 0


async def test_a_bad_batch_ends_the_stream_after_the_good_ones_commit(channel: grpc.aio.Channel) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)

    async def batches() -> AsyncIterator[lpb.StreamLogEventsRequest]:
        yield lpb.StreamLogEventsRequest(batch=lpb.LogBatch(client_id="c", sequence=1, events=[event(1)]))
        # Wait for the first acknowledgement, so the two batches do not commit as one group.
        await first_ack.wait()
        yield lpb.StreamLogEventsRequest(
            batch=lpb.LogBatch(client_id="c", sequence=2, events=[event(2, service="Bad Name")])
        )

    first_ack = asyncio.Event()
    acks: list[lpb.LogAck] = []

    async def read_acks() -> None:
        async for response in stub.StreamLogEvents(batches()):
            acks.append(response.ack)
            first_ack.set()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_acks()
    error = rich(caught.value)
    assert [a.sequence for a in acks] == [1]
    assert error.field_paths == ["batch.events[0].service"]
    assert error.metadata["sequence"] == "2"


async def test_tail_streams_matching_events_as_they_commit(channel: grpc.aio.Channel) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)
    tail = stub.TailLogEvents(lpb.TailLogEventsRequest(filter="level = ERROR AND attributes.region = eu"))
    # The tail starts at the commit position when the call arrives; let it get there first.
    await asyncio.sleep(0.3)
    await stub.WriteLogEvents(
        lpb.WriteLogEventsRequest(
            batch=lpb.LogBatch(events=[event(1), event(2, level=lpb.LOG_LEVEL_ERROR), event(3)])
        )
    )
    response = await asyncio.wait_for(tail.read(), timeout=10)
    tail.cancel()
    assert isinstance(response, lpb.TailLogEventsResponse)
    assert [e.message for e in response.events] == ["call 2"]
    assert response.events[0].inference.latency.nanos == 2_000_000
    assert response.events[0].HasField("ingest_time")


async def test_query_pages_newest_first_and_registry_changes_appear_as_events(
    channel: grpc.aio.Channel,
) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)
    await stub.WriteLogEvents(
        lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[event(i) for i in range(5)]))
    )
    first = await stub.QueryLogEvents(lpb.QueryLogEventsRequest(filter='service = "llm-client"', page_size=3))
    rest = await stub.QueryLogEvents(
        lpb.QueryLogEventsRequest(
            filter='service = "llm-client"', page_size=3, page_token=first.next_page_token
        )
    )
    times = [(e.event_time.ToDatetime(), e.event_id) for e in [*first.events, *rest.events]]
    assert len(times) == 5
    assert rest.next_page_token == ""
    assert times == sorted(times, reverse=True)
    registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    await registry.CreateModel(rpb.CreateModelRequest(model_id="logged", model=rpb.Model(provider="local")))
    changes = await stub.QueryLogEvents(lpb.QueryLogEventsRequest(filter="kind = CONTROL_PLANE_CHANGE"))
    assert [e.control_plane_change.resource for e in changes.events] == ["models/logged"]
    assert changes.events[0].control_plane_change.action == "created"


async def test_ingestion_counters_are_on_the_metrics_endpoint(start_server: StartServer) -> None:
    server: ModelplaneServer = await start_server(metrics_address="127.0.0.1:0")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = logs_pb2_grpc.LogServiceStub(channel)
        batch = lpb.LogBatch(client_id="metered", sequence=3, dropped_since_last=7, events=[event(1)])
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=batch))
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=batch))
    url = f"http://127.0.0.1:{server.metrics.endpoint_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'modelplane_log_events_accepted_total{client_id="metered"} 1.0' in text
    assert 'modelplane_log_events_duplicates_total{client_id="metered"} 1.0' in text
    assert 'modelplane_log_events_dropped_by_clients_total{client_id="metered"} 7.0' in text
    assert 'modelplane_log_batch_sequence_gaps_total{client_id="metered"} 2.0' in text


async def test_aggregates_are_exact_through_the_api(channel: grpc.aio.Channel) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)
    # Version 1: latencies 1..100 ms, costs 1..100 micros, odd ones in USD and even ones in EUR.
    events = []
    for i in range(1, 101):
        item = event(i)
        item.inference.latency.CopyFrom(duration_pb2.Duration(nanos=i * 1_000_000))
        item.inference.cost.CopyFrom(common_pb2.Money(currency_code="USD" if i % 2 else "EUR", micros=i))
        events.append(item)
    # Version 2: one call without a latency, counted but not among the latencies.
    unmeasured = event(0)
    unmeasured.inference.ClearField("latency")
    unmeasured.inference.model_version = "models/chat/versions/2"
    events.append(unmeasured)
    await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=events)))
    request = lpb.AggregateLogEventsRequest(
        filter="kind = INFERENCE", group_by=[lpb.LOG_GROUP_BY_MODEL_VERSION], currency_code="EUR"
    )
    v1, v2 = (await stub.AggregateLogEvents(request)).groups
    assert v1.model_version == "models/chat/versions/1"
    assert (v1.count, v1.latency_count, v1.input_tokens) == (100, 100, 1000)
    # Nearest rank: p95 is the smallest latency with 95 of the 100 at or below it.
    percentiles = (
        v1.latency_p50.ToMicroseconds(),
        v1.latency_p95.ToMicroseconds(),
        v1.latency_p99.ToMicroseconds(),
    )
    assert percentiles == (50_000, 95_000, 99_000)
    assert (v1.cost.currency_code, v1.cost.micros) == ("EUR", sum(range(2, 101, 2)))
    assert (v2.model_version, v2.count, v2.latency_count) == ("models/chat/versions/2", 1, 0)
    assert not v2.HasField("latency_p50")


def _forgeries() -> list[tuple[lpb.LogEvent, str]]:
    """Events a client could use to pass for the control plane, and the field each is refused by."""
    change = event(0)
    change.control_plane_change.CopyFrom(
        lpb.ControlPlaneChange(resource="models/chat/aliases/prod", action="updated", actor="sec-admin")
    )
    as_server = event(1, service="modelplane")
    server_id = event(2)
    server_id.event_id = "revision-999-0"
    return [
        (change, "control_plane_change"),
        (as_server, "service"),
        (server_id, "event_id"),
    ]


async def test_a_client_cannot_write_what_passes_for_a_control_plane_event(channel: grpc.aio.Channel) -> None:
    # Only the server writes control-plane events, under its service name and its event-id namespace:
    # neither ingestion method stores a client's imitation, whichever role the client has.
    stub = logs_pb2_grpc.LogServiceStub(channel)
    forged = [item for item, _ in _forgeries()]
    whole = lpb.ControlPlaneChange(
        resource="models/chat/aliases/prod", action="updated", actor="sec-admin", revision=999
    )
    complete = event(3, service="modelplane")
    complete.event_id = "revision-999-0"
    complete.control_plane_change.CopyFrom(whole)
    for item, field in [*_forgeries(), (complete, "")]:
        paths = (
            [f"batch.events[0].{name}" for name in ("event_id", "service", "control_plane_change")]
            if not field
            else [f"batch.events[0].{field}"]
        )
        with pytest.raises(grpc.aio.AioRpcError) as write:
            await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[item])))
        error = rich(write.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert sorted(error.field_paths) == sorted(paths), error

        async def one(item: lpb.LogEvent = item) -> AsyncIterator[lpb.StreamLogEventsRequest]:
            yield lpb.StreamLogEventsRequest(batch=lpb.LogBatch(client_id="c", sequence=1, events=[item]))

        with pytest.raises(grpc.aio.AioRpcError) as stream:
            async for _ in stub.StreamLogEvents(one()):
                pass
        error = rich(stream.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert sorted(error.field_paths) == sorted(paths), error
    # Among valid events (the hot path) and beside an invalid one (the long way) alike.
    too_long = event(4)
    too_long.message = "x" * 5000
    for batch in ([event(5), *forged], [too_long, *forged]):
        with pytest.raises(grpc.aio.AioRpcError) as mixed:
            await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=batch)))
        refused = rich(mixed.value).field_paths
        assert [p for p in refused if not p.endswith(".message")] == [
            f"batch.events[{i}].{field}" for i, (_, field) in enumerate(_forgeries(), start=1)
        ]
    registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    await registry.CreateModel(rpb.CreateModelRequest(model_id="real", model=rpb.Model(provider="local")))
    found = await stub.QueryLogEvents(
        lpb.QueryLogEventsRequest(filter='kind = CONTROL_PLANE_CHANGE OR service = "modelplane"')
    )
    assert [(e.service, e.control_plane_change.resource) for e in found.events] == [
        ("modelplane", "models/real")
    ]
    assert found.events[0].event_id.startswith("revision-")
    assert await stored_anything(channel) == 0


async def stored_anything(channel: grpc.aio.Channel) -> int:
    """How many events a client stored (every event but the control plane's own)."""
    stub = logs_pb2_grpc.LogServiceStub(channel)
    page = await stub.QueryLogEvents(lpb.QueryLogEventsRequest(filter='service != "modelplane"'))
    return len(page.events)


def _big(i: int, **fields: str) -> lpb.LogEvent:
    """An event of some 8 KB: a message of the longest allowed, in two-byte characters."""
    item = event(i, service="bulky")
    item.message = "é" * 4096
    for name, value in fields.items():
        setattr(item.links, name, value)
    return item


async def _write_big(stub: logs_pb2_grpc.LogServiceAsyncStub, events: list[lpb.LogEvent]) -> None:
    # In requests under the 4 MiB a message may have.
    for start in range(0, len(events), 250):
        batch = lpb.LogBatch(events=events[start : start + 250])
        await stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=batch))


async def test_a_page_of_big_events_ends_early_under_the_message_limit(channel: grpc.aio.Channel) -> None:
    # 1000 events of 8 KB are 8 MB: a page of 1000 is cut where it would pass the response budget, and
    # its next_page_token goes on from there, so every event comes once.
    stub = logs_pb2_grpc.LogServiceStub(channel)
    await _write_big(stub, [_big(i) for i in range(1000)])
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = await stub.QueryLogEvents(
            lpb.QueryLogEventsRequest(filter='service = "bulky"', page_size=1000, page_token=token)
        )
        seen += [e.event_id for e in page.events]
        sizes.append(page.ByteSize())
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 1000
    assert len(sizes) > 1
    assert max(sizes) < 4 * 1024 * 1024 * 3 // 4, sizes


async def test_a_tail_of_big_events_sends_messages_under_the_limit(channel: grpc.aio.Channel) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)
    tail = stub.TailLogEvents(lpb.TailLogEventsRequest(filter='service = "bulky"'))
    await asyncio.sleep(0.5)  # the tail's position is taken when the call starts
    # Four batches committed at once reach the tail in one round: 1000 events, 8 MB.
    events = [_big(i) for i in range(1000)]
    await asyncio.gather(
        *(
            stub.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=events[s : s + 250])))
            for s in range(0, 1000, 250)
        )
    )
    received: list[str] = []
    while len(received) < 1000:
        message = await asyncio.wait_for(tail.read(), timeout=30)
        assert isinstance(message, lpb.TailLogEventsResponse)
        assert message.ByteSize() < 4 * 1024 * 1024 * 3 // 4
        received += [e.event_id for e in message.events]
    tail.cancel()
    assert sorted(received) == sorted(e.event_id for e in events)


async def test_groups_beyond_one_response_are_refused_with_advice(channel: grpc.aio.Channel) -> None:
    # 1500 groups keyed by three names of 256 four-byte characters each: some 4.7 MB of groups.
    stub = logs_pb2_grpc.LogServiceStub(channel)
    names = [f"{i:04d}" + "\U0001d54f" * 252 for i in range(1500)]
    await _write_big(
        stub, [_big(i, deployment=name, policy=name, request_id=str(i)) for i, name in enumerate(names)]
    )
    request = lpb.AggregateLogEventsRequest(
        filter='service = "bulky"', group_by=[lpb.LOG_GROUP_BY_DEPLOYMENT, lpb.LOG_GROUP_BY_POLICY]
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.AggregateLogEvents(request)
    error = rich(raised.value)
    assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "TOO_MANY_GROUPS"), error
    assert "narrow the filter" in error.message
    # What the message advises: grouped by fewer keys, they fit.
    del request.group_by[1:]
    groups = (await stub.AggregateLogEvents(request)).groups
    assert [g.deployment for g in groups] == names
