"""A call with a request stream ends only after the client has finished sending, so the client gets the
server's status and never INTERNAL "Internal error from Core" from its own gRPC core.

A status that reaches a client while one of its sends is still under way makes grpc's Python client fail
that send and report INTERNAL, without the server's details, in place of the status the server sent. The
server therefore reads what is left of a request stream (bounded: server/modelplane/server/stream_drain.py)
before it ends the call, whatever ends it: a refused message, a refused caller, or the handler's answer.
"""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from modelplane.server.stream_drain import DRAIN_SECONDS
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from modelplane.v1.logs_pb2_grpc import LogServiceStub
from tests.api.test_logs import event
from tests.support import StartServer
from tests.support.rich_errors import rich

TIMEOUT = 20.0
# Calls in a row for the statistical cases: before the server waited for the client, about one in three
# of these three-message streams refused at the first message came back INTERNAL.
CALLS = 60

BAD_START = gpb.CheckStreamRequest(start=gpb.CheckStreamStart(policy="policies/missing", request_id="a\x00b"))
CHUNK = gpb.CheckStreamRequest(chunk="the knight will kill the dragon")
END = gpb.CheckStreamRequest(end=gpb.CheckStreamEnd())


def _codes(errors: list[grpc.aio.AioRpcError | None]) -> collections.Counter[grpc.StatusCode]:
    return collections.Counter(grpc.StatusCode.OK if e is None else e.code() for e in errors)


def _outcomes(errors: list[grpc.aio.AioRpcError | None]) -> collections.Counter[str]:
    return collections.Counter("OK" if e is None else f"{e.code().name} {e.details()!r}" for e in errors)


async def test_a_refused_stream_is_not_ended_while_the_client_is_still_sending(
    channel: grpc.aio.Channel,
) -> None:
    # The NUL in the start is refused as the first message arrives; the status must still wait for the
    # client, which keeps sending (a chunk it had queued) and only then half-closes.
    call = GuardrailServiceStub(channel).CheckStream(None, timeout=TIMEOUT)
    await call.write(BAD_START)
    ended = asyncio.ensure_future(call.code())
    # Well within the server's wait: a server that ended the call at once has ended it by now.
    done, _ = await asyncio.wait({ended}, timeout=DRAIN_SECONDS / 2)
    assert not done, f"the server ended the call with {ended.result()} before the client half-closed"
    await call.write(CHUNK)
    await call.done_writing()
    assert await ended == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert rich(raised.value).field_paths == ["start.request_id"]


async def test_a_stream_refused_at_its_first_message_never_ends_internal(channel: grpc.aio.Channel) -> None:
    stub = GuardrailServiceStub(channel)
    errors: list[grpc.aio.AioRpcError | None] = []
    for _ in range(CALLS):
        try:
            async for _response in stub.CheckStream(iter([BAD_START, CHUNK, END]), timeout=TIMEOUT):
                pass
            errors.append(None)
        except grpc.aio.AioRpcError as error:
            errors.append(error)
    assert _codes(errors) == {grpc.StatusCode.INVALID_ARGUMENT: CALLS}, _outcomes(errors)
    assert all(e is not None and rich(e).field_paths == ["start.request_id"] for e in errors)


async def test_a_log_stream_refused_at_its_first_batch_never_ends_internal(
    channel: grpc.aio.Channel,
) -> None:
    # No client_id: the batch is refused, and the two after it are still on their way.
    stub = LogServiceStub(channel)
    bad = lpb.StreamLogEventsRequest(batch=lpb.LogBatch(sequence=1, events=[event(0)]))
    good = [
        lpb.StreamLogEventsRequest(batch=lpb.LogBatch(client_id="c", sequence=n, events=[event(n)]))
        for n in (2, 3)
    ]
    errors: list[grpc.aio.AioRpcError | None] = []
    for _ in range(CALLS):
        try:
            async for _response in stub.StreamLogEvents(iter([bad, *good]), timeout=TIMEOUT):
                pass
            errors.append(None)
        except grpc.aio.AioRpcError as error:
            errors.append(error)
    assert _codes(errors) == {grpc.StatusCode.INVALID_ARGUMENT: CALLS}, _outcomes(errors)
    assert all(e is not None and "batch.client_id" in rich(e).field_paths for e in errors), _outcomes(errors)


async def test_a_refused_caller_of_a_stream_gets_its_status(start_server: StartServer) -> None:
    # Auth refuses the call before the handler reads anything; the client is still sending.
    server = await start_server(auth=True)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = GuardrailServiceStub(channel)
        codes: list[grpc.StatusCode] = []
        for _ in range(CALLS):
            call = stub.CheckStream(iter([BAD_START, CHUNK, END]), timeout=TIMEOUT)
            codes.append(await call.code())
    assert collections.Counter(codes) == {grpc.StatusCode.UNAUTHENTICATED: CALLS}
