"""The HTTP application: the RPCs under /v1/, health at /healthz, the OpenAPI document at /openapi.json,
and the web console at / when its files are installed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from modelplane.server.http.console import ConsoleFiles
from modelplane.server.http.gateway import Gateway
from modelplane.server.http.routes import RouteTable

OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"
# Every method a route may use; Starlette answers 405 itself for any other.
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def build_app(
    channel: grpc.aio.Channel,
    services: Iterable[ServiceDescriptor],
    *,
    max_body_bytes: int,
    console: ConsoleFiles | None = None,
) -> Starlette:
    """The ASGI app calling the gRPC server behind `channel` for the RPCs of `services`."""
    gateway = Gateway(channel, RouteTable.of(services), max_body_bytes=max_body_bytes)
    console = console if console is not None else ConsoleFiles()

    async def openapi(request: Request) -> Response:
        return FileResponse(OPENAPI_FILE, media_type="application/json")

    async def elsewhere(request: Request) -> Response:
        if console.present:
            return await console.serve(request)
        return await gateway.handle(request)

    routes = [
        Route("/healthz", gateway.health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/{rest:path}", gateway.handle, methods=HTTP_METHODS),
        Route("/{rest:path}", elsewhere, methods=HTTP_METHODS),
    ]
    return Starlette(routes=routes)
