"""The transcoder: each HTTP request becomes one call to the gRPC server of this same process, over its
private loopback channel, with the raw request bytes and the caller's authorization and x-request-id.

Everything a gRPC client meets applies unchanged, because it is the same call: its scope (calls.py) checks the
token and the role, assigns the request id, turns domain errors into rich statuses, logs and counts it
once. This module only converts JSON to messages and statuses to HTTP, never decides anything itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelplane.server.calls import REQUEST_ID_KEY, new_request_id
from modelplane.server.error_status import internal_status
from modelplane.server.errors import InvalidArgument, ModelplaneError
from modelplane.server.http import streams, transcode
from modelplane.server.http.routes import Route, RouteTable
from modelplane.server.http.statuses import http_status, status_json, status_of, status_of_error
from modelplane.v1.error_reason_pb2 import ErrorReason

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
# Headers passed on to the call as metadata: the token, and the caller's request id.
FORWARDED_HEADERS = (AUTHORIZATION, REQUEST_ID_KEY)
# Longest a unary call made for an HTTP request may take (a gRPC client sets its own deadline; an HTTP
# one cannot, and nothing runs unbounded).
UNARY_DEADLINE = 60.0
HEALTH_DEADLINE = 5.0
# Seconds a stream's response waits for its first message or its end, so that a call refused at once
# (no token, a bad field, a missing deployment) answers with its HTTP status rather than 200 and an error
# event; past that the stream starts and any error comes as its last event.
FIRST_MESSAGE_WAIT = 2.0
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# Seconds an SSE stream may stay silent before it sends a keep-alive comment.
KEEPALIVE_INTERVAL = 15.0
# What the stream's iterator gives after its last message.
_END = object()


def _json(data: Any, status: int = 200, request_id: str = "") -> JSONResponse:
    headers = {"X-Request-Id": request_id} if request_id else None
    return JSONResponse(data, status_code=status, headers=headers)


def error_response(status: status_pb2.Status, request_id: str = "") -> JSONResponse:
    return _json(status_json(status), http_status(status), request_id)


def _metadata(request: Request) -> list[tuple[str, str]]:
    """The headers that travel as call metadata. Metadata is printable ASCII; a header that is not is
    left out, so the call fails as if it were missing (UNAUTHENTICATED for a token), not on gRPC's
    refusal of the value."""
    metadata = []
    for name in FORWARDED_HEADERS:
        value = request.headers.get(name)
        if value is not None and value.isascii() and value.isprintable():
            metadata.append((name, value))
    return metadata


def _request_id_of(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return ""


class Gateway:
    """Serves the routes of `table` by calling the gRPC server behind `channel`."""

    def __init__(self, channel: grpc.aio.Channel, table: RouteTable, *, max_body_bytes: int) -> None:
        self._channel = channel
        self.table = table
        self._max_body_bytes = max_body_bytes
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable[Any, Any]] = {}
        for route in table:
            response_class = GetMessageClass(route.method.output_type)
            serialize: Callable[[Message], bytes] = _serialize
            if route.server_streaming:
                self._stream[route.grpc_path] = channel.unary_stream(
                    route.grpc_path,
                    request_serializer=serialize,
                    response_deserializer=response_class.FromString,
                )
            else:
                self._unary[route.grpc_path] = channel.unary_unary(
                    route.grpc_path,
                    request_serializer=serialize,
                    response_deserializer=response_class.FromString,
                )
        self._health = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=_serialize,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    async def handle(self, request: Request) -> Response:
        """Any request under /v1/: finds its route, transcodes, calls, answers."""
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        found = self.table.find(request.method, raw_path)
        if found is None:
            return self._no_route(request.method, raw_path)
        route, path_values = found
        try:
            message = await self._read(request, route, path_values)
            if route.server_streaming:
                return await self._server_stream(request, route, message)
            return await self._unary_call(request, route, message)
        except ModelplaneError as exc:
            return error_response(status_of_error(exc), new_request_id())
        except Exception:
            request_id = new_request_id()
            log.exception(
                "unexpected error serving %s %s (request id %s)", request.method, raw_path, request_id
            )
            return error_response(_internal_status(), request_id)

    def _no_route(self, method: str, raw_path: str) -> Response:
        allowed = self.table.methods_at(raw_path)
        if allowed:
            status = status_pb2.Status(
                code=grpc.StatusCode.UNIMPLEMENTED.value[0],
                message=f"{method} is not served at {raw_path}; use {', '.join(allowed)}",
            )
            response = _json(status_json(status), 405)
            response.headers["Allow"] = ", ".join(allowed)
            return response
        status = status_pb2.Status(
            code=grpc.StatusCode.NOT_FOUND.value[0],
            message=f"no method is served at {raw_path}; the routes are listed in /openapi.json",
        )
        return _json(status_json(status), 404)

    async def _read(self, request: Request, route: Route, path_values: dict[str, str]) -> Message:
        body: Any = {}
        if request.method not in ("GET", "DELETE") or route.body:
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > self._max_body_bytes:
                    raise InvalidArgument.field(
                        transcode.BODY,
                        f"the body is over {self._max_body_bytes} bytes, the most a message may have",
                        reason=ErrorReason.ERROR_REASON_MALFORMED_REQUEST,
                    )
            body = transcode.parse_body(bytes(raw))
        query = request.query_params.multi_items()
        return transcode.build_request(route, path_values, query, body)

    async def _unary_call(self, request: Request, route: Route, message: Message) -> Response:
        call = self._unary[route.grpc_path](message, metadata=_metadata(request), timeout=UNARY_DEADLINE)
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            trailers = exc.trailing_metadata()
            status = status_of(exc.code(), exc.details(), trailers)
            return error_response(status, _request_id_of(trailers) or _request_id_of(exc.initial_metadata()))
        # A unary call's id comes in its trailers (see calls.py).
        request_id = _request_id_of(await call.trailing_metadata())
        return _json(transcode.response_json(route, response), 200, request_id)

    async def _server_stream(self, request: Request, route: Route, message: Message) -> Response:
        ids: streams.WatchIds | None = None
        if streams.is_resumable(route.method.input_type, route.method.output_type):
            # A browser's EventSource sends the id of the last event it saw when it reconnects.
            last_event_id = request.headers.get(streams.LAST_EVENT_ID)
            resume = streams.ResumePoint.parse(last_event_id) if last_event_id else None
            if resume is not None:
                setattr(message, streams.START_REVISION, resume.start_revision)
            ids = streams.WatchIds(resume)
        call = self._stream[route.grpc_path](message, metadata=_metadata(request))
        messages = aiter(call)
        first: asyncio.Future[Any] = asyncio.ensure_future(anext(messages, _END))
        await asyncio.wait({first}, timeout=FIRST_MESSAGE_WAIT)
        if first.done() and isinstance(first.exception(), grpc.aio.AioRpcError):
            exc = first.exception()
            assert isinstance(exc, grpc.aio.AioRpcError)
            trailers = exc.trailing_metadata()
            return error_response(status_of(exc.code(), exc.details(), trailers), _request_id_of(trailers))
        ndjson = streams.wants_ndjson(request.headers.get("accept", ""))
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if first.done():
            request_id = _request_id_of(await call.initial_metadata())
            if request_id:
                headers["X-Request-Id"] = request_id
        frames = _frames(call, messages, first, route, ids, ndjson=ndjson)
        return _CallStream(
            call, frames, media_type=streams.NDJSON if ndjson else streams.SSE, headers=headers
        )

    async def health(self, request: Request) -> Response:
        """grpc.health.v1 Check of ?service= (default: the whole server): 200 SERVING, else 503."""
        service = request.query_params.get("service", "")
        try:
            answer = await self._health(
                health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_DEADLINE
            )
        except grpc.aio.AioRpcError as exc:
            return error_response(status_of(exc.code(), exc.details(), exc.trailing_metadata()))
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        return _json({"status": name}, 200 if serving else 503)


class _CallStream(StreamingResponse):
    """A streaming response that ends its gRPC call however the response ends, even when the client went
    away before its first byte (then the frames' own cleanup never runs)."""

    def __init__(
        self, call: grpc.aio.UnaryStreamCall[Any, Any], content: AsyncIterator[bytes], **kwargs: Any
    ):
        super().__init__(content, **kwargs)
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._call.cancel()


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _internal_status() -> status_pb2.Status:
    status = internal_status()
    return status_of(status.code, status.details, status.trailing_metadata)


async def _frames(
    call: grpc.aio.UnaryStreamCall[Any, Any],
    messages: AsyncIterator[Any],
    first: asyncio.Future[Any],
    route: Route,
    ids: streams.WatchIds | None,
    *,
    ndjson: bool,
) -> AsyncIterator[bytes]:
    """The stream's messages as SSE events or NDJSON lines, and its error, if any, last. An SSE stream idle
    for KEEPALIVE_INTERVAL seconds (a tail with nothing new) sends a comment line, which EventSource
    ignores, so that proxies and browsers do not close it as dead."""
    pending = first
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_INTERVAL)
            if not done:
                if not ndjson:
                    yield streams.SSE_KEEPALIVE
                continue
            message = pending.result()
            if message is _END:
                break
            pending = asyncio.ensure_future(anext(messages, _END))
            event_id = ids.id_of(message) if ids is not None else ""
            # None: a change a resumed client already has.
            if event_id is not None:
                data = transcode.response_json(route, message)
                if ndjson:
                    yield streams.ndjson_line("result", data)
                else:
                    yield streams.sse_event(data, event_id=event_id)
    except grpc.aio.AioRpcError as exc:
        status = status_json(status_of(exc.code(), exc.details(), exc.trailing_metadata()))
        yield streams.ndjson_line("error", status) if ndjson else streams.sse_event(status, event="error")
    finally:
        pending.cancel()
        call.cancel()
