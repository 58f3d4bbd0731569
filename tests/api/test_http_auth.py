"""Over HTTP, the bearer token and the roles work as over gRPC, because they are the same calls: 401 without
or with a bad token, 403 for a reader's write, the request id echoed, health and the OpenAPI document open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from tests.support import StartServer

MODEL = {"modelId": "chat", "model": {"provider": "openai"}}


@pytest.fixture
async def auth_http(start_server: StartServer) -> ModelplaneServer:
    return await start_server(auth=True, http_address="127.0.0.1:0")


@pytest.fixture
async def secrets(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {role: (await create_token(conn, f"http-{role}", role))[1] for role in ("admin", "reader")}
    finally:
        await conn.close()


@pytest.fixture
async def client(auth_http: ModelplaneServer) -> AsyncIterator[httpx.AsyncClient]:
    assert auth_http.http is not None
    async with httpx.AsyncClient(base_url=f"http://{auth_http.http.target}", timeout=20) as http:
        yield http


def _reason(response: httpx.Response) -> str:
    details = response.json()["details"]
    info = next(d for d in details if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
    assert info["domain"] == "modelplane"
    reason: str = info["reason"]
    return reason


async def test_no_token_is_401_with_token_missing(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["code"] == 16
    assert _reason(response) == "TOKEN_MISSING"
    assert response.headers["x-request-id"]


# The last is not ASCII, which gRPC metadata cannot carry: it is dropped, and the call has no token.
@pytest.mark.parametrize(
    "authorization", [b"Bearer mp_" + b"A" * 43, b"Basic dXNlcjpwYXNz", "Bearer é".encode()]
)
async def test_a_bad_token_is_401(client: httpx.AsyncClient, authorization: bytes) -> None:
    response = await client.get("/v1/models", headers={b"Authorization": authorization})
    assert response.status_code == 401
    assert _reason(response) in ("TOKEN_INVALID", "TOKEN_MISSING")


async def test_a_reader_may_read_but_not_write(client: httpx.AsyncClient, secrets: dict[str, str]) -> None:
    reader = {"Authorization": f"Bearer {secrets['reader']}"}
    assert (await client.get("/v1/models", headers=reader)).status_code == 200
    response = await client.post("/v1/models", json=MODEL, headers=reader)
    assert response.status_code == 403
    assert response.json()["code"] == 7
    assert _reason(response) == "ROLE_NOT_ALLOWED"


async def test_an_admin_writes_and_the_request_id_comes_back(
    client: httpx.AsyncClient, secrets: dict[str, str]
) -> None:
    admin = {"Authorization": f"Bearer {secrets['admin']}", "X-Request-Id": "http-test-1"}
    response = await client.post("/v1/models", json=MODEL, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["name"] == "models/chat"
    assert response.headers["x-request-id"] == "http-test-1"


async def test_a_stream_without_a_token_is_401_before_it_starts(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models:watch")
    assert response.status_code == 401
    assert _reason(response) == "TOKEN_MISSING"


async def test_health_and_the_openapi_document_need_no_token(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "SERVING"}
    document = await client.get("/openapi.json")
    assert document.status_code == 200
    assert "/v1/models/{model}" in document.json()["paths"]
