"""The typed async client of the guardrails monitor (modelplane.v1.GuardrailService).

Methods take keyword arguments and return the protobuf messages of modelplane.v1.guardrails_pb2. Every
unary call has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to
override it), and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass.

Retries: a unary call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter within
its one deadline, as in the registry client. Mutations carry a request id (a random UUID unless the caller
gives one), so a retried mutation runs once. So does CheckContent: a check is a pure function of the policy
revision and the text, and its request id keeps a retry from storing its violation records twice.

CheckStream is not retried (the text already sent cannot be replayed by the client on its own): open it with
`async with client.check_stream(policy=...) as stream`, `await stream.send(chunk)` as text is generated, watch
`stream.blocked` (or `await stream.wait_blocked()`) to stop streaming to the user as soon as a block is
certain, and `await stream.finish()` for the final verdict.

The other methods are those of `modelplane.client.methods.guardrails.GuardrailMethods`, which the sync
client (modelplane.client.sync) shares; here they are coroutines and async iterators.
"""

# The `timeout` parameters are gRPC deadlines handed to the channel, not asyncio timeouts.

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import grpc

from modelplane.client.base import ServiceClient
from modelplane.client.check_stream_state import CheckStreamReplies
from modelplane.client.errors import ModelplaneError, from_rpc_error
from modelplane.client.methods.guardrails import GuardrailMethods, check_stream_start
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import common_pb2, guardrails_pb2, guardrails_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceAsyncStub

__all__ = ["DEFAULT_STREAM_TIMEOUT", "CheckStreamSession", "GuardrailClient"]

# Seconds a CheckStream may stay open unless the caller says otherwise: long enough for a slow generation,
# short enough that a forgotten stream does not hold a server slot for ever.
DEFAULT_STREAM_TIMEOUT = 300.0


_CallT = grpc.aio.StreamStreamCall[guardrails_pb2.CheckStreamRequest, guardrails_pb2.CheckStreamResponse]


class GuardrailClient(GuardrailMethods, ServiceClient):
    """Client of GuardrailService, built from a `Connection` or from a grpc.aio channel.

    Used as `async with`, it closes what it was built from (the connection or the channel) on exit; do not
    do that with a channel other code still uses.
    """

    def __init__(
        self,
        source: Connection | grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(source, metadata=metadata, timeout=timeout, retry=retry)
        self._stub = guardrails_pb2_grpc.GuardrailServiceStub(self._channel)

    def check_stream(
        self,
        *,
        policy: str,
        policy_revision: int = 0,
        links: common_pb2.EventLinks | None = None,
        request_id: str | None = None,
        timeout: float | None = DEFAULT_STREAM_TIMEOUT,
    ) -> CheckStreamSession:
        """A CheckStream to use as `async with`; `timeout` (None: no deadline) bounds the whole stream.
        Its errors (PolicyNotFound, TextTooLarge, ...) are raised by `send`, `wait_blocked` or `finish`."""
        start = check_stream_start(
            policy=policy, policy_revision=policy_revision, links=links, request_id=request_id
        )
        return CheckStreamSession(self._stub, start, metadata=self.metadata, timeout=timeout)


class CheckStreamSession(CheckStreamReplies):
    """One CheckStream: send text chunks as they are generated, learn of a block as soon as it is certain.

    A background task reads the server's messages while the caller sends, so `blocked`, `early_verdict`
    and `violations` are current without awaiting anything. Use it as `async with`: leaving the block
    before `finish()` cancels the call.
    """

    def __init__(
        self,
        stub: GuardrailServiceAsyncStub,
        start: guardrails_pb2.CheckStreamStart,
        *,
        metadata: tuple[tuple[str, str], ...],
        timeout: float | None,
    ) -> None:
        super().__init__()
        self._stub = stub
        self._start = start
        self._metadata = metadata
        self._timeout = timeout
        self._call: _CallT | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._error: ModelplaneError | None = None
        self._ended = False

    async def open(self) -> None:
        """Starts the call and sends the start message (done by `async with`)."""
        if self._call is not None:
            raise RuntimeError("the stream is already open")
        self._call = self._stub.CheckStream(None, timeout=self._timeout, metadata=self._metadata)
        self._reader = asyncio.create_task(self._read(self._call), name="CheckStream reader")
        await self._write(guardrails_pb2.CheckStreamRequest(start=self._start))

    async def send(self, chunk: str) -> None:
        """Sends the next piece of the text. Raises the call's error if it has failed."""
        if self._ended:
            raise RuntimeError("the stream has ended: no chunk may follow finish()")
        if chunk:
            await self._write(guardrails_pb2.CheckStreamRequest(chunk=chunk))

    async def wait_blocked(self) -> guardrails_pb2.CheckVerdict | None:
        """Waits for the early BLOCK verdict and returns it; None when the stream ended without a block."""
        while True:
            self._raise_error()
            if self._early is not None:
                return self._early
            if self._final is not None or (self._reader is not None and self._reader.done()):
                self._raise_error()
                return self._final if self.blocked else None
            self._changed.clear()
            await self._changed.wait()

    async def finish(self) -> guardrails_pb2.CheckVerdict:
        """Says the text is complete and returns the final verdict, equal to CheckContent's on the whole
        text. Raises the call's error if it failed."""
        if not self._ended:
            self._ended = True
            await self._write(guardrails_pb2.CheckStreamRequest(end=guardrails_pb2.CheckStreamEnd()))
            call = self._require_call()
            with contextlib.suppress(grpc.RpcError):
                # A call that already failed reports why through the reader.
                await call.done_writing()
        if self._reader is not None:
            await asyncio.shield(self._reader)
        self._raise_error()
        if self._final is None:
            raise RuntimeError("CheckStream ended without a final verdict")
        return self._final

    async def cancel(self) -> None:
        """Abandons the stream (the server stores nothing for an unfinished text)."""
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._final is None:
            await self.cancel()

    def _require_call(self) -> _CallT:
        if self._call is None:
            raise RuntimeError("the stream is not open: use `async with` or await open()")
        return self._call

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _write(self, request: guardrails_pb2.CheckStreamRequest) -> None:
        call = self._require_call()
        self._raise_error()
        try:
            await call.write(request)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        except asyncio.InvalidStateError:
            # Writing to a call that has already ended: its status, read by the reader, says why.
            if self._reader is not None:
                await asyncio.shield(self._reader)
            self._raise_error()
            raise RuntimeError("CheckStream has ended") from None

    async def _read(self, call: _CallT) -> None:
        try:
            async for response in call:
                self._record(response)
                self._changed.set()
        except grpc.RpcError as error:
            self._error = from_rpc_error(error)
        finally:
            self._changed.set()
