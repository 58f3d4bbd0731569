"""Around every call: request ids, authentication, domain errors as rich statuses, access log, metrics.

Everything that must happen around each call happens in the wrapper put around its handler (CallWrapper,
one generic wrapper for all four handler kinds), once, when the server's method table is built
(MethodTable); finding a call's handler is then one dict lookup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import os
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from modelplane.client.trace_context import current_trace_ids
from modelplane.server import error_status
from modelplane.server.context import ANONYMOUS, CallDeadline, Caller, current_caller, current_deadline
from modelplane.server.errors import (
    FieldViolation,
    InvalidArgument,
    ModelplaneError,
    ResourceExhausted,
    Unavailable,
)
from modelplane.server.metrics import GRPC_TYPES, MethodMetrics, ServerMetrics
from modelplane.server.nul_characters import refuse_nul_characters
from modelplane.server.stream_drain import ResumableRequests
from modelplane.v1.error_reason_pb2 import ErrorReason

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

    from modelplane.server.auth.scopes import TokenScope

log = logging.getLogger(__name__)
access_log = logging.getLogger("modelplane.access")

REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"
SHUTTING_DOWN = ErrorReason.ERROR_REASON_SHUTTING_DOWN

# Open to everyone, and still answered while the server drains, so that probes see NOT_SERVING.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# A request id the client chose is echoed and logged, so it must be short and harmless in a log line.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

# Which attribute of a handler holds its behaviour, and how to build one of the same kind,
# by (request_streaming, response_streaming).
_HANDLER_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class CallAuthenticator(Protocol):
    """What the call's scope needs from auth: the Caller of a method with its `authorization`, or an error."""

    async def authenticate(self, method: str, authorization: str | None) -> Caller: ...


MALFORMED_REQUEST = ErrorReason.ERROR_REASON_MALFORMED_REQUEST

# Turns a request's bytes into its message; None (a handler without one) leaves them bytes.
Parse = Callable[[bytes], Any] | None


def _parsed(raw: bytes, parse: Parse, method: str, stream_message: int) -> Any:
    """The request message, or InvalidArgument (MALFORMED_REQUEST) for bytes that do not parse.

    gRPC itself would answer UNKNOWN with the parser's exception text, before auth, and log a traceback;
    parsing here, inside the call's scope and after auth, gives the client a status it can act on.
    """
    if parse is None:
        return raw
    try:
        return parse(raw)
    except Exception:  # any failure to parse is the client's bytes, whatever the parser calls it
        name = method.rpartition("/")[2]
        where = f"message {stream_message} of the stream" if stream_message else "the request"
        raise InvalidArgument(
            [
                FieldViolation(
                    "request",
                    f"{where} is not a valid {name} request: its bytes do not parse or a string field is"
                    " not UTF-8; send a message serialized by a protobuf library from this API's protos",
                )
            ],
            reason=MALFORMED_REQUEST,
            metadata={"stream_message": str(stream_message)} if stream_message else None,
        ) from None


async def _parsed_stream(
    requests: AsyncIterator[bytes], parse: Parse, method: str, check_text: bool, scope: TokenScope | None
) -> AsyncIterator[Any]:
    index = 0
    async for raw in requests:
        index += 1
        message = _parsed(raw, parse, method, index)
        if scope is not None:
            scope.check(message)
        if check_text:
            try:
                refuse_nul_characters(message)
            except InvalidArgument as exc:
                exc.stream_message = message
                raise
        yield message


def _request(
    raw: Any, parse: Parse, method: str, streaming: bool, checked_by_handler: bool, scope: TokenScope | None
) -> Any:
    """The request, or the stream of requests, parsed, within a scoped token's scope, and with every text
    field checked (unless the handler checks its own) before the handler sees it."""
    if streaming:
        return _parsed_stream(raw, parse, method, not checked_by_handler, scope)
    request = _parsed(raw, parse, method, 0)
    if scope is not None:
        scope.check(request)
    if not checked_by_handler:
        refuse_nul_characters(request)
    return request


RESPONSE_TOO_LARGE = ErrorReason.ERROR_REASON_RESPONSE_TOO_LARGE

# Turns a response message into its bytes; None (a handler without one) means it already is bytes.
Serialize = Callable[[Any], bytes] | None


def _sent_as_is(serialize: Serialize) -> Serialize:
    """The serializer gRPC is given: the bytes `_serialized` made pass through, and a message a handler
    writes with context.write is serialized as before."""
    if serialize is None:
        return None

    def serialize_unless_bytes(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serialize_unless_bytes


def _serialized(response: Any, serialize: Serialize, limit: int | None) -> Any:
    """The response as the bytes gRPC sends, or ResourceExhausted (RESPONSE_TOO_LARGE) over `limit`.

    gRPC refuses an oversized message only while sending it, after the handler returned: the client
    gets RESOURCE_EXHAUSTED, while the server is told nothing (no exception on a unary call, no code and
    no cancellation on the context's done callback; a stream's generator is merely closed), so the access
    log and metrics said OK. Serializing here, inside the call's scope, costs no more than gRPC doing it
    and lets the scope record what the client gets.
    """
    data = response if serialize is None else serialize(response)
    if limit is not None and type(data) is bytes and len(data) > limit:
        raise ResourceExhausted(
            f"the response is {len(data)} bytes, over this server's message limit of {limit} bytes;"
            " ask for less at a time (a smaller page_size or a narrower filter)",
            reason=RESPONSE_TOO_LARGE,
            metadata={"response_bytes": str(len(data)), "max_bytes": str(limit)},
        )
    return data


def is_open_method(method: str) -> bool:
    return method.startswith(OPEN_METHOD_PREFIXES)


class _RequestIds:
    """Ids for calls that bring none: 64 random bits drawn once per process, then a counter. Unique across
    workers and replicas as a uuid4 would be, at a fraction of its cost per call."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self._prefix = secrets.token_hex(8) + "-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return self._prefix + format(next(self._counter), "x")


_request_ids = _RequestIds()
# A forked child must not repeat its parent's ids.
os.register_at_fork(after_in_child=_request_ids.renew)


def new_request_id() -> str:
    """A request id unique across every process of every replica."""
    return _request_ids.next()


def _request_id_and_authorization(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[str, str | None]:
    """The call's usable x-request-id (else a new one) and its authorization value, in one pass."""
    request_id: str | None = None
    authorization: str | None = None
    for key, value in metadata or ():
        if (
            key == REQUEST_ID_KEY
            and request_id is None
            and isinstance(value, str)
            and _REQUEST_ID.match(value)
        ):
            request_id = value
        elif key == AUTHORIZATION_KEY and authorization is None and isinstance(value, str):
            authorization = value
    return request_id or _request_ids.next(), authorization


@dataclasses.dataclass(frozen=True)
class CallParts:
    """What the server does around each call. A server runs every part (sampling its access log as
    configured); the call-overhead benchmark (bench/call_overhead.py) turns parts off to price each one."""

    # Each handler runs in the call's scope: request id, auth, parsing, errors as statuses. Without it the
    # server's handlers run as the generated code made them and every part below is off too.
    scope: bool = True

    # x-request-id in the trailers of every call, and in the headers of a streaming response's first
    # message (clients can log it before a stream ends).
    request_id_metadata: bool = True
    # grpc_server_* metrics.
    metrics: bool = True
    # Share of successful calls written to the access log (failed calls always are); 0 with a level of
    # WARNING or above on modelplane.access writes none.
    access_log_sample: float = 1.0
    # The access log names each call's trace and span (the server is traced: see tracing.py).
    access_log_trace: bool = False


class _MethodDetails:
    """What a generic handler is asked about a method (grpc.HandlerCallDetails), outside any call."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


class _HandlerCollector:
    """Stands in for the server that a generated add_*_to_server function adds its handlers to."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        # The same handlers come through add_generic_rpc_handlers as well.
        pass

    def find(self, method: str) -> grpc.RpcMethodHandler[Any, Any] | None:
        details = _MethodDetails(method)
        for generic in self.generic:
            handler = generic.service(details)  # type: ignore[arg-type]
            if handler is not None:
                return handler
        return None


class MethodTable(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method of the server, by full name, each handler wrapped in the call's scope once, when added.

    The server's only handler, with no interceptor and no registered method: grpc.aio runs its
    interceptors for every call (coroutines and a partial each), then looks the method up among the
    registered ones, then asks each generic handler in turn; and its accept loop keeps one pending request
    per registered method, every one of which asyncio.wait walks again for each call that arrives (80 of
    them for this server's services). Here a call costs one dict lookup, and one pending request.
    """

    def __init__(self, calls: CallWrapper) -> None:
        self._calls = calls
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._others: list[grpc.GenericRpcHandler[Any, Any]] = []

    def add_service(
        self,
        service: ServiceDescriptor,
        add_to_server: Callable[[Any, Any], None],
        servicer: object,
    ) -> None:
        """Adds `servicer`'s methods of `service`, as its generated `add_<Service>Servicer_to_server`
        function would add them to a server."""
        collector = _HandlerCollector()
        add_to_server(servicer, collector)
        for method in service.methods:
            name = f"/{service.full_name}/{method.name}"
            handler = collector.find(name)
            if handler is None:
                raise ValueError(f"{add_to_server.__name__} adds no handler for {name}")
            self._handlers[name] = self._calls.wrap(handler, name)

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        """More handlers (a test's service): asked for the methods the table does not know, and wrapped in
        the call's scope like the table's own, once each."""
        self._others.extend(handlers)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        found = self._handlers.get(handler_call_details.method)
        if found is None and self._others:
            found = self._from_others(handler_call_details)
        return found

    def _from_others(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        for generic in self._others:
            handler = generic.service(details)
            if handler is not None:
                wrapped = self._handlers[details.method] = self._calls.wrap(handler, details.method)
                return wrapped
        # Unknown: gRPC answers UNIMPLEMENTED itself.
        return None


class CallWrapper:
    """Wraps every handler of the server in the call's scope; also ends open streams when the server shuts
    down."""

    def __init__(
        self,
        authenticator: CallAuthenticator,
        metrics: ServerMetrics,
        *,
        text_checked_by_handler: Collection[str] = (),
        max_response_bytes: int | None = None,
        parts: CallParts = CallParts(),
    ) -> None:
        """`text_checked_by_handler`: full method names whose handlers look for the NUL character in
        their requests themselves (on a hot path, where a second walk over every field would cost more
        than the handler's own reading of them)."""
        self._authenticator = authenticator
        self._metrics = metrics
        self._text_checked_by_handler = frozenset(text_checked_by_handler)
        self.parts = parts
        # The server's grpc.max_send_message_length, checked by `_serialized` before gRPC sends.
        self._max_response_bytes = max_response_bytes
        self._draining = False
        # Tasks of calls with a streaming response, so shutdown can end them with a resumable status.
        self._streams: set[asyncio.Task[Any]] = set()
        self._ended_by_server: set[asyncio.Task[Any]] = set()

    def wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` of `method` ("/package.Service/Method") inside the call's scope (as it is, with
        CallParts.scope off)."""
        if not self.parts.scope:
            return handler
        attribute, build = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        behaviour: Callable[[Any, Any], Any] = getattr(handler, attribute)
        streaming = handler.request_streaming
        open_method = is_open_method(method)
        # Health and reflection requests are gRPC's own, never stored: no NUL check for them.
        checked_by_handler = method in self._text_checked_by_handler or open_method
        parse: Parse = handler.request_deserializer
        serialize: Serialize = handler.response_serializer
        limit = self._max_response_bytes
        kind = GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        metrics = self._metrics.method(method, kind) if self.parts.metrics else None
        wrapper = self

        def open_call(
            raw: Any, context: grpc.aio.ServicerContext[Any, Any], streaming_response: bool
        ) -> tuple[_CallScope, Any]:
            """The call's scope, and what the handler is to read: the request's bytes, or the stream."""
            requests = ResumableRequests(raw) if streaming else None
            call = _CallScope(
                wrapper, method, metrics, context, requests, streaming_response=streaming_response
            )
            return call, raw if requests is None else requests

        def parsed(call: _CallScope, raw: Any) -> Any:
            """The request, or the stream of requests, parsed and checked within the call's token scope."""
            return _request(raw, parse, method, streaming, checked_by_handler, call.scope)

        async def unary_response(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call, raw = open_call(raw, context, False)
            try:
                await call.admit(open_method)
                result = behaviour(parsed(call, raw), context)
                response = await result if inspect.isawaitable(result) else result
                data = _serialized(response, serialize, limit)
            except BaseException as exc:
                await call.fail(exc)
                raise
            # The id is in the trailers alone: a unary response's headers and trailers reach the client
            # together, and headers of their own would cost gRPC a batch of their own.
            await call.succeed()
            return data

        async def streaming_response(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call, raw = open_call(raw, context, True)
            try:
                await call.admit(open_method)
                result = behaviour(parsed(call, raw), context)
                # A handler is an async generator, a coroutine that writes with context.write, or
                # (generated base classes) a plain function that raises.
                if inspect.isawaitable(result):
                    # It writes its responses itself (health's Watch does), past where they could be seen.
                    await call.send_headers()
                    await result
                elif isinstance(result, AsyncIterator):
                    try:
                        async for response in result:
                            data = _serialized(response, serialize, limit)
                            await call.send_headers()
                            yield data
                    finally:
                        # A response refused above leaves the handler's generator open: end it now.
                        aclose = getattr(result, "aclose", None)
                        if aclose is not None:
                            await aclose()
                elif isinstance(result, Iterable):
                    for response in result:
                        data = _serialized(response, serialize, limit)
                        await call.send_headers()
                        yield data
            except BaseException as exc:
                await call.fail(exc)
                raise
            await call.succeed()

        wrapped = streaming_response if handler.response_streaming else unary_response
        # gRPC hands the wrapper the request's bytes: `_request` parses them inside the call's scope.
        return build(
            wrapped,
            request_deserializer=None,
            response_serializer=_sent_as_is(serialize),
        )

    async def end_streams(self, wait: float) -> None:
        """Refuses new calls (except health) and ends open streams with UNAVAILABLE / SHUTTING_DOWN."""
        self._draining = True
        tasks = [task for task in self._streams if not task.done()]
        for task in tasks:
            self._ended_by_server.add(task)
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=wait)


class _CallScope:
    """Everything around one call: `admit` before the handler runs, then `succeed` or `fail` with its
    outcome, once."""

    __slots__ = (
        "_actor",
        "_context",
        "_headers_sent",
        "_method",
        "_metrics",
        "_request_id",
        "_requests",
        "_started",
        "_streaming",
        "_task",
        "_wrapper",
        "scope",
    )

    def __init__(
        self,
        wrapper: CallWrapper,
        method: str,
        metrics: MethodMetrics | None,
        context: grpc.aio.ServicerContext[Any, Any],
        requests: ResumableRequests | None,
        *,
        streaming_response: bool,
    ) -> None:
        """`requests`: the request stream, when the request streams."""
        self._wrapper = wrapper
        self._requests = requests
        self._method = method
        self._metrics = metrics
        self._context = context
        self._streaming = streaming_response
        self._started = time.perf_counter()
        self._request_id = ""
        self._headers_sent = False
        self._actor = ANONYMOUS
        self.scope: TokenScope | None = None
        self._task: asyncio.Task[Any] | None = None

    async def admit(self, open_method: bool) -> None:
        """Names the call (request id), sets its deadline and caller; raises when it may not go on.

        `open_method`: everyone may call it (is_open_method), even while the server drains."""
        if self._metrics is not None:
            self._metrics.started()
        self._request_id, authorization = _request_id_and_authorization(self._context.invocation_metadata())
        task = asyncio.current_task()
        # The pool ends this call's database work by its deadline (see Database.connection); the deadline
        # is read from gRPC only when the call borrows a connection.
        current_deadline.set(CallDeadline(task, time_remaining=self._context.time_remaining))
        if self._streaming and task is not None:
            self._task = task
            self._wrapper._streams.add(task)
        if self._wrapper.parts.request_id_metadata:
            self._context.set_trailing_metadata(((REQUEST_ID_KEY, self._request_id),))
        if open_method:
            given = None
        else:
            if self._wrapper._draining:
                raise Unavailable("the server is shutting down; retry", reason=SHUTTING_DOWN)
            given = await self._wrapper._authenticator.authenticate(self._method, authorization)
            self._actor = given.actor
            self.scope = given.scope
        # The handler runs in this task, so the contextvar set here is what it reads; each call is its
        # own task, so there is nothing to reset afterwards.
        current_caller.set(
            Caller(
                actor=self._actor,
                role=None if given is None else given.role,
                method=self._method,
                trace_request_id=self._request_id,
                scope=self.scope,
            )
        )

    async def send_headers(self) -> None:
        """Sends x-request-id in the headers of a streaming response, once, as its first message goes out.

        Not earlier: a call that fails before answering must end Trailers-Only, since headers commit an
        RPC and gRPC's built-in retry (the published service config, `grpc-retry-pushback-ms`) never
        retries a committed one. Its id is then in the trailers alone."""
        if self._headers_sent or not self._wrapper.parts.request_id_metadata:
            return
        self._headers_sent = True
        await self._context.send_initial_metadata(((REQUEST_ID_KEY, self._request_id),))

    async def succeed(self) -> None:
        """The handler returned: the call ends with the code it set (OK unless it set one)."""
        if self._requests is not None:
            await self._drain()
        self._finish(self._context.code() or grpc.StatusCode.OK)

    async def _drain(self) -> None:
        """Before the server's status goes out, waits (bounded) for the client to finish sending: a status
        that overtakes a client's send reaches it as INTERNAL from its own gRPC core (see stream_drain)."""
        if self._requests is None:
            return
        try:
            await self._requests.drain(self._context.time_remaining())
        except asyncio.CancelledError:
            # The client cancelled meanwhile: nobody is left to receive a status.
            self._finish(grpc.StatusCode.CANCELLED)
            raise

    async def fail(self, exc: BaseException) -> None:
        """Logs the outcome of a failed call and, where the status is ours to give, aborts with it."""
        if self._task is not None and self._task in self._wrapper._ended_by_server:
            self._wrapper._ended_by_server.discard(self._task)
            if isinstance(exc, asyncio.CancelledError):
                await self._abort(
                    error_status.unavailable_status(SHUTTING_DOWN, "the server is shutting down")
                )
        if isinstance(exc, grpc.aio.AbortError):
            # The handler (or this scope) already sent its status.
            self._finish(self._context.code() or grpc.StatusCode.UNKNOWN)
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            # The client went away or the deadline passed: nobody is left to receive a status.
            self._finish(grpc.StatusCode.CANCELLED)
        elif isinstance(exc, ModelplaneError):
            await self._abort(error_status.to_status(exc))
        elif isinstance(exc, NotImplementedError):
            # Generated base servicers raise this for methods a capability does not implement yet.
            await self._abort_plain(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")
        elif isinstance(exc, Exception):
            log.error("unexpected error in %s (request id %s)", self._method, self._request_id, exc_info=exc)
            await self._abort(error_status.internal_status())
        else:
            self._finish(grpc.StatusCode.UNKNOWN)

    async def _abort(self, status: grpc.Status) -> None:
        trailing = (*status.trailing_metadata, (REQUEST_ID_KEY, self._request_id))
        await self._abort_plain(status.code, status.details, trailing)

    async def _abort_plain(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing: tuple[tuple[str, str | bytes], ...] | None = None,
    ) -> None:
        await self._drain()
        self._finish(code)
        metadata = trailing if trailing is not None else ((REQUEST_ID_KEY, self._request_id),)
        await self._context.abort(code, details, metadata)

    def _finish(self, code: grpc.StatusCode) -> None:
        if self._task is not None:
            self._wrapper._streams.discard(self._task)
        seconds = time.perf_counter() - self._started
        if self._metrics is not None:
            self._metrics.handled(code.name, seconds)
        if code is grpc.StatusCode.OK:
            sample = self._wrapper.parts.access_log_sample
            if sample < 1.0 and (sample <= 0.0 or random.random() >= sample):
                return
        if self._wrapper.parts.access_log_trace:
            trace_id, span_id = current_trace_ids()
            access_log.info(
                "%s %s %.1fms actor=%s request_id=%s trace_id=%s span_id=%s",
                self._method,
                code.name,
                seconds * 1000,
                self._actor,
                self._request_id,
                trace_id,
                span_id,
            )
            return
        access_log.info(
            "%s %s %.1fms actor=%s request_id=%s",
            self._method,
            code.name,
            seconds * 1000,
            self._actor,
            self._request_id,
        )
