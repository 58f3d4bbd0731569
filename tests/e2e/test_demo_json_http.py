"""The demo's JSON-over-HTTP server (modelplane.demo.json_http) on loopback, through httpx and a raw socket:
JSON in and out on a kept-alive connection with the headers handed over, and every request it does not take
answered with a status and one line, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from modelplane.demo.json_http import MAX_BODY_BYTES, BadRequest, JsonHttpServer


async def handler(body: Any, headers: Mapping[str, str]) -> Any:
    if body == "refuse":
        raise BadRequest("not this one")
    if body == "crash":
        raise RuntimeError("the model fell over")
    return {"body": body, "slot": headers.get("x-modelplane-traffic-slot", "")}


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = JsonHttpServer(handler)
    yield await server.start()
    await server.aclose()


async def test_json_in_and_out_on_one_kept_alive_connection(address: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        first = await client.post(
            "/story", json={"prompt": "hi"}, headers={"x-modelplane-traffic-slot": "canary"}
        )
        second = await client.post("/story", json=[1, 2])
    assert first.json() == {"body": {"prompt": "hi"}, "slot": "canary"}
    assert second.json() == {"body": [1, 2], "slot": ""}
    assert first.headers["connection"] == second.headers["connection"] == "keep-alive"


async def test_requests_it_does_not_take_get_a_status_and_one_line(address: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        not_post = await client.get("/story")
        not_json = await client.post("/story", content=b"{nope")
        too_large = await client.post("/story", content=b"x" * (MAX_BODY_BYTES + 1))
        refused = await client.post("/story", json="refuse")
        crashed = await client.post("/story", json="crash")
    assert (not_post.status_code, not_post.json()) == (400, {"error": "only POST is served, not GET"})
    assert (not_json.status_code, not_json.json()) == (400, {"error": "the body must be JSON"})
    assert too_large.status_code == 413
    assert (refused.status_code, refused.json()) == (400, {"error": "not this one"})
    assert (crashed.status_code, crashed.json()) == (500, {"error": "RuntimeError: the model fell over"})


async def test_a_head_beyond_its_limit_is_refused(address: str) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST / HTTP/1.1\r\nx-filler: " + b"a" * 20_000 + b"\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
