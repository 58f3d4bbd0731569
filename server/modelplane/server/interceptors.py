"""The server interceptor: request ids, authentication, domain errors as rich statuses, access log, metrics.

A grpc.aio interceptor only finds the handler; everything that must happen around each call happens in
the wrapper it puts around that handler, one generic wrapper for all four handler kinds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from types import TracebackType
from typing import Any, Protocol

import grpc

from modelplane.server import error_status
from modelplane.server.context import ANONYMOUS, Caller, current_caller
from modelplane.server.errors import InvalidArgument, ModelplaneError, Unavailable
from modelplane.server.metrics import ServerMetrics
from modelplane.server.nul_characters import refuse_nul_characters

log = logging.getLogger(__name__)
access_log = logging.getLogger("modelplane.access")

REQUEST_ID_KEY = "x-request-id"
AUTHORIZATION_KEY = "authorization"
SHUTTING_DOWN = "SHUTTING_DOWN"

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


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in requests:
        try:
            refuse_nul_characters(message)
        except InvalidArgument as exc:
            exc.stream_message = message
            raise
        yield message


def _checked(request: Any, streaming: bool, checked_by_handler: bool) -> Any:
    """The request, or the stream of requests, with every text field checked before the handler sees it."""
    if checked_by_handler:
        return request
    if streaming:
        return _checked_stream(request)
    refuse_nul_characters(request)
    return request


def is_open_method(method: str) -> bool:
    return method.startswith(OPEN_METHOD_PREFIXES)


def _metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    given = _metadata_value(context, REQUEST_ID_KEY)
    if given is not None and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler of the server; also ends open streams when the server shuts down."""

    def __init__(
        self,
        authenticator: CallAuthenticator,
        metrics: ServerMetrics,
        *,
        text_checked_by_handler: Collection[str] = (),
    ) -> None:
        """`text_checked_by_handler`: full method names whose handlers look for the NUL character in
        their requests themselves (on a hot path, where a second walk over every field would cost more
        than the handler's own reading of them)."""
        self._authenticator = authenticator
        self._metrics = metrics
        self._text_checked_by_handler = frozenset(text_checked_by_handler)
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
        if handler is None:
            # Unknown method: gRPC answers UNIMPLEMENTED itself.
            return handler
        return self._wrap(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        attribute, build = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        behaviour: Callable[[Any, Any], Any] = getattr(handler, attribute)
        streaming, checked_by_handler = handler.request_streaming, method in self._text_checked_by_handler

        async def unary_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with _CallScope(self, method, context, streaming=False):
                result = behaviour(_checked(request, streaming, checked_by_handler), context)
                return await result if inspect.isawaitable(result) else result

        async def streaming_response(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with _CallScope(self, method, context, streaming=True):
                result = behaviour(_checked(request, streaming, checked_by_handler), context)
                # A handler is an async generator, a coroutine that writes with context.write, or
                # (generated base classes) a plain function that raises.
                if inspect.isawaitable(result):
                    await result
                elif isinstance(result, AsyncIterator):
                    async for response in result:
                        yield response
                elif isinstance(result, Iterable):
                    for response in result:
                        yield response

        wrapped = streaming_response if handler.response_streaming else unary_response
        return build(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
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

    @property
    def open_streams(self) -> int:
        return len(self._streams)


class _CallScope:
    """Everything around one call: entered before the handler runs, exited with its outcome."""

    def __init__(
        self,
        interceptor: CallInterceptor,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        streaming: bool,
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._context = context
        self._streaming = streaming
        self._started = time.perf_counter()
        self._request_id = ""
        self._actor = ANONYMOUS
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> _CallScope:
        # Nothing in here may raise: failures are raised from `_admit`, inside the scope, so that
        # __aexit__ turns them into statuses like any other error.
        self._request_id = _request_id(self._context)
        self._context.set_trailing_metadata(((REQUEST_ID_KEY, self._request_id),))
        current_caller.set(
            Caller(actor=ANONYMOUS, role=None, method=self._method, trace_request_id=self._request_id)
        )
        if self._streaming:
            self._task = asyncio.current_task()
            if self._task is not None:
                self._interceptor._streams.add(self._task)
        await self._admit()
        return self

    async def _admit(self) -> None:
        try:
            if self._streaming:
                # A stream's caller may want the id before the stream ends; a unary call gets it with its
                # trailers, which saves a metadata frame on the hot path.
                await self._context.send_initial_metadata(((REQUEST_ID_KEY, self._request_id),))
            open_method = is_open_method(self._method)
            if self._interceptor._draining and not open_method:
                raise Unavailable("the server is shutting down; retry", reason=SHUTTING_DOWN)
            if open_method:
                return
            caller = await self._interceptor._authenticator.authenticate(
                self._method, _metadata_value(self._context, AUTHORIZATION_KEY)
            )
        except BaseException as exc:
            await self._fail(exc)
            raise
        self._actor = caller.actor
        # The handler runs in this task, so the contextvar set here is what it reads; each call is its
        # own task, so there is nothing to reset afterwards.
        current_caller.set(
            dataclasses.replace(caller, method=self._method, trace_request_id=self._request_id)
        )

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
        self._interceptor._metrics.observe(self._method, code.name, seconds)
        access_log.info(
            "%s %s %.1fms actor=%s request_id=%s",
            self._method,
            code.name,
            seconds * 1000,
            self._actor,
            self._request_id,
        )
