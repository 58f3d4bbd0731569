"""The OTLP exporter of stored events: reads the commit feed from a position kept in a file and sends the
events to a real OTLP/gRPC receiver, as log records that map back to the same events; resumes where it
stopped, retries a receiver that is away, follows new commits, and refuses a position the feed no longer
keeps."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from modelplane.client import Connection, connect
from modelplane.server.app import ModelplaneServer
from modelplane.server.logs.otlp_export import ExportError, OtlpLogExporter, PositionFile
from modelplane.server.logs.otlp_records import map_request
from modelplane.v1 import common_pb2
from modelplane.v1 import logs_pb2 as mp_logs
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support.processes import environment, modelplane_command

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def event(message: str, **fields: Any) -> mp_logs.LogEvent:
    made = mp_logs.LogEvent(
        event_id=uuid.uuid4().hex, service="shop", level=mp_logs.LOG_LEVEL_INFO, message=message, **fields
    )
    made.event_time.GetCurrentTime()
    return made


@pytest.fixture
async def connection(server: ModelplaneServer) -> AsyncIterator[Connection]:
    async with connect(server.target) as conn:
        yield conn


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with otlp_receiver() as running:
        yield running


@pytest.fixture
async def stub(receiver: OtlpReceiver) -> AsyncIterator[logs_service_pb2_grpc.LogsServiceStub]:
    async with grpc.aio.insecure_channel(receiver.endpoint.removeprefix("http://")) as channel:
        yield logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]


def exporter(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub, path: Path
) -> OtlpLogExporter:
    assert server.logs is not None
    return OtlpLogExporter(
        server.logs, stub, PositionFile(path), filter_text='service = "shop"', poll_interval=0.05
    )


async def test_events_go_to_the_receiver_as_records_that_map_back_to_them(
    server: ModelplaneServer,
    connection: Connection,
    receiver: OtlpReceiver,
    stub: logs_service_pb2_grpc.LogsServiceStub,
    tmp_path: Path,
) -> None:
    inference = event(
        "chat ok",
        links=common_pb2.EventLinks(trace_id=TRACE_ID, span_id=SPAN_ID, request_id="req-1"),
        inference=mp_logs.InferencePayload(
            provider="openai", input_tokens=1000, output_tokens=250, status=mp_logs.INFERENCE_STATUS_OK
        ),
    )
    sent = [inference, event("plain")]
    await connection.logs.write_log_events(events=sent)
    running = exporter(server, stub, tmp_path / "position.json")
    stats = await running.run(await running.start_position(from_oldest=True), follow=False)
    assert (stats.exported, stats.rejected, stats.requests) == (2, 0, 1)
    records = receiver.log_records()
    assert [resource["service.name"] for resource, _ in records] == ["shop", "shop"]
    # What the receiver got maps back to the events as they were stored: the receiver of modelplane reads
    # what the exporter of modelplane writes.
    (request,) = receiver.log_requests
    mapped = map_request(request, 1000)
    assert mapped.rejected == ()
    by_id = {e.event_id: e for e in mapped.events}
    assert set(by_id) == {e.event_id for e in sent}
    back = by_id[inference.event_id]
    assert (back.links.trace_id, back.links.span_id, back.links.request_id) == (TRACE_ID, SPAN_ID, "req-1")
    assert back.payload is not None
    assert (back.payload.input_tokens, back.payload.output_tokens) == (1000, 250)  # type: ignore[union-attr]
    assert by_id[sent[1].event_id].message == "plain"


async def test_a_second_run_resumes_where_the_first_stopped(
    server: ModelplaneServer,
    connection: Connection,
    receiver: OtlpReceiver,
    stub: logs_service_pb2_grpc.LogsServiceStub,
    tmp_path: Path,
) -> None:
    position = tmp_path / "position.json"
    await connection.logs.write_log_events(events=[event("first")])
    first = exporter(server, stub, position)
    await first.run(await first.start_position(from_oldest=True), follow=False)
    assert position.exists()
    await connection.logs.write_log_events(events=[event("second"), event("third")])
    second = exporter(server, stub, position)
    stats = await second.run(await second.start_position(from_oldest=True), follow=False)
    assert stats.exported == 2
    assert [r.body.string_value for _, r in receiver.log_records()] == ["first", "second", "third"]


async def test_a_receiver_that_is_away_is_tried_again(
    server: ModelplaneServer,
    connection: Connection,
    receiver: OtlpReceiver,
    stub: logs_service_pb2_grpc.LogsServiceStub,
    tmp_path: Path,
) -> None:
    receiver.refuse_logs = 2
    await connection.logs.write_log_events(events=[event("late")])
    running = exporter(server, stub, tmp_path / "position.json")
    stats = await running.run(await running.start_position(from_oldest=True), follow=False)
    assert stats.exported == 1
    assert receiver.refuse_logs == 0
    assert [r.body.string_value for _, r in receiver.log_records()] == ["late"]


async def test_following_sends_what_commits_later(
    server: ModelplaneServer,
    connection: Connection,
    receiver: OtlpReceiver,
    stub: logs_service_pb2_grpc.LogsServiceStub,
    tmp_path: Path,
) -> None:
    running = exporter(server, stub, tmp_path / "position.json")
    task = asyncio.create_task(running.run(await running.start_position(from_oldest=False), follow=True))
    try:
        await connection.logs.write_log_events(events=[event("live")])
        await receiver.wait_for(lambda: len(receiver.log_records()) == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert receiver.log_records()[0][1].body.string_value == "live"


async def test_a_position_the_feed_no_longer_keeps_is_refused(
    server: ModelplaneServer,
    connection: Connection,
    stub: logs_service_pb2_grpc.LogsServiceStub,
    database_url: str,
    tmp_path: Path,
) -> None:
    position = tmp_path / "position.json"
    await connection.logs.write_log_events(events=[event("one")])
    first = exporter(server, stub, position)
    await first.run(await first.start_position(from_oldest=True), follow=False)
    await connection.logs.write_log_events(events=[event("two")])
    await connection.logs.write_log_events(events=[event("three")])
    # Maintenance drops feed entries older than a day; here the entry of "two" goes at once.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "DELETE FROM log_tail_batches WHERE number < (SELECT max(number) FROM log_tail_batches)"
        )
    finally:
        await conn.close()
    with pytest.raises(ExportError, match="older than the feed keeps"):
        await exporter(server, stub, position).start_position(from_oldest=True)


def test_a_broken_position_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "position.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ExportError, match="does not hold an export position"):
        PositionFile(path).load()


def _export_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*modelplane_command(), "export-otlp", *args],
        capture_output=True,
        text=True,
        env=environment(env),
        timeout=60,
        check=False,
    )


async def test_the_export_otlp_command_exports_and_resumes(
    server: ModelplaneServer,
    connection: Connection,
    receiver: OtlpReceiver,
    database_url: str,
    tmp_path: Path,
) -> None:
    position = str(tmp_path / "position.json")
    await connection.logs.write_log_events(events=[event("by command")])
    # The endpoint from the standard variable, as an OpenTelemetry SDK would read it.
    args = (
        "--database-url",
        database_url,
        "--position-file",
        position,
        "--from-oldest",
        "--filter",
        'service = "shop"',
    )
    first = await asyncio.to_thread(
        _export_command, *args, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "exported 1 events in 1 requests (0 rejected by the receiver)"
    again = await asyncio.to_thread(_export_command, *args, "--endpoint", receiver.endpoint)
    assert again.stdout.strip() == "exported 0 events in 0 requests (0 rejected by the receiver)"
    assert [r.body.string_value for _, r in receiver.log_records()] == ["by command"]


async def test_the_export_otlp_command_names_a_bad_endpoint(database_url: str, tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        _export_command,
        "--database-url",
        database_url,
        "--position-file",
        str(tmp_path / "p"),
        "--endpoint",
        "collector:4317",
    )
    assert result.returncode != 0
    assert "must be http://HOST:PORT or https://HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
