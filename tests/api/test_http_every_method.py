"""Every RPC over HTTP/JSON answers what the same request answers over gRPC, on the same server.

The methods come from the descriptors of the server's own services, so a new RPC fails here until it has
an HTTP route (and a minimal call in tests/support/minimal_calls.py) or is listed as not offered, with the
reason. The HTTP request is written from the request message by the test's own reading of the route
(tests/support/http_calls.py), not by the server's transcoder, and the answers are compared whole: the
response message, or the google.rpc.Status with every detail, and the HTTP status of its code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import descriptor_pool, field_mask_pb2, json_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2  # type: ignore[import-untyped]

from modelplane.server.app import MODELPLANE_SERVICES, ModelplaneServer, build_server
from modelplane.server.config import ServerConfig
from modelplane.server.http.routes import Route, RouteTable
from modelplane.server.http.statuses import HTTP_STATUS
from modelplane.server.store.urls import with_database
from modelplane.v1 import registry_pb2 as pb
from tests.support import rich_status
from tests.support.http_calls import http_call, send
from tests.support.live_server import create_database, drop_database
from tests.support.minimal_calls import MINIMAL_CALLS

module_loop = pytest.mark.asyncio(loop_scope="module")

SERVICES: list[ServiceDescriptor] = [
    descriptor_pool.Default().FindServiceByName(name) for name in MODELPLANE_SERVICES
]
METHODS: list[MethodDescriptor] = [method for service in SERVICES for method in service.methods]
TABLE = RouteTable.of(SERVICES)
ROUTES: dict[str, Route] = {}
for _route in TABLE:
    ROUTES.setdefault(_route.method.full_name, _route)

# The RPCs HTTP does not carry, each with the form to use instead; the README says the same.
NOT_OFFERED = {
    "modelplane.v1.GuardrailService.CheckStream": "CheckContent",
    "modelplane.v1.LogService.StreamLogEvents": "WriteLogEvents",
}
CALL_TIMEOUT = 20.0


@dataclass
class Both:
    """The module's server with HTTP on, a gRPC channel and an HTTP client to it."""

    server: ModelplaneServer
    channel: grpc.aio.Channel
    http: httpx.AsyncClient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def both(admin_url: str, template_database: str) -> AsyncIterator[Both]:
    name = await create_database(admin_url, template_database)
    server = build_server(
        ServerConfig(
            address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            database_url=with_database(admin_url, name),
            auth=False,
            health_probe_interval=0.1,
            shutdown_grace=1.0,
            watch_progress_interval=0.2,
        )
    )
    await server.start()
    try:
        await server.wait_serving(timeout=30)
        assert server.http is not None
        channel = grpc.aio.insecure_channel(server.target)
        async with httpx.AsyncClient(base_url=f"http://{server.http.target}", timeout=CALL_TIMEOUT) as client:
            yield Both(server, channel, client)
        await channel.close(None)
    finally:
        await server.stop(grace=0)
        await drop_database(admin_url, name)


def test_every_rpc_has_a_route_or_is_listed_as_not_offered() -> None:
    for method in METHODS:
        if method.full_name in NOT_OFFERED:
            assert method.full_name not in ROUTES, f"{method.full_name} has a route: drop it from NOT_OFFERED"
            assert method.client_streaming, f"{method.full_name} could be offered: add its google.api.http"
            continue
        assert method.full_name in ROUTES, (
            f"{method.full_name} has no google.api.http annotation: add one, or list it in NOT_OFFERED"
        )
    assert {u.method.full_name for u in TABLE.unrouted} == set(NOT_OFFERED)


def test_no_two_routes_take_the_same_requests() -> None:
    """Each route's template, with its variables filled, is matched by that route first and by no other."""
    for route in TABLE:
        sample = route.template.text
        for variable, pattern in zip(route.template.variables, route.template.patterns, strict=True):
            filled = "/".join("x1" if part == "*" else part for part in pattern.split("/"))
            sample = sample.replace("{" + variable + ("=" + pattern if pattern != "*" else "") + "}", filled)
        found = TABLE.find(route.http_method, sample)
        assert found is not None, f"{route.http_method} {sample} finds no route"
        assert found[0] is route, f"{route.http_method} {sample} finds {found[0].template.text}"


async def _grpc(both: Both, method: MethodDescriptor, request: Message) -> Message | status_pb2.Status:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = GetMessageClass(method.output_type)
    try:
        if method.server_streaming:
            stream = both.channel.unary_stream(
                path, request_serializer=_serialize, response_deserializer=response_class.FromString
            )(request, timeout=CALL_TIMEOUT)
            try:
                first: Message = await stream.read()  # type: ignore[assignment]
            finally:
                stream.cancel()
            return first
        answer: Message = await both.channel.unary_unary(
            path, request_serializer=_serialize, response_deserializer=response_class.FromString
        )(request, timeout=CALL_TIMEOUT)
        return answer
    except grpc.aio.AioRpcError as error:
        status: status_pb2.Status = rich_status(error)
        return status


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


async def _http(both: Both, route: Route, request: Message) -> tuple[int, Any]:
    """The HTTP status and the JSON answer; for a stream, its first message (SSE or NDJSON)."""
    call = http_call(route, request)
    if not route.server_streaming:
        response = await send(both.http, call)
        return response.status_code, response.json()
    async with both.http.stream(call.method, call.url, params=call.params, json=call.body) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, response.json()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                return 200, json.loads(line.removeprefix("data: "))
    raise AssertionError(f"{route.template.text}: the stream ended with no event")


def _parsed(method: MethodDescriptor, data: Any) -> Message:
    message: Message = GetMessageClass(method.output_type)()
    json_format.ParseDict(data, message)
    return message


@module_loop
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("modelplane.v1."))
async def test_http_answers_what_grpc_answers(both: Both, method: MethodDescriptor) -> None:
    if method.full_name in NOT_OFFERED:
        assert method.full_name not in ROUTES
        return
    route = ROUTES[method.full_name]
    request, expected = MINIMAL_CALLS[method.containing_service.name][method.name]
    http_code, http_answer = await _http(both, route, request)
    grpc_answer = await _grpc(both, method, request)
    assert http_code == HTTP_STATUS[expected], f"{route.http_method} {route.template.text}: {http_answer}"
    if expected == grpc.StatusCode.OK:
        assert not isinstance(grpc_answer, status_pb2.Status), grpc_answer
        assert _parsed(method, http_answer) == grpc_answer
    else:
        assert isinstance(grpc_answer, status_pb2.Status), grpc_answer
        http_status = status_pb2.Status()
        json_format.ParseDict(http_answer, http_status)
        assert http_status == grpc_answer
        assert http_status.code == expected.value[0]


def _registry_writes() -> list[tuple[str, Message]]:
    version = MINIMAL_CALLS["ModelRegistryService"]["CreateModelVersion"][0]
    assert isinstance(version, pb.CreateModelVersionRequest)
    return [
        (
            "CreateModel",
            pb.CreateModelRequest(
                model_id="twice",
                model=pb.Model(provider="openai", display_name="Twice", labels={"team": "a"}),
                request_id="http-1",
            ),
        ),
        (
            "UpdateModel",
            pb.UpdateModelRequest(
                model=pb.Model(name="models/twice", description="said once"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                request_id="http-2",
            ),
        ),
        (
            "CreateModelVersion",
            pb.CreateModelVersionRequest(
                parent="models/twice", model_version=version.model_version, request_id="http-3"
            ),
        ),
        (
            "SetAlias",
            pb.SetAliasRequest(
                name="models/twice/aliases/prod",
                version="models/twice/versions/1",
                reason="first",
                request_id="http-4",
            ),
        ),
        ("DeleteAlias", pb.DeleteAliasRequest(name="models/twice/aliases/prod", request_id="http-5")),
    ]


@module_loop
async def test_a_write_over_http_is_the_same_request_as_over_grpc(both: Both) -> None:
    """A write with a request_id, repeated over gRPC after HTTP, gets the first answer back: the server
    checked that the two requests are the same (a different one is REQUEST_ID_REUSED) and ran it once."""
    service = descriptor_pool.Default().FindServiceByName("modelplane.v1.ModelRegistryService")
    for name, request in _registry_writes():
        method = service.methods_by_name[name]
        code, answer = await _http(both, ROUTES[method.full_name], request)
        assert code == 200, answer
        assert await _grpc(both, method, request) == _parsed(method, answer)
