"""What every service client shares: where its calls go, their metadata, deadline and retries, and paging."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import grpc

from modelplane.client.errors import from_rpc_error
from modelplane.client.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from modelplane.client.channel import Connection

# Seconds a call may take unless the caller says otherwise: no call waits forever.
DEFAULT_TIMEOUT = 10.0

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ItemT = TypeVar("ItemT")


def ensure_request_id(given: str | None) -> str:
    """The caller's request id, or a new one: a mutation then runs once however often it is retried."""
    return given if given is not None else str(uuid.uuid4())


async def pages(
    fetch: Callable[[str], Awaitable[tuple[Sequence[ItemT], str]]],
) -> AsyncGenerator[ItemT, None]:
    """Every item of a paged list: `fetch(page_token)` returns one page and the next token ("" at the end)."""
    page_token = ""
    while True:
        items, page_token = await fetch(page_token)
        for item in items:
            yield item
        if not page_token:
            return


class ServiceClient:
    """The base of the service clients, built from a `Connection` or from a grpc.aio channel.

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
        if isinstance(source, grpc.aio.Channel):
            channel = source
            default_metadata: tuple[tuple[str, str], ...] = ()
            default_timeout = DEFAULT_TIMEOUT
            default_retry = DEFAULT_RETRY_POLICY
        else:
            channel = source.channel
            default_metadata = source.metadata
            default_timeout = source.timeout
            default_retry = source.retry
        self._source = source
        self._channel: grpc.aio.Channel = channel
        self.metadata: tuple[tuple[str, str], ...] = default_metadata if metadata is None else tuple(metadata)
        self.timeout: float = default_timeout if timeout is None else timeout
        self.retry: RetryPolicy = default_retry if retry is None else retry

    async def close(self) -> None:
        """Closes the connection or channel this client was built from."""
        await self._source.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        timeout: float | None,  # noqa: ASYNC109 - the call's deadline, passed on to grpc
    ) -> ResponseT:
        """One unary call within its deadline, retried on UNAVAILABLE, its errors as ModelplaneError."""

        async def attempt(remaining: float | None) -> ResponseT:
            try:
                return await method(request, timeout=remaining, metadata=self.metadata)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error

        return await call_with_retry(
            attempt, timeout=self.timeout if timeout is None else timeout, policy=self.retry
        )
