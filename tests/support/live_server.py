"""A modelplane server that hypothesis-driven tests share, and the checks every answer of the API must pass.

Hypothesis drives plain (synchronous) tests, so the server runs on an event loop of its own and each call is
run on that loop; pytest-asyncio's per-test loops never touch it. A call never raises for a status: it
answers the rich error (None on OK) and the responses, for a property to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.auth.roles import method_path
from modelplane.server.config import ServerConfig
from modelplane.server.store.urls import with_database
from tests.support.proto_strategies import message_class
from tests.support.rich_errors import RichError, rich

T = TypeVar("T")

# Bounds one call so that a hang fails the example instead of the whole run; not a performance bound.
CALL_TIMEOUT = 20.0
# Requests stay below the server's 4 MiB receive limit: RESOURCE_EXHAUSTED from gRPC itself is not the
# service's answer.
MAX_REQUEST_BYTES = 3_000_000
# Examples of each RPC that a module's property test draws.
EXAMPLES = 30

# A request: one message, or for a client stream the list of messages it sends.
Request = Message | Sequence[Message]
# A module's property over one call: the method, the request, the rich error (None on OK), the responses.
Check = Callable[[MethodDescriptor, Request, RichError | None, list[Message]], None]


@dataclass
class LiveServer:
    """A server with auth off on its own event loop, a channel to it, and its database's URL.

    `check` is the module's property, which `expect` applies. A server stream that never ends by itself is
    read for `stream_window` seconds and then cancelled; without a window, only its first message is read.
    """

    loop: asyncio.AbstractEventLoop
    server: ModelplaneServer
    channel: grpc.aio.Channel
    database_url: str
    service: ServiceDescriptor
    check: Check
    stream_window: float | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    async def call(
        self, method: MethodDescriptor, request: Request
    ) -> tuple[RichError | None, list[Message]]:
        """The rich error (None on OK) and the response messages received."""
        output_class = message_class(method.output_type)
        path = method_path(self.service, method.name)
        responses: list[Message] = []
        try:
            if method.client_streaming:
                assert not isinstance(request, Message)
                stream = self.channel.stream_stream(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(iter(request), timeout=CALL_TIMEOUT)
                async for response in stream:
                    responses.append(response)
            elif method.server_streaming:
                assert isinstance(request, Message)
                await self._read_stream(path, output_class, request, responses)
            else:
                assert isinstance(request, Message)
                responses.append(
                    await self.channel.unary_unary(
                        path, request_serializer=_serialize, response_deserializer=output_class.FromString
                    )(request, timeout=CALL_TIMEOUT)
                )
        except grpc.aio.AioRpcError as error:
            return rich(error), responses
        return None, responses

    def expect(self, method_name: str, request: Request) -> tuple[RichError | None, list[Message]]:
        """One call checked against the module's property; its outcome for the case's own assertions."""
        method = self.service.methods_by_name[method_name]
        error, responses = self.run(self.call(method, request))
        self.check(method, request, error, responses)
        return error, responses

    async def _read_stream(
        self, path: str, output_class: type[Message], request: Message, responses: list[Message]
    ) -> None:
        stream = self.channel.unary_stream(
            path, request_serializer=_serialize, response_deserializer=output_class.FromString
        )(request, timeout=CALL_TIMEOUT)
        if self.stream_window is None:
            try:
                first = await stream.read()
                # Anything but a message is the end of the stream (grpc.aio.EOF).
                if isinstance(first, Message):
                    responses.append(first)
            finally:
                stream.cancel()
            return
        try:
            async with asyncio.timeout(self.stream_window):
                async for response in stream:
                    responses.append(response)
        except TimeoutError:
            stream.cancel()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


@contextlib.contextmanager
def start_live_server(
    admin_url: str,
    template: str,
    service: ServiceDescriptor,
    check: Check,
    *,
    stream_window: float | None = None,
    **overrides: Any,
) -> Iterator[LiveServer]:
    """A started server on a new database copied from `template`, on a new event loop; all gone on exit.
    `overrides` are ServerConfig settings (http_address, say)."""
    loop = asyncio.new_event_loop()
    try:
        name, server, channel = loop.run_until_complete(_start(admin_url, template, **overrides))
        try:
            yield LiveServer(
                loop, server, channel, with_database(admin_url, name), service, check, stream_window
            )
        finally:
            loop.run_until_complete(_stop(admin_url, name, server, channel))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def create_database(admin_url: str, template: str) -> str:
    """A new database copied from `template` (migrated, maybe seeded); its name."""
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _start(
    admin_url: str, template: str, **overrides: Any
) -> tuple[str, ModelplaneServer, grpc.aio.Channel]:
    name = await create_database(admin_url, template)
    settings: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "database_url": with_database(admin_url, name),
        "auth": False,
        "health_probe_interval": 0.1,
        "shutdown_grace": 1.0,
        "watch_progress_interval": 0.2,
        **overrides,
    }
    server = build_server(ServerConfig(**settings))
    await server.start()
    await server.wait_serving(timeout=30)
    return name, server, grpc.aio.insecure_channel(server.target)


async def _stop(admin_url: str, name: str, server: ModelplaneServer, channel: grpc.aio.Channel) -> None:
    await channel.close(grace=None)
    await server.stop(grace=0)
    await drop_database(admin_url, name)


# ---------------------------------------------------------------------------------------------------------
# Checks


def described(method: MethodDescriptor, request: Request) -> str:
    """A call as a failure names it, its request cut at 2,000 characters."""
    return f"{method.name}({request!r:.2000})"


def check_error(
    error: RichError, where: str, documented: Mapping[grpc.StatusCode, Collection[str] | None]
) -> None:
    """What every error of the API promises.

    Its code is one of `documented`; it carries ErrorInfo in the "modelplane" domain with one of the
    reasons documented for the code (where they are None, any but an empty one); an INVALID_ARGUMENT names
    the paths of its fields, none of them blank.
    """
    assert error.code in documented, f"{error.code.name} from {where}: {error.message}"
    assert error.domain == "modelplane", (
        f"no ErrorInfo in the modelplane domain on {error.code.name} from {where}"
    )
    reasons = documented[error.code]
    if reasons is None:
        assert error.reason, f"an empty ErrorInfo.reason on {error.code.name} from {where}"
    else:
        assert error.reason in reasons, f"undocumented {error.code.name} {error.reason} from {where}"
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert error.field_paths, f"INVALID_ARGUMENT without field violations from {where}: {error.message}"
        assert all(path.strip() for path in error.field_paths), f"an empty field path from {where}: {error}"


def request_size(request: Request) -> int:
    """The bytes of a request on the wire, of all its messages for a stream."""
    return request.ByteSize() if isinstance(request, Message) else sum(m.ByteSize() for m in request)


def client_core_race(method: MethodDescriptor, error: RichError | None) -> bool:
    """Whether `error` is the client's own gRPC core losing a race with a stream the server ended early.

    Seen rarely, not reproducible on its own: a stream the server ends early while the client is still
    sending (a large chunk, say) comes back from the client's own gRPC core as INTERNAL "Internal error from
    Core", with none of the server's details. The server never sent that status.
    """
    return (
        method.client_streaming
        and error is not None
        and error.code == grpc.StatusCode.INTERNAL
        and error.message == "Internal error from Core"
        and not error.details
    )
