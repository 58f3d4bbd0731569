"""The server interceptor: request ids, authentication, domain errors as rich statuses, access log, metrics.

A grpc.aio interceptor only finds the handler; everything that must happen around each call happens in
the wrapper it puts around that handler, one generic wrapper for all four handler kinds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import math
import os
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from types import TracebackType
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
from modelplane.v1.error_reason_pb2 import ErrorReason

if TYPE_CHECKING:
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
    """What the interceptor needs from auth: the Caller of a method with its `authorization`, or an error."""

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
    """What the interceptor does around each call. A server runs every part (sampling its access log as
    configured); the call-overhead benchmark (bench/call_overhead.py) turns parts off to price each one."""

    # The interceptor is installed on the gRPC server at all (build_server reads this).
    intercept: bool = True
    # It wraps each handler in the call's scope: request id, auth, parsing, errors as statuses. Without it
    # the interceptor only looks the handler up and every part below is off too.
    scope: bool = True

    # x-request-id in the headers of the first response (clients can log it before a stream ends) and in
    # the trailers.
    request_id_metadata: bool = True
    # grpc_server_* metrics.
    metrics: bool = True
    # Share of successful calls written to the access log (failed calls always are); 0 with a level of
    # WARNING or above on modelplane.access writes none.
    access_log_sample: float = 1.0
    # The access log names each call's trace and span (the server is traced: see tracing.py).
    access_log_trace: bool = False


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler of the server; also ends open streams when the server shuts down."""

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
        # The wrapper made for each method's handler, made once: gRPC asks the interceptor on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}
        # The server's grpc.max_send_message_length, checked by `_serialized` before gRPC sends.
        self._max_response_bytes = max_response_bytes
        self._draining = False
        # Tasks of calls with a streaming response, so shutdown can end them with a resumable status.
        self._streams: set[asyncio.Task[Any]] = set()
        self._ended_by_server: set[asyncio.Task[Any]] = set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or not self.parts.scope:
            # Unknown method: gRPC answers UNIMPLEMENTED itself.
            return handler
        method = handler_call_details.method
        made = self._wrapped.get(method)
        if made is not None and made[0] is handler:
            return made[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        attribute, build = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        behaviour: Callable[[Any, Any], Any] = getattr(handler, attribute)
        streaming = handler.request_streaming
        # Health and reflection requests are gRPC's own, never stored: no NUL check for them.
        checked_by_handler = method in self._text_checked_by_handler or is_open_method(method)
        parse: Parse = handler.request_deserializer
        serialize: Serialize = handler.response_serializer
        limit = self._max_response_bytes
        kind = GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        metrics = self._metrics.method(method, kind) if self.parts.metrics else None

        async def unary_response(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with _CallScope(self, method, metrics, context, streaming=False) as call:
                request = _request(raw, parse, method, streaming, checked_by_handler, call.scope)
                result = behaviour(request, context)
                response = await result if inspect.isawaitable(result) else result
                data = _serialized(response, serialize, limit)
                await call.send_headers()
                return data

        async def streaming_response(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with _CallScope(self, method, metrics, context, streaming=True) as call:
                request = _request(raw, parse, method, streaming, checked_by_handler, call.scope)
                result = behaviour(request, context)
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
    """Everything around one call: entered before the handler runs, exited with its outcome."""

    def __init__(
        self,
        interceptor: CallInterceptor,
        method: str,
        metrics: MethodMetrics | None,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        streaming: bool,
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._metrics = metrics
        self._context = context
        self._streaming = streaming
        self._started = time.perf_counter()
        self._request_id = ""
        self._headers_sent = False
        self._actor = ANONYMOUS
        self.scope: TokenScope | None = None
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> _CallScope:
        # Nothing in here may raise: failures are raised from `_admit`, inside the scope, so that
        # __aexit__ turns them into statuses like any other error.
        if self._metrics is not None:
            self._metrics.started()
        self._request_id, authorization = _request_id_and_authorization(self._context.invocation_metadata())
        # The pool ends this call's database work by its deadline (see Database.connection).
        remaining = self._context.time_remaining()
        current_deadline.set(
            CallDeadline(
                asyncio.current_task(),
                math.inf if remaining is None else asyncio.get_running_loop().time() + remaining,
            )
        )
        if self._streaming:
            self._task = asyncio.current_task()
            if self._task is not None:
                self._interceptor._streams.add(self._task)
        await self._admit(authorization)
        return self

    async def send_headers(self) -> None:
        """Sends x-request-id in the response headers, once, as the first response goes out.

        Not earlier: a call that fails before answering must end Trailers-Only, since headers commit an
        RPC and gRPC's built-in retry (the published service config, `grpc-retry-pushback-ms`) never
        retries a committed one. Its id is then in the trailers alone."""
        if self._headers_sent or not self._interceptor.parts.request_id_metadata:
            return
        self._headers_sent = True
        await self._context.send_initial_metadata(((REQUEST_ID_KEY, self._request_id),))

    async def _admit(self, authorization: str | None) -> None:
        method, request_id = self._method, self._request_id
        try:
            if self._interceptor.parts.request_id_metadata:
                self._context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            open_method = is_open_method(method)
            if self._interceptor._draining and not open_method:
                raise Unavailable("the server is shutting down; retry", reason=SHUTTING_DOWN)
            if open_method:
                caller = Caller(actor=ANONYMOUS, role=None, method=method, trace_request_id=request_id)
            else:
                given = await self._interceptor._authenticator.authenticate(method, authorization)
                caller = Caller(
                    actor=given.actor,
                    role=given.role,
                    method=method,
                    trace_request_id=request_id,
                    scope=given.scope,
                )
        except BaseException as exc:
            await self._fail(exc)
            raise
        self._actor = caller.actor
        self.scope = caller.scope
        # The handler runs in this task, so the contextvar set here is what it reads; each call is its
        # own task, so there is nothing to reset afterwards.
        current_caller.set(caller)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None:
            self._finish(self._context.code() or grpc.StatusCode.OK)
            return False
        await self._fail(exc)
        return False

    async def _fail(self, exc: BaseException) -> None:
        """Logs the outcome of a failed call and, where the status is ours to give, aborts with it."""
        if self._task is not None and self._task in self._interceptor._ended_by_server:
            self._interceptor._ended_by_server.discard(self._task)
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
        self._finish(code)
        metadata = trailing if trailing is not None else ((REQUEST_ID_KEY, self._request_id),)
        await self._context.abort(code, details, metadata)

    def _finish(self, code: grpc.StatusCode) -> None:
        if self._task is not None:
            self._interceptor._streams.discard(self._task)
        seconds = time.perf_counter() - self._started
        if self._metrics is not None:
            self._metrics.handled(code.name, seconds)
        if code is grpc.StatusCode.OK:
            sample = self._interceptor.parts.access_log_sample
            if sample < 1.0 and (sample <= 0.0 or random.random() >= sample):
                return
        if self._interceptor.parts.access_log_trace:
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
