"""Errors over HTTP: google.rpc.Status JSON with typed details, the HTTP status grpc-gateway gives each
code, and 400 with the field path for every request that cannot be read (bad JSON, unknown field, wrong
type, a field in the wrong place), never 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.server.http.statuses import HTTP_STATUS
from tests.support import StartServer

INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
VERSION = {
    "sourceUri": "openai:gpt-4o",
    "contextWindow": 128000,
    "maxOutputTokens": 4096,
    "capabilities": ["CAPABILITY_CHAT"],
    "pricing": {
        "currencyCode": "USD",
        "inputMicrosPerMillion": "2500000",
        "outputMicrosPerMillion": "10000000",
    },
}


@pytest.fixture
async def client(start_server: StartServer) -> AsyncIterator[httpx.AsyncClient]:
    server: ModelplaneServer = await start_server(http_address="127.0.0.1:0")
    assert server.http is not None
    async with httpx.AsyncClient(base_url=f"http://{server.http.target}", timeout=20) as http:
        yield http


def _detail(body: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in body["details"] if d["@type"] == kind)
    return found


def _field_paths(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert _detail(body, INFO)["domain"] == "modelplane"
    return [v["field"] for v in _detail(body, BAD_REQUEST)["fieldViolations"]]


def test_the_http_statuses_are_grpc_gateways() -> None:
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.ALREADY_EXISTS: 409,
        grpc.StatusCode.ABORTED: 409,
        grpc.StatusCode.FAILED_PRECONDITION: 400,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.INTERNAL: 500,
        grpc.StatusCode.OUT_OF_RANGE: 400,
    }
    assert {code: HTTP_STATUS[code] for code in expected} == expected
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"modelId": "chat", "model": {', "body"),
        (b"[1, 2]", "body"),
        (b"\xff\xfe", "body"),
        (b'{"modelId": "chat", "model": {"provider": "openai", "colour": "red"}}', "model.colour"),
        (b'{"modelId": "chat", "model": {"provider": 7}}', "model.provider"),
        (b'{"modelId": "chat", "model": {"provider": "openai", "labels": {"a": 3}}}', "model.labels['a']"),
        (b'{"modelId": "chat", "model": {"provider": "openai", "labels": []}}', "model.labels"),
        (b'{"modelId": "chat", "model": "openai"}', "model"),
        (b'{"modelId": ["chat"], "model": {"provider": "openai"}}', "model_id"),
    ],
)
async def test_a_body_that_cannot_be_read_is_400_with_its_field_path(
    client: httpx.AsyncClient, body: bytes, path: str
) -> None:
    response = await client.post("/v1/models", content=body, headers={"Content-Type": "application/json"})
    assert _field_paths(response) == [path]
    assert _detail(response.json(), INFO)["reason"] == "MALFORMED_REQUEST"


async def test_a_nested_wrong_type_names_its_index(client: httpx.AsyncClient) -> None:
    batch = {"batch": {"clientId": "c", "events": [{"eventId": "e1"}, {"eventId": "e2", "level": "LOUD"}]}}
    response = await client.post("/v1/logEvents:write", json=batch)
    assert _field_paths(response) == ["batch.events[1].level"]


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("pageSize=abc", "page_size"),
        ("page_size=1.5", "page_size"),
        ("colour=red", "colour"),
        ("pageSize=99999999999999", "page_size"),
    ],
)
async def test_a_query_that_cannot_be_read_is_400_with_its_field_path(
    client: httpx.AsyncClient, query: str, path: str
) -> None:
    assert _field_paths(await client.get(f"/v1/models?{query}")) == [path]


async def test_a_query_parameter_on_a_body_method_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models?request_id=x", json={"modelId": "chat", "model": {"provider": "o"}}
    )
    assert _field_paths(response) == ["request_id"]


async def test_the_service_checks_fields_as_over_grpc(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models", json={"modelId": "Not An Id", "model": {"provider": "openai"}})
    assert _field_paths(response) == ["model_id"]
    assert _detail(response.json(), INFO)["reason"] == "INVALID_FIELD"


async def test_codes_map_to_http_statuses(client: httpx.AsyncClient) -> None:
    create = {"modelId": "chat", "model": {"provider": "openai"}}
    first = await client.post("/v1/models", json=create)
    assert first.status_code == 200
    again = await client.post("/v1/models", json=create)
    assert again.status_code == 409
    assert _detail(again.json(), INFO)["reason"] == "MODEL_ALREADY_EXISTS"
    stale = await client.request("DELETE", "/v1/models/chat", params={"etag": "stale"})
    assert stale.status_code == 409
    assert _detail(stale.json(), INFO)["reason"] == "ETAG_MISMATCH"
    version = await client.post("/v1/models/chat/versions", json={"modelVersion": VERSION})
    assert version.status_code == 200, version.text
    busy = await client.delete("/v1/models/chat")
    assert busy.status_code == 400
    assert busy.json()["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert _detail(busy.json(), INFO)["reason"] == "MODEL_HAS_VERSIONS"
    forced = await client.delete("/v1/models/chat", params={"force": "true"})
    assert forced.status_code == 200, forced.text


async def test_a_typed_detail_of_the_project_comes_with_its_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models:resolve", json={"constraints": {"requiredCapabilities": ["CAPABILITY_CHAT"]}}
    )
    assert response.status_code == 404
    body = response.json()
    assert _detail(body, INFO)["reason"] == "NO_MATCHING_MODEL"
    assert _detail(body, "type.googleapis.com/modelplane.v1.ResolveModelFailure")["candidateCount"] == "0"


async def test_a_path_names_the_resource_and_the_body_the_rest(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/models", json={"modelId": "chat", "model": {"provider": "o"}})).is_success
    # The name in the body is the path's: the path wins, as in grpc-gateway.
    patched = await client.patch(
        "/v1/models/chat",
        json={"model": {"name": "models/other", "displayName": "Chat"}, "updateMask": "displayName"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["model"]["name"] == "models/chat"
    assert patched.json()["model"]["displayName"] == "Chat"
    # A percent-encoded path segment is decoded before it is a field value.
    missing = await client.get("/v1/models/no%2Dsuch")
    assert missing.status_code == 404
    assert "models/no-such" in missing.json()["message"]


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    wrong = await client.put("/v1/models/chat", json={})
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
    assert (await client.get("/not-the-api")).status_code == 404


async def test_a_body_over_the_message_limit_is_400(client: httpx.AsyncClient) -> None:
    huge = b'{"modelId": "chat", "model": {"description": "' + b"x" * (5 * 1024 * 1024) + b'"}}'
    response = await client.post("/v1/models", content=huge)
    assert _field_paths(response) == ["body"]
