"""What every service client shares: where its calls go, their metadata, deadline and retries, and paging."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

import grpc
from google.protobuf.message import Message

from modelplane.client.errors import from_rpc_error
from modelplane.client.methods import page_request
from modelplane.client.resumable_stream import resumable_watch
from modelplane.client.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry
from modelplane.client.trace_context import with_trace_context

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.client.methods import Paged, ServerStream, Unary, Watch

# Seconds a call may take unless the caller says otherwise: no call waits forever.
DEFAULT_TIMEOUT = 10.0

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")
MessageT = TypeVar("MessageT", bound=Message)
P = ParamSpec("P")


def ensure_request_id(given: str | None) -> str:
    """The caller's request id, or a new one: a mutation then runs once however often it is retried."""
    return given if given is not None else str(uuid.uuid4())


async def pages(
    fetch: Callable[[str], Awaitable[tuple[Sequence[ItemT], str]]], page_token: str = ""
) -> AsyncGenerator[ItemT, None]:
    """Every item of a paged list from `page_token` on: `fetch(page_token)` returns one page and the next
    token ("" at the end)."""
    while True:
        items, page_token = await fetch(page_token)
        for item in items:
            yield item
        if not page_token:
            return


class ServiceClient:
    """The base of the async service clients, built from a `Connection` or from a grpc.aio channel.

    A client's methods come from its service's table in modelplane.client.methods, bound here (`_bind_*`)
    to awaitables and async iterators.

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
        # The service's async stub, made by each client from `_channel`.
        self._stub: Any = None

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
                return await method(request, timeout=remaining, metadata=with_trace_context(self.metadata))
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error

        return await call_with_retry(
            attempt, timeout=self.timeout if timeout is None else timeout, policy=self.retry
        )

    def _bind_unary(
        self, describe: Callable[P, Unary[Any, ResultT]]
    ) -> Callable[P, Coroutine[Any, Any, ResultT]]:
        async def call(*args: P.args, **kwargs: P.kwargs) -> ResultT:
            unary = describe(*args, **kwargs)
            response = await self._unary(getattr(self._stub, unary.rpc), unary.request, unary.timeout)
            return unary.result(response)

        return call

    def _bind_page(
        self, describe: Callable[P, Paged[MessageT, Any]]
    ) -> Callable[P, Coroutine[Any, Any, MessageT]]:
        async def call(*args: P.args, **kwargs: P.kwargs) -> MessageT:
            paged = describe(*args, **kwargs)
            response: MessageT = await self._unary(
                getattr(self._stub, paged.rpc), paged.request, paged.timeout
            )
            return response

        return call

    def _bind_pages(
        self, describe: Callable[P, Paged[Any, ItemT]]
    ) -> Callable[P, AsyncGenerator[ItemT, None]]:
        async def iterate(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[ItemT, None]:
            paged = describe(*args, **kwargs)
            method = getattr(self._stub, paged.rpc)

            async def fetch(token: str) -> tuple[Sequence[ItemT], str]:
                response = await self._unary(method, page_request(paged.request, token), paged.timeout)
                return paged.items(response), response.next_page_token

            async for item in pages(fetch, getattr(paged.request, "page_token", "")):
                yield item

        return iterate

    def _bind_watch(
        self, describe: Callable[P, Watch[MessageT]]
    ) -> Callable[P, AsyncGenerator[MessageT, None]]:
        def call(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[MessageT, None]:
            watch = describe(*args, **kwargs)
            method = getattr(self._stub, watch.rpc)

            def open_call(revision: int, remaining: float | None) -> grpc.aio.UnaryStreamCall[Any, MessageT]:
                stream: grpc.aio.UnaryStreamCall[Any, MessageT] = method(
                    watch.request_at(revision), timeout=remaining, metadata=with_trace_context(self.metadata)
                )
                return stream

            return resumable_watch(
                open_call,
                start_revision=watch.start_revision,
                resume=watch.resume,
                timeout=watch.timeout,
                policy=watch.policy,
            )

        return call

    def _bind_server_stream(
        self, describe: Callable[P, ServerStream[Any, ItemT]]
    ) -> Callable[P, AsyncGenerator[ItemT, None]]:
        async def iterate(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[ItemT, None]:
            stream = describe(*args, **kwargs)
            call = getattr(self._stub, stream.rpc)(
                stream.request, timeout=stream.timeout, metadata=with_trace_context(self.metadata)
            )
            try:
                async for response in call:
                    for item in stream.items(response):
                        yield item
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error
            finally:
                call.cancel()

        return iterate
