"""Requests whose bytes do not parse: INVALID_ARGUMENT / MALFORMED_REQUEST with ErrorInfo, after auth.

Sent through a raw channel with identity serializers, so the server receives exactly the bytes written here:
a string field holding invalid UTF-8, and bytes that are no protobuf message at all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from modelplane.v1 import logs_pb2 as lpb
from tests.support import StartServer, error_info, field_violations

REGISTRY = "/modelplane.v1.ModelRegistryService/"
LOGS = "/modelplane.v1.LogService/"
GUARDRAILS = "/modelplane.v1.GuardrailService/"
CALL_TIMEOUT = 10.0

# GetModelRequest.name (field 1, a string) holding "ab" and a byte that is never valid UTF-8.
BAD_UTF8 = b"\x0a\x03ab\xff"
# A field number 0 tag: not a protobuf message of any type.
NOT_PROTOBUF = b"\xff\xff\xff\xff"
CORRUPT_BODIES = [pytest.param(BAD_UTF8, id="bad-utf8"), pytest.param(NOT_PROTOBUF, id="not-protobuf")]

# What no client should ever read in a status message: Python's names for what went wrong.
PYTHON_WORDS = ("DecodeError", "Error parsing", "Exception", "Traceback", "Unexpected", "<class")


def _identity(value: bytes) -> bytes:
    return value


def _assert_malformed(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info = error_info(error)
    assert (info.domain, info.reason) == ("modelplane", "MALFORMED_REQUEST")
    assert field_violations(error) == ["request"]
    details = error.details() or ""
    assert not any(word in details for word in PYTHON_WORDS), details


def _assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "Traceback" in r.getMessage()]


async def _unary(channel: grpc.aio.Channel, path: str, body: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)(
            body, timeout=CALL_TIMEOUT
        )
    return raised.value


@pytest.mark.parametrize("body", CORRUPT_BODIES)
async def test_unary_request_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        error = await _unary(channel, REGISTRY + "GetModel", body)
    _assert_malformed(error)
    _assert_no_traceback(caplog)


@pytest.mark.parametrize("body", CORRUPT_BODIES)
async def test_server_streaming_request_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, body: bytes
) -> None:
    call = channel.unary_stream(
        LOGS + "TailLogEvents", request_serializer=_identity, response_deserializer=_identity
    )(body, timeout=CALL_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    _assert_malformed(raised.value)


async def _stream(
    channel: grpc.aio.Channel, path: str, bodies: list[bytes]
) -> tuple[list[bytes], grpc.aio.AioRpcError]:
    async def requests() -> AsyncIterator[bytes]:
        for body in bodies:
            yield body

    call = channel.stream_stream(path, request_serializer=_identity, response_deserializer=_identity)(
        requests(), timeout=CALL_TIMEOUT
    )
    received: list[bytes] = []

    async def read_all() -> None:
        async for response in call:
            received.append(response)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_all()
    return received, raised.value


@pytest.mark.parametrize("body", CORRUPT_BODIES)
async def test_log_stream_commits_the_batches_before_a_message_that_does_not_parse(
    channel: grpc.aio.Channel, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    good = lpb.StreamLogEventsRequest(
        batch=lpb.LogBatch(client_id="malformed", sequence=1)
    ).SerializeToString()
    with caplog.at_level(logging.DEBUG):
        received, error = await _stream(channel, LOGS + "StreamLogEvents", [good, body])
    _assert_malformed(error)
    assert error_info(error).metadata["stream_message"] == "2"
    # The batch before the corrupt message was committed and acknowledged.
    acks = [lpb.StreamLogEventsResponse.FromString(r) for r in received]
    assert [ack.ack.sequence for ack in acks] == [1]
    _assert_no_traceback(caplog)


@pytest.mark.parametrize("body", CORRUPT_BODIES)
async def test_check_stream_message_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        _, error = await _stream(channel, GUARDRAILS + "CheckStream", [body])
    _assert_malformed(error)
    assert error_info(error).metadata["stream_message"] == "1"
    _assert_no_traceback(caplog)


@pytest.fixture
async def auth_server(start_server: StartServer) -> ModelplaneServer:
    return await start_server(auth=True)


@pytest.mark.parametrize("body", CORRUPT_BODIES)
async def test_without_a_token_a_corrupt_body_is_unauthenticated_like_a_good_one(
    auth_server: ModelplaneServer, database_url: str, body: bytes
) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        _, secret = await create_token(conn, "malformed-reader", "reader")
    finally:
        await conn.close()
    async with grpc.aio.insecure_channel(auth_server.target) as channel:
        call = channel.unary_unary(
            REGISTRY + "GetModel", request_serializer=_identity, response_deserializer=_identity
        )
        # No token: the same answer for a corrupt body as for a good one, so nothing is learnt about parsing.
        for request in (body, b"\x0a\x0bmodels/nope"):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(request, timeout=CALL_TIMEOUT)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info(raised.value).reason == "TOKEN_MISSING"
        # With a token the body is read, and refused for what it is.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(body, timeout=CALL_TIMEOUT, metadata=(("authorization", f"Bearer {secret}"),))
        _assert_malformed(raised.value)
        # A stream alike: refused for the missing token before its first message is read.
        _, error = await _stream(channel, GUARDRAILS + "CheckStream", [body])
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
