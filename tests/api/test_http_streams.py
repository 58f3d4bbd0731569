"""Server streams over HTTP: Server-Sent Events with ids that resume a watch exactly (Last-Event-ID),
newline-delimited JSON on request, and the stream's error as its last event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.server.http import gateway
from modelplane.server.http.streams import ResumePoint, WatchIds
from modelplane.v1 import registry_pb2 as pb
from tests.support import StartServer

# Bounds the wait for an event that must come; not a performance expectation.
EVENT_TIMEOUT = 20.0


@dataclass
class Event:
    id: str
    event: str
    data: Any


@pytest.fixture
async def http_server(start_server: StartServer) -> ModelplaneServer:
    return await start_server(http_address="127.0.0.1:0")


@pytest.fixture
async def client(http_server: ModelplaneServer) -> AsyncIterator[httpx.AsyncClient]:
    assert http_server.http is not None
    async with httpx.AsyncClient(base_url=f"http://{http_server.http.target}", timeout=EVENT_TIMEOUT) as http:
        yield http


async def _events(response: httpx.Response) -> AsyncIterator[Event]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield Event(fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"]))
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def _changes(
    client: httpx.AsyncClient, count: int, *, headers: dict[str, str] | None = None, **params: str
) -> list[Event]:
    """The first `count` change events of a registry watch (progress marks left out)."""
    found: list[Event] = []
    async with asyncio.timeout(EVENT_TIMEOUT):
        async with client.stream("GET", "/v1/models:watch", params=params, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event in _events(response):
                if "change" in event.data:
                    found.append(event)
                if len(found) == count:
                    break
    return found


async def _create_models(client: httpx.AsyncClient, *names: str) -> None:
    for name in names:
        response = await client.post("/v1/models", json={"modelId": name, "model": {"provider": "openai"}})
        assert response.status_code == 200, response.text


async def test_a_watch_is_server_sent_events_whose_ids_resume_it(client: httpx.AsyncClient) -> None:
    await _create_models(client, "one", "two", "three")
    events = await _changes(client, 3, startRevision="1")
    assert [e.data["change"]["resource"] for e in events] == ["models/one", "models/two", "models/three"]
    revisions = [int(e.data["change"]["revision"]) for e in events]
    assert [e.id for e in events] == [f"{r}:1" for r in revisions]
    # A browser's EventSource sends the last id it saw when it reconnects: the watch goes on after it.
    resumed = await _changes(client, 2, headers={"Last-Event-ID": events[0].id})
    assert [e.data["change"]["resource"] for e in resumed] == ["models/two", "models/three"]


async def test_a_progress_id_resumes_after_its_revision(client: httpx.AsyncClient) -> None:
    await _create_models(client, "one")
    async with asyncio.timeout(EVENT_TIMEOUT):
        async with client.stream("GET", "/v1/models:watch") as response:
            progress = await anext(e async for e in _events(response) if "progress" in e.data)
    assert progress.id == progress.data["progress"]["revision"]
    await _create_models(client, "two")
    resumed = await _changes(client, 1, headers={"Last-Event-ID": progress.id})
    assert resumed[0].data["change"]["resource"] == "models/two"


async def test_ndjson_on_request(client: httpx.AsyncClient) -> None:
    await _create_models(client, "one", "two")
    lines: list[dict[str, Any]] = []
    headers = {"Accept": "application/x-ndjson"}
    async with asyncio.timeout(EVENT_TIMEOUT):
        async with client.stream("GET", "/v1/models:watch?start_revision=1", headers=headers) as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            async for line in response.aiter_lines():
                lines.append(json.loads(line))
                if len(lines) == 2:
                    break
    assert [line["result"]["change"]["resource"] for line in lines] == ["models/one", "models/two"]


async def test_a_bad_last_event_id_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models:watch", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 400
    violations = next(d for d in response.json()["details"] if "fieldViolations" in d)["fieldViolations"]
    assert [v["field"] for v in violations] == ["start_revision"]


async def test_a_tail_streams_new_events_and_ends_with_an_error_event(
    client: httpx.AsyncClient, http_server: ModelplaneServer
) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "eventId": "tail-1",
        "eventTime": now,
        "service": "checkout",
        "level": "LOG_LEVEL_INFO",
        "message": "hello",
    }
    got: list[Event] = []

    async def tail() -> None:
        async with client.stream("GET", "/v1/logEvents:tail") as response:
            assert response.status_code == 200
            async for item in _events(response):
                got.append(item)
                if item.event == "error":
                    return

    reader = asyncio.create_task(tail())
    async with asyncio.timeout(EVENT_TIMEOUT):
        while not got:
            batch = {"clientId": "t", "sequence": "1", "events": [event]}
            written = await client.post("/v1/logEvents:write", json={"batch": batch})
            assert written.status_code == 200, written.text
            await asyncio.sleep(0.2)
        await http_server.stop(grace=1.0)
        await reader
    assert got[0].data["events"][0]["eventId"] == "tail-1"
    assert got[0].id == ""
    assert got[-1].event == "error"
    assert got[-1].data["code"] == 14
    reasons = [d.get("reason") for d in got[-1].data["details"]]
    assert "SHUTTING_DOWN" in reasons


def test_watch_ids_skip_what_a_resumed_client_has() -> None:
    def change(revision: int) -> pb.WatchModelsResponse:
        return pb.WatchModelsResponse(change=pb.ModelChange(revision=revision))

    ids = WatchIds(ResumePoint.parse("7:2"))
    seen = [ids.id_of(change(r)) for r in (7, 7, 7, 8)]
    assert seen == [None, None, "7:3", "8:1"]
    assert ResumePoint.parse("9") == ResumePoint(10, 0)
    fresh = WatchIds(None)
    assert fresh.id_of(pb.WatchModelsResponse(progress=pb.WatchProgress(revision=4))) == "4"


async def test_an_idle_stream_sends_keep_alive_comments(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "FIRST_MESSAGE_WAIT", 0.05)
    monkeypatch.setattr(gateway, "KEEPALIVE_INTERVAL", 0.05)
    async with asyncio.timeout(EVENT_TIMEOUT):
        async with client.stream("GET", "/v1/logEvents:tail") as response:
            assert response.status_code == 200
            # Nothing is logged: the only lines are comments, which EventSource ignores.
            line = await anext(line async for line in response.aiter_lines() if line)
    assert line == ": keep-alive"


@pytest.mark.parametrize("read_first_event", [True, False])
async def test_a_client_that_leaves_ends_the_grpc_stream(
    http_server: ModelplaneServer, monkeypatch: pytest.MonkeyPatch, read_first_event: bool
) -> None:
    # Without a first message in time, the response starts at once, before any event.
    monkeypatch.setattr(gateway, "FIRST_MESSAGE_WAIT", 0.01)
    assert http_server.http is not None
    host, _, port = http_server.http.target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /v1/models:watch HTTP/1.1\r\nHost: {http_server.http.target}\r\n\r\n".encode())
    async with asyncio.timeout(EVENT_TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        if read_first_event:
            await reader.readuntil(b"\n\n")
    writer.close()
    await writer.wait_closed()
    labels = {
        "grpc_type": "server_stream",
        "grpc_service": "modelplane.v1.ModelRegistryService",
        "grpc_method": "WatchModels",
        "grpc_code": "CANCELLED",
    }
    registry = http_server.metrics.registry
    async with asyncio.timeout(EVENT_TIMEOUT):
        while not registry.get_sample_value("grpc_server_handled_total", labels):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
