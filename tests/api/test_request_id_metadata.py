"""x-request-id comes back in the trailers of every call, and in the headers of a streaming response too.

A unary response's headers and trailers reach the client together, so the trailers carry it alone: headers
of their own would cost the server a batch of their own for every call. A stream sends it in the headers
with its first message as well, so that a caller can log it before the stream ends. A call that fails
before answering ends Trailers-Only, its id in the trailers alone, so that gRPC's built-in retry
(tests/api/test_service_config.py) may still retry it: headers commit a call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import registry_pb2 as rpb
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from modelplane.v1.logs_pb2_grpc import LogServiceStub
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub
from tests.support import metadata_value

KEY = "x-request-id"
TIMEOUT = 20.0


def _sent(request_id: str) -> tuple[tuple[str, str], ...]:
    return ((KEY, request_id),)


M = TypeVar("M", bound=Message)


async def _in(*requests: M) -> AsyncIterator[M]:
    for request in requests:
        yield request


async def test_a_unary_call_has_it_in_the_trailers_alone(channel: grpc.aio.Channel) -> None:
    call = ModelRegistryServiceStub(channel).CreateModel(
        rpb.CreateModelRequest(model_id="headers", model=rpb.Model(provider="local")),
        metadata=_sent("py-unary"),
        timeout=TIMEOUT,
    )
    await call
    assert metadata_value(await call.trailing_metadata(), KEY) == "py-unary"
    assert metadata_value(await call.initial_metadata(), KEY) is None


async def test_a_failed_unary_call_has_it_in_the_trailers_alone(channel: grpc.aio.Channel) -> None:
    call = ModelRegistryServiceStub(channel).GetModel(
        rpb.GetModelRequest(name="models/nope"), metadata=_sent("py-failed"), timeout=TIMEOUT
    )
    assert await call.code() == grpc.StatusCode.NOT_FOUND
    assert metadata_value(await call.trailing_metadata(), KEY) == "py-failed"
    # Trailers-Only: no headers were sent, so the call was never committed and stays retryable.
    assert metadata_value(await call.initial_metadata(), KEY) is None


async def test_a_server_stream_has_it_in_the_headers_of_its_first_message(channel: grpc.aio.Channel) -> None:
    watch = ModelRegistryServiceStub(channel).WatchModels(
        rpb.WatchModelsRequest(), metadata=_sent("py-watch"), timeout=TIMEOUT
    )
    first = await watch.read()
    assert isinstance(first, rpb.WatchModelsResponse)
    assert first.WhichOneof("event") == "progress"
    assert metadata_value(await watch.initial_metadata(), KEY) == "py-watch"
    watch.cancel()


async def test_a_bidirectional_stream_has_it_in_headers_and_trailers(channel: grpc.aio.Channel) -> None:
    event = lpb.LogEvent(event_id="py-stream-1", service="py", level=lpb.LOG_LEVEL_INFO, message="hello")
    event.event_time.FromSeconds(int(time.time()))
    batch = lpb.LogBatch(client_id="py-client", sequence=1, events=[event])
    stream = LogServiceStub(channel).StreamLogEvents(
        _in(lpb.StreamLogEventsRequest(batch=batch)), metadata=_sent("py-logs"), timeout=TIMEOUT
    )
    acks = [response.ack.sequence async for response in stream]
    assert acks == [1]
    assert metadata_value(await stream.initial_metadata(), KEY) == "py-logs"
    assert metadata_value(await stream.trailing_metadata(), KEY) == "py-logs"

    guardrails = GuardrailServiceStub(channel)
    policy = gpb.Policy(
        fail_mode=gpb.FAIL_MODE_CLOSED,
        rules=[
            gpb.Rule(
                id="w",
                severity=gpb.SEVERITY_ERROR,
                category="w",
                banned_terms=gpb.BannedTermsRule(terms=["x"]),
            )
        ],
    )
    await guardrails.CreatePolicy(gpb.CreatePolicyRequest(policy_id="p", policy=policy), timeout=TIMEOUT)
    check = guardrails.CheckStream(
        _in(
            gpb.CheckStreamRequest(start=gpb.CheckStreamStart(policy="policies/p")),
            gpb.CheckStreamRequest(chunk="a clean text"),
            gpb.CheckStreamRequest(end=gpb.CheckStreamEnd()),
        ),
        metadata=_sent("py-check"),
        timeout=TIMEOUT,
    )
    verdicts = [response.verdict.decision async for response in check]
    assert verdicts == [gpb.DECISION_ALLOW]
    assert metadata_value(await check.initial_metadata(), KEY) == "py-check"
    assert metadata_value(await check.trailing_metadata(), KEY) == "py-check"
