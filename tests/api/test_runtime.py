"""The server runtime over real gRPC: health, reflection, request ids, errors, auth, metrics, shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.calls import new_request_id
from modelplane.server.config import ServerConfig, TlsConfig
from modelplane.server.context import caller
from modelplane.server.errors import InvalidArgument, StorageUnavailable
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support import (
    StartServer,
    error_info,
    field_violations,
    health_status,
    metadata_value,
    retry_info,
    rich_status,
)
from tests.support.certificates import make_self_signed

REGISTRY = "modelplane.v1.ModelRegistryService"
FAULTY = "/modelplane.test.Faulty/"


async def _crash(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("secret detail of the failure")


async def _bad_field(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise InvalidArgument.field("model.display_name", "must not be empty")


async def _storage_down(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise StorageUnavailable("the database is unavailable; retry shortly", retry_after=2.5)


async def _own_abort(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the handler's own status")
    raise AssertionError("abort returned")


async def _who(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    current = caller()
    return f"{current.actor}|{current.method}|{current.trace_request_id}".encode()


async def _stream_then_crash(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"first"
    raise RuntimeError("secret detail mid-stream")


async def _echo(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _hang(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    yield b"started"
    await asyncio.Event().wait()


FAULTY_HANDLERS = grpc.method_handlers_generic_handler(
    "modelplane.test.Faulty",
    {
        "Crash": grpc.unary_unary_rpc_method_handler(_crash),
        "BadField": grpc.unary_unary_rpc_method_handler(_bad_field),
        "StorageDown": grpc.unary_unary_rpc_method_handler(_storage_down),
        "OwnAbort": grpc.unary_unary_rpc_method_handler(_own_abort),
        "Who": grpc.unary_unary_rpc_method_handler(_who),
        "StreamThenCrash": grpc.unary_stream_rpc_method_handler(_stream_then_crash),
        "Echo": grpc.stream_stream_rpc_method_handler(_echo),
        "Hang": grpc.unary_stream_rpc_method_handler(_hang),
    },
)


@pytest.fixture
async def faulty_server(database_url: str) -> AsyncIterator[ModelplaneServer]:
    """A modelplane server that also runs a test service whose handlers fail in every way there is."""
    server = build_server(
        ServerConfig(address="127.0.0.1:0", database_url=database_url, auth=False, health_probe_interval=0.1)
    )
    server.add_generic_rpc_handlers((FAULTY_HANDLERS,))
    await server.start()
    try:
        await server.wait_serving(timeout=30)
        yield server
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def faulty(faulty_server: ModelplaneServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(faulty_server.target) as channel:
        yield channel


async def _unary_error(channel: grpc.aio.Channel, name: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(FAULTY + name, None, None)(b"", timeout=10)
    return raised.value


async def test_health_is_serving_for_the_server_and_each_service(channel: grpc.aio.Channel) -> None:
    assert await health_status(channel) == "SERVING"
    assert await health_status(channel, REGISTRY) == "SERVING"


async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_status(channel, "modelplane.v1.NoSuchService")
    # The health servicer's own abort passes through the interceptor unchanged.
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=REGISTRY),
    ]
    responses = [response async for response in stub.ServerReflectionInfo(iter(requests), timeout=10)]
    listed = {service.name for service in responses[0].list_services_response.service}
    assert {REGISTRY, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed
    files = responses[1].file_descriptor_response.file_descriptor_proto
    assert files, responses[1]
    assert any(b"ModelRegistryService" in f for f in files)


async def test_request_id_from_the_client_is_echoed(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Check(health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "req-1234"),), timeout=5)
    await call
    assert metadata_value(await call.trailing_metadata(), "x-request-id") == "req-1234"
    # A stream sends it in the headers of its first message, so the caller has it before the stream ends.
    watch = stub.Watch(health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "req-5678"),), timeout=5)
    assert metadata_value(await watch.initial_metadata(), "x-request-id") == "req-5678"
    watch.cancel()


async def test_request_id_is_generated_when_missing_or_unusable(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    seen: list[str] = []
    for metadata in ((), (("x-request-id", "has spaces"),), (("x-request-id", "x" * 300),)):
        call = stub.Check(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=5)
        await call
        # In the trailers (a unary call's headers do not carry it).
        generated = metadata_value(await call.trailing_metadata(), "x-request-id")
        assert isinstance(generated, str)
        # This process's 64-bit prefix, then a counter.
        assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", generated)
        seen.append(generated)
    assert len(set(seen)) == 3
    assert len({generated.partition("-")[0] for generated in seen}) == 1


def test_generated_request_ids_differ_between_processes() -> None:
    # Each worker is a process of its own, as each replica is: each draws its own prefix.
    code = "from modelplane.server.calls import new_request_id; print(new_request_id())"
    theirs = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    ours = new_request_id()
    assert re.fullmatch(r"[0-9a-f]{16}-1", theirs)
    assert theirs.partition("-")[0] != ours.partition("-")[0]


async def test_request_id_is_echoed_on_a_failed_call(faulty: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await faulty.unary_unary(FAULTY + "BadField", None, None)(
            b"", metadata=(("x-request-id", "req-err"),), timeout=10
        )
    assert metadata_value(raised.value.trailing_metadata(), "x-request-id") == "req-err"


async def test_handler_sees_the_caller_and_request_id(faulty: grpc.aio.Channel) -> None:
    reply = await faulty.unary_unary(FAULTY + "Who", None, None)(
        b"", metadata=(("x-request-id", "req-who"),), timeout=10
    )
    assert reply == b"anonymous|/modelplane.test.Faulty/Who|req-who"


async def test_unexpected_exception_is_internal_without_its_text(
    faulty: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="modelplane.server.calls"):
        error = await _unary_error(faulty, "Crash")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    assert error_info(error).reason == "INTERNAL"
    assert error_info(error).domain == "modelplane"
    assert "secret" not in str(rich_status(error))
    # The operator finds the cause in the log, keyed by the request id the client got.
    request_id = metadata_value(error.trailing_metadata(), "x-request-id")
    logged = [r for r in caplog.records if r.exc_info and str(request_id) in r.getMessage()]
    assert logged
    assert "secret detail of the failure" in str(logged[0].exc_info[1] if logged[0].exc_info else "")


async def test_invalid_argument_carries_field_violations(faulty: grpc.aio.Channel) -> None:
    error = await _unary_error(faulty, "BadField")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_FIELD"
    assert field_violations(error) == ["model.display_name"]


async def test_unavailable_carries_retry_info(faulty: grpc.aio.Channel) -> None:
    error = await _unary_error(faulty, "StorageDown")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "STORAGE_UNAVAILABLE"
    retry = retry_info(error)
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 2500


async def test_abort_by_the_handler_passes_through(faulty: grpc.aio.Channel) -> None:
    error = await _unary_error(faulty, "OwnAbort")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the handler's own status"


async def test_error_in_the_middle_of_a_stream_is_internal(faulty: grpc.aio.Channel) -> None:
    call = faulty.unary_stream(FAULTY + "StreamThenCrash", None, None)(b"", timeout=10)
    assert await call.read() == b"first"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error"


async def test_bidirectional_stream_passes_through_the_wrapper(faulty: grpc.aio.Channel) -> None:
    call = faulty.stream_stream(FAULTY + "Echo", None, None)(iter([b"a", b"b", b"c"]), timeout=10)
    assert [message async for message in call] == [b"a", b"b", b"c"]
    assert await call.code() == grpc.StatusCode.OK


async def test_client_cancel_is_not_an_internal_error(
    faulty_server: ModelplaneServer, faulty: grpc.aio.Channel
) -> None:
    call = faulty.unary_stream(FAULTY + "Hang", None, None)(b"", timeout=10)
    assert await call.read() == b"started"
    call.cancel()
    registry = faulty_server.metrics.registry
    service, _, method = FAULTY.strip("/").partition("/")
    labels = {"grpc_type": "server_stream", "grpc_service": service, "grpc_method": method + "Hang"}
    async with asyncio.timeout(10):
        cancelled = {**labels, "grpc_code": "CANCELLED"}
        while not registry.get_sample_value("grpc_server_handled_total", cancelled):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": "INTERNAL"}) is None
    # A stream is not timed: an hour-long watch would only ever land in the histogram's +Inf bucket.
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) is None
    assert registry.get_sample_value("grpc_server_started_total", labels) == 1


async def test_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary("/modelplane.v1.NoSuchService/Nothing", None, None)(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_access_log_has_one_line_per_call(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    with caplog.at_level(logging.INFO, logger="modelplane.access"):
        await stub.Check(health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "req-log"),), timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "modelplane.access"]
    assert len(lines) == 1
    assert lines[0].startswith("/grpc.health.v1.Health/Check OK ")
    assert "actor=anonymous" in lines[0]
    assert "request_id=req-log" in lines[0]


async def test_an_unsampled_access_log_writes_failed_calls_only(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server: ModelplaneServer = await start_server(access_log_sample=0.0)
    async with grpc.aio.insecure_channel(server.target) as channel:
        with caplog.at_level(logging.INFO, logger="modelplane.access"):
            for _ in range(5):
                assert await health_status(channel) == "SERVING"
            with pytest.raises(grpc.aio.AioRpcError):
                await health_status(channel, "no.such.Service")
    lines = [r.getMessage() for r in caplog.records if r.name == "modelplane.access"]
    assert len(lines) == 1
    assert lines[0].startswith("/grpc.health.v1.Health/Check NOT_FOUND ")


async def test_metrics_endpoint_counts_calls_by_method_and_code(start_server: StartServer) -> None:
    server: ModelplaneServer = await start_server(metrics_address="127.0.0.1:0")
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await health_status(channel) == "SERVING"
        with pytest.raises(grpc.aio.AioRpcError):
            await health_status(channel, "no.such.Service")
    port = server.metrics.endpoint_port
    assert port is not None

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body: bytes = response.read()
            return body.decode()

    check = 'grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"'
    expected = [
        f"grpc_server_started_total{{{check}}} 2.0",
        f'grpc_server_handled_total{{grpc_code="OK",{check}}} 1.0',
        f'grpc_server_handled_total{{grpc_code="NOT_FOUND",{check}}} 1.0',
        f"grpc_server_handling_seconds_count{{{check}}} 2.0",
    ]
    # A call is counted as its handler ends, which may be just after its client has the answer: scrape
    # until both calls are in (bounded), then check every figure.
    text = ""
    for _ in range(50):
        text = await asyncio.to_thread(scrape)
        if all(line in text for line in expected):
            break
        await asyncio.sleep(0.1)
    for line in expected:
        assert line in text


async def test_auth_on_refuses_a_call_without_token_but_not_health(start_server: StartServer) -> None:
    server: ModelplaneServer = await start_server(auth=True)
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await health_status(channel) == "SERVING"
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetModel(registry_pb2.GetModelRequest(name="models/x"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(raised.value).reason == "TOKEN_MISSING"


async def test_stop_ends_open_streams_with_a_resumable_status(server: ModelplaneServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        seen = [await watch.read()]
        stopping = asyncio.create_task(server.stop(grace=1))
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # noqa: PT012 - read until the stream ends
            while True:
                seen.append(await watch.read())
        await stopping
    statuses = [update.status for update in seen if isinstance(update, health_pb2.HealthCheckResponse)]
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(raised.value).reason == "SHUTTING_DOWN"
    assert retry_info(raised.value) is not None


async def test_refuses_to_listen_beyond_loopback_without_auth(database_url: str) -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0:0 with auth off"):
        build_server(ServerConfig(address="0.0.0.0:0", database_url=database_url, auth=False))
    # Said in so many words, or with auth on, or on loopback, it is allowed.
    for config in (
        ServerConfig(address="0.0.0.0:0", database_url=database_url, auth=False, insecure=True),
        ServerConfig(address="0.0.0.0:0", database_url=database_url, auth=True),
        ServerConfig(address="[::1]:0", database_url=database_url, auth=False),
    ):
        await build_server(config).stop(grace=0)


def test_build_server_needs_a_database_url() -> None:
    with pytest.raises(ValueError, match="database_url"):
        build_server(ServerConfig(address="127.0.0.1:0", database_url=None))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool to make a certificate")
async def test_tls_server_answers_a_tls_client(start_server: StartServer, tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    await asyncio.to_thread(
        make_self_signed, cert, key, common_name="localhost", subject_alt_name="IP:127.0.0.1"
    )
    server = await start_server(tls=TlsConfig(cert_file=cert, key_file=key))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    async with grpc.aio.secure_channel(server.target, credentials) as channel:
        assert await health_status(channel) == "SERVING"
    async with grpc.aio.insecure_channel(server.target) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health_status(plaintext)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
