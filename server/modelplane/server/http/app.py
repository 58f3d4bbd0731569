"""The HTTP application: the RPCs under /v1/, health at /healthz, the OpenAPI document at /openapi.json,
and the web console at / when its files are installed.

A plain ASGI callable dispatching on the path's first segment: every request under /v1/ reaches the
transcoder, whatever its characters (a router's patterns would turn a newline in a resource name into a
bare 404), and every answer there is a google.rpc.Status in JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from modelplane.server.http.console import ConsoleFiles
from modelplane.server.http.gateway import Gateway
from modelplane.server.http.routes import RouteTable

OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"
API_PREFIX = "/v1/"
HEALTH_PATH = "/healthz"
OPENAPI_PATH = "/openapi.json"

Handler = Callable[[Request], Awaitable[Response]]


class HttpApp:
    """The ASGI app calling the gRPC server behind a channel."""

    def __init__(self, gateway: Gateway, console: ConsoleFiles) -> None:
        self._gateway = gateway
        self._console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._handler(request)(request)
        await response(scope, receive, send)

    def _handler(self, request: Request) -> Handler:
        path = request.url.path
        if path.startswith(API_PREFIX):
            return self._gateway.handle
        if path == HEALTH_PATH:
            return _only_get(self._gateway.health)
        if path == OPENAPI_PATH:
            return _only_get(_openapi)
        if self._console.present:
            return self._console.serve
        return self._gateway.handle


def _only_get(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return JSONResponse(
                {"code": grpc.StatusCode.UNIMPLEMENTED.value[0], "message": "use GET", "details": []},
                status_code=405,
                headers={"Allow": "GET, HEAD"},
            )
        return await handler(request)

    return guarded


async def _openapi(request: Request) -> Response:
    return FileResponse(OPENAPI_FILE, media_type="application/json")


def build_app(
    channel: grpc.aio.Channel,
    services: Iterable[ServiceDescriptor],
    *,
    max_body_bytes: int,
    console: ConsoleFiles | None = None,
) -> HttpApp:
    """The ASGI app calling the gRPC server behind `channel` for the RPCs of `services`."""
    gateway = Gateway(channel, RouteTable.of(services), max_body_bytes=max_body_bytes)
    return HttpApp(gateway, console if console is not None else ConsoleFiles())
