"""A response over the server's message limit: the client, the access log and the metrics all see the same
RESOURCE_EXHAUSTED (reason RESPONSE_TOO_LARGE), never an OK the client did not get."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.v1 import registry_pb2 as pb
from modelplane.v1 import registry_pb2_grpc
from tests.support import StartServer, error_info

LIMIT = 4096
CALL_TIMEOUT = 10.0
LIST_MODELS = "/modelplane.v1.ModelRegistryService/ListModels"
TEST_SERVICE = "modelplane.test.Sizes"


async def _big_stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    yield b"small"
    yield b"x" * (LIMIT + 1)
    yield b"never sent"


async def _exactly_the_limit(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b"x" * LIMIT


SIZE_HANDLERS = grpc.method_handlers_generic_handler(
    TEST_SERVICE,
    {
        "BigStream": grpc.unary_stream_rpc_method_handler(_big_stream),
        "ExactlyTheLimit": grpc.unary_unary_rpc_method_handler(_exactly_the_limit),
    },
)


@pytest.fixture
async def small_server(start_server: StartServer) -> ModelplaneServer:
    server = await start_server(wait_serving=False, max_message_bytes=LIMIT)
    server.add_generic_rpc_handlers((SIZE_HANDLERS,))
    await server.wait_serving(timeout=30)
    return server


def _access_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "modelplane.access" and method in r.getMessage()
    ]


def _calls(server: ModelplaneServer, method: str, code: str, grpc_type: str = "unary") -> float:
    service, _, name = method.strip("/").partition("/")
    value = server.metrics.registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_service": service, "grpc_method": name, "grpc_code": code, "grpc_type": grpc_type},
    )
    return value or 0.0


async def test_a_list_too_large_to_send_is_logged_as_the_client_saw_it(
    small_server: ModelplaneServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(small_server.target) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        for i in range(2):
            await stub.CreateModel(
                pb.CreateModelRequest(
                    model_id=f"big-{i}", model=pb.Model(provider="openai", description="d" * 3000)
                ),
                timeout=CALL_TIMEOUT,
            )
        with caplog.at_level(logging.INFO, logger="modelplane.access"):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListModels(pb.ListModelsRequest(), timeout=CALL_TIMEOUT)
            # One model fits: the page size is what the message says to change.
            listed = await stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=CALL_TIMEOUT)
    assert len(listed.models) == 1
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(error)
    assert (info.domain, info.reason) == ("modelplane", "RESPONSE_TOO_LARGE")
    assert info.metadata["max_bytes"] == str(LIMIT)
    assert int(info.metadata["response_bytes"]) > LIMIT
    assert "page_size" in (error.details() or "")
    lines = _access_lines(caplog, LIST_MODELS)
    assert len(lines) == 2
    assert lines[0].startswith(f"{LIST_MODELS} RESOURCE_EXHAUSTED ")
    assert lines[1].startswith(f"{LIST_MODELS} OK ")
    assert _calls(small_server, LIST_MODELS, "RESOURCE_EXHAUSTED") == 1
    assert _calls(small_server, LIST_MODELS, "OK") == 1


async def test_a_stream_message_too_large_ends_the_stream_with_the_status_it_logs(
    small_server: ModelplaneServer, caplog: pytest.LogCaptureFixture
) -> None:
    method = f"/{TEST_SERVICE}/BigStream"
    received: list[bytes] = []
    async with grpc.aio.insecure_channel(small_server.target) as channel:
        call = channel.unary_stream(method, None, None)(b"", timeout=CALL_TIMEOUT)

        async def read_all() -> None:
            async for message in call:
                received.append(message)

        with (
            caplog.at_level(logging.INFO, logger="modelplane.access"),
            pytest.raises(grpc.aio.AioRpcError) as raised,
        ):
            await read_all()
    assert received == [b"small"]
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(raised.value).reason == "RESPONSE_TOO_LARGE"
    lines = _access_lines(caplog, method)
    assert len(lines) == 1
    assert lines[0].startswith(f"{method} RESOURCE_EXHAUSTED ")
    assert _calls(small_server, method, "RESOURCE_EXHAUSTED", "server_stream") == 1


async def test_a_response_of_exactly_the_limit_is_sent(small_server: ModelplaneServer) -> None:
    async with grpc.aio.insecure_channel(small_server.target) as channel:
        response = await channel.unary_unary(f"/{TEST_SERVICE}/ExactlyTheLimit", None, None)(
            b"", timeout=CALL_TIMEOUT
        )
    assert len(response) == LIMIT
