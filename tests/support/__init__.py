"""Helpers shared by the API tests: reading rich error details off a failed call, asking health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

STATUS_DETAILS_KEY = "grpc-status-details-bin"

M = TypeVar("M", bound=Message)

if TYPE_CHECKING:
    from modelplane.server.app import ModelplaneServer


class StartServer(Protocol):
    """The `start_server` fixture: starts a server with ServerConfig overrides, stopped after the test."""

    def __call__(self, *, wait_serving: bool = True, **overrides: Any) -> Awaitable[ModelplaneServer]: ...


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status the server put in the trailers; an empty one when there is none."""
    status = status_pb2.Status()
    value = metadata_value(error.trailing_metadata(), STATUS_DETAILS_KEY)
    if isinstance(value, bytes):
        status.ParseFromString(value)
    return status


def _detail(error: grpc.aio.AioRpcError, kind: type[M]) -> M | None:
    for detail in rich_status(error).details:
        message = kind()
        if detail.Unpack(message):
            return message
    return None


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a failed call; AssertionError when the server sent none."""
    info = _detail(error, error_details_pb2.ErrorInfo)
    assert info is not None, f"no ErrorInfo on {error.code()}: {error.details()}"
    return info


def retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    return _detail(error, error_details_pb2.RetryInfo)


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths of the BadRequest detail, in order."""
    bad_request = _detail(error, error_details_pb2.BadRequest)
    return [] if bad_request is None else [v.field for v in bad_request.field_violations]


def metadata_value(metadata: Any, key: str) -> str | bytes | None:
    """The first value of `key` in call metadata (grpc.aio.Metadata or pairs), or None."""
    for item_key, value in metadata or ():
        if item_key == key:
            assert isinstance(value, (str, bytes))
            return value
    return None


async def health_status(channel: grpc.aio.Channel, service: str = "") -> str:
    """ "SERVING", "NOT_SERVING", ... as the server's health service answers for `service`."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


async def wait_health(
    channel: grpc.aio.Channel, expected: str, *, within: float = 15.0, service: str = ""
) -> None:
    """Polls health until it answers `expected`; fails the test when it has not after `within` seconds."""
    last = "none"
    try:
        async with asyncio.timeout(within):
            while True:
                last = await health_status(channel, service)
                if last == expected:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"health stayed {last}, expected {expected}") from None
