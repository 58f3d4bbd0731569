"""The published service config makes a bare gRPC channel retry UNAVAILABLE as the Python client does.

A plain grpc.aio channel given `retrying_channel_options()` (gRPC's own retry, gRFC A6, as any language's
gRPC has it) is pointed at a scripted server that answers each attempt as told, then at a real server whose
database is briefly cut. The config must retry UNAVAILABLE, and only it, up to its attempts; gRPC must
honour the server's `grpc-retry-pushback-ms` trailer, which the real server sends beside RetryInfo.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from modelplane.client.retry import DEFAULT_RETRY_POLICY
from modelplane.client.service_config import SERVICE_CONFIG, retrying_channel_options
from modelplane.server.app import ModelplaneServer
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support import StartServer, error_info, metadata_value, retry_info, wait_health
from tests.support.tcp_proxy import TcpProxy

PUSHBACK = "grpc-retry-pushback-ms"
GET_MODEL = "/modelplane.v1.ModelRegistryService/GetModel"
CALL_DEADLINE = 20.0

# One scripted answer: a status code with a pushback trailer (None: no trailer), or OK.
Answer = tuple[grpc.StatusCode, str | None]
OK: Answer = (grpc.StatusCode.OK, None)


def unavailable(pushback: str | None = "1") -> Answer:
    return (grpc.StatusCode.UNAVAILABLE, pushback)


@dataclass
class ScriptedServer:
    """A GetModel that answers the n-th attempt with script[n] (the last entry once the script runs out)."""

    script: list[Answer]
    attempts: int = 0
    target: str = ""
    server: grpc.aio.Server | None = field(default=None, repr=False)

    async def get_model(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> registry_pb2.GetModelResponse:
        code, pushback = self.script[min(self.attempts, len(self.script) - 1)]
        self.attempts += 1
        if code != grpc.StatusCode.OK:
            trailers = () if pushback is None else ((PUSHBACK, pushback),)
            await context.abort(code, f"scripted {code.name}", trailing_metadata=trailers)
        return registry_pb2.GetModelResponse(model=registry_pb2.Model(name=request.name))


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer([OK])
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "modelplane.v1.ModelRegistryService",
        {
            "GetModel": grpc.unary_unary_rpc_method_handler(
                scripted.get_model,
                request_deserializer=registry_pb2.GetModelRequest.FromString,
                response_serializer=registry_pb2.GetModelResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    scripted.target, scripted.server = f"127.0.0.1:{port}", server
    yield scripted
    await server.stop(grace=None)


async def _get_model(target: str, options: list[tuple[str, object]]) -> registry_pb2.GetModelResponse:
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        return await stub.GetModel(registry_pb2.GetModelRequest(name="models/x"), timeout=CALL_DEADLINE)


async def test_a_bare_channel_with_the_config_retries_unavailable(scripted: ScriptedServer) -> None:
    scripted.script = [unavailable(), unavailable(), OK]
    response = await _get_model(scripted.target, retrying_channel_options())
    assert response.model.name == "models/x"
    assert scripted.attempts == 3


async def test_without_the_config_a_bare_channel_does_not_retry(scripted: ScriptedServer) -> None:
    # The control: what retries above is the published config, not the channel.
    scripted.script = [unavailable(), OK]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_model(scripted.target, [("grpc.enable_retries", 1)])
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert scripted.attempts == 1


async def test_a_negative_pushback_tells_the_channel_not_to_retry(scripted: ScriptedServer) -> None:
    # gRFC A6: a pushback below zero means "do not retry": the channel reads the server's trailer.
    scripted.script = [unavailable("-1"), OK]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_model(scripted.target, retrying_channel_options())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert scripted.attempts == 1


async def test_only_unavailable_is_retried(scripted: ScriptedServer) -> None:
    scripted.script = [(grpc.StatusCode.ABORTED, None), OK]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_model(scripted.target, retrying_channel_options())
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert scripted.attempts == 1


async def test_the_attempts_are_the_python_clients(scripted: ScriptedServer) -> None:
    scripted.script = [unavailable()]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_model(scripted.target, retrying_channel_options())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert scripted.attempts == DEFAULT_RETRY_POLICY.max_attempts


# ---- the real server


def _unavailable_answers(server: ModelplaneServer) -> float:
    service, _, method = GET_MODEL.strip("/").partition("/")
    labels = {
        "grpc_type": "unary",
        "grpc_service": service,
        "grpc_method": method,
        "grpc_code": "UNAVAILABLE",
    }
    return server.metrics.registry.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_the_server_sends_pushback_beside_retry_info(
    proxy: TcpProxy, database_url: str, start_server: StartServer
) -> None:
    server = await start_server(database_url=proxy.url_through(database_url))
    await proxy.cut()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _get_model(server.target, [])
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "STORAGE_UNAVAILABLE"
    retry = retry_info(error)
    assert retry is not None
    assert metadata_value(error.trailing_metadata(), PUSHBACK) == str(retry.retry_delay.ToMilliseconds())


async def test_a_bare_channel_with_the_config_rides_out_a_storage_outage(
    proxy: TcpProxy, database_url: str, start_server: StartServer
) -> None:
    server = await start_server(database_url=proxy.url_through(database_url))
    async with grpc.aio.insecure_channel(server.target) as probe:
        await proxy.cut()
        await wait_health(probe, "NOT_SERVING")
        call = asyncio.create_task(_get_model(server.target, retrying_channel_options()))
        # The database comes back once the server has refused the call at least once; the channel,
        # waiting the pushback the server sent, tries again and gets the real answer.
        while _unavailable_answers(server) < 1 and not call.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await proxy.restore()
        await wait_health(probe, "SERVING")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    assert _unavailable_answers(server) >= 1


# ---- the published file


def test_the_config_retries_reads_and_idempotent_mutations_only() -> None:
    (config,) = json.loads(SERVICE_CONFIG)["methodConfig"]
    names = {(n["service"].removeprefix("modelplane.v1."), n["method"]) for n in config["name"]}
    assert {
        ("ModelRegistryService", "GetModel"),
        ("ModelRegistryService", "WatchModels"),
        ("ModelRegistryService", "CreateModel"),
        ("DeploymentService", "PromoteRollout"),
        ("GuardrailService", "CheckContent"),
        ("LogService", "WriteLogEvents"),
    } <= names
    # Client streams would be replayed message by message: never retried.
    assert ("GuardrailService", "CheckStream") not in names
    assert ("LogService", "StreamLogEvents") not in names
    policy = config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == DEFAULT_RETRY_POLICY.max_attempts
    assert policy["initialBackoff"] == f"{DEFAULT_RETRY_POLICY.initial_backoff:g}s"
    assert policy["maxBackoff"] == f"{DEFAULT_RETRY_POLICY.max_backoff:g}s"
    assert policy["backoffMultiplier"] == DEFAULT_RETRY_POLICY.multiplier
