"""The service clients' methods, described once for the async and the sync client.

Each RPC is described by a function of the caller's keyword arguments that builds the request and says how
to read the response (a `Unary`, `Paged`, `Watch` or `ServerStream` description). A table class per service
(modelplane.client.methods.registry's `RegistryMethods`, ...) binds those functions with the descriptors
below, and both clients of a service inherit that table: on an async client (a
`modelplane.client.base.ServiceClient`) a method returns an awaitable or an async iterator, on a sync
client (a `modelplane.client.sync.base.SyncServiceClient`) the result itself or a plain iterator. Each
flavour runs a description its own way (`_bind_unary`, ...), with the same retries, deadlines and errors.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Self, TypeVar, overload

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from modelplane.client.retry import RetryPolicy

if TYPE_CHECKING:
    from modelplane.client.base import ServiceClient
    from modelplane.client.sync.base import SyncServiceClient

__all__ = [
    "BlockingIterator",
    "DescribedMethod",
    "Paged",
    "ServerStream",
    "Unary",
    "Watch",
    "duration",
    "page",
    "page_request",
    "pages",
    "server_stream",
    "timestamp",
    "unary",
    "watch",
    "whole_response",
]

P = ParamSpec("P")
ResponseT = TypeVar("ResponseT", bound=Message)
ResultT = TypeVar("ResultT")
ItemT = TypeVar("ItemT")
_T = TypeVar("_T")

# What the sync client's Lists, watches and streams return: a generator, so that `close()` cancels the call.
BlockingIterator = Generator[_T, None, None]


@dataclass(frozen=True)
class Unary(Generic[ResponseT, ResultT]):
    """One unary call: the stub method `rpc`, its request, what the caller gets of the response, and the
    caller's deadline (None: the client's default)."""

    rpc: str
    request: Message
    result: Callable[[ResponseT], ResultT]
    timeout: float | None


@dataclass(frozen=True)
class Paged(Generic[ResponseT, ItemT]):
    """A List call: `request` asks for the page at its page_token; `items` are a page's results, and the
    response's next_page_token ("" at the end) the next page's. `timeout` bounds each page."""

    rpc: str
    request: Message
    items: Callable[[ResponseT], Sequence[ItemT]]
    timeout: float | None


@dataclass(frozen=True)
class Watch(Generic[ResponseT]):
    """A watch stream, opened by `request_at(start_revision)` and reopened where it stopped when `resume`
    is set (modelplane.client.resumable_stream); `timeout` (None: none) bounds the whole watch."""

    rpc: str
    request_at: Callable[[int], Message]
    start_revision: int
    resume: bool
    timeout: float | None
    policy: RetryPolicy


@dataclass(frozen=True)
class ServerStream(Generic[ResponseT, ItemT]):
    """A server stream that is not resumed: `items` of each response, in order; `timeout` (None: none)
    bounds the whole stream."""

    rpc: str
    request: Message
    items: Callable[[ResponseT], Sequence[ItemT]]
    timeout: float | None


def page_request(request: Message, page_token: str) -> Message:
    """A copy of a List request asking for the page at `page_token`."""
    copy = type(request)()
    copy.CopyFrom(request)
    # Every List request of the contract has a page_token field (AIP-158).
    setattr(copy, "page_token", page_token)  # noqa: B010 - not every Message type declares the field
    return copy


def whole_response(response: ResponseT) -> ResponseT:
    """The result of a call whose caller wants the whole response."""
    return response


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    """A Duration field's value (None: unset)."""
    if value is None:
        return None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp field's value (None: unset); naive times are refused."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


class DescribedMethod(Generic[P, ResultT]):
    """A described method; subclasses say how each flavour of client binds it."""

    def __init__(self, describe: Callable[P, Any]) -> None:
        self.describe = describe
        self.__doc__ = describe.__doc__
        self.__wrapped__ = describe

    def _wrap(self, bound: Callable[..., Any]) -> Any:
        # The bound method carries the description's name, docstring and signature (help(), inspect).
        return functools.update_wrapper(bound, self.describe)


class unary(DescribedMethod[P, ResultT]):
    """A unary method: the result (sync) or an awaitable of it (async), retried within its deadline."""

    def __init__(self, describe: Callable[P, Unary[Any, ResultT]]) -> None:
        super().__init__(describe)

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: ServiceClient, owner: type) -> Callable[P, Coroutine[Any, Any, ResultT]]: ...
    @overload
    def __get__(self, client: SyncServiceClient, owner: type) -> Callable[P, ResultT]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        return self if client is None else self._wrap(client._bind_unary(self.describe))


class page(DescribedMethod[P, ResponseT]):
    """One page of a List method: the whole response."""

    def __init__(self, describe: Callable[P, Paged[ResponseT, Any]]) -> None:
        super().__init__(describe)

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: ServiceClient, owner: type) -> Callable[P, Coroutine[Any, Any, ResponseT]]: ...
    @overload
    def __get__(self, client: SyncServiceClient, owner: type) -> Callable[P, ResponseT]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        return self if client is None else self._wrap(client._bind_page(self.describe))


class pages(DescribedMethod[P, ItemT]):
    """Every item of a List method, page after page from the given page_token: an iterator (sync) or an
    async iterator; `timeout` bounds each page."""

    def __init__(self, describe: Callable[P, Paged[Any, ItemT]]) -> None:
        super().__init__(describe)

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: ServiceClient, owner: type) -> Callable[P, AsyncGenerator[ItemT, None]]: ...
    @overload
    def __get__(self, client: SyncServiceClient, owner: type) -> Callable[P, BlockingIterator[ItemT]]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        return self if client is None else self._wrap(client._bind_pages(self.describe))


class watch(DescribedMethod[P, ResponseT]):
    """A watch method: the stream's messages, reopened where it stopped on UNAVAILABLE when resuming."""

    def __init__(self, describe: Callable[P, Watch[ResponseT]]) -> None:
        super().__init__(describe)

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: ServiceClient, owner: type) -> Callable[P, AsyncGenerator[ResponseT, None]]: ...
    @overload
    def __get__(self, client: SyncServiceClient, owner: type) -> Callable[P, BlockingIterator[ResponseT]]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        return self if client is None else self._wrap(client._bind_watch(self.describe))


class server_stream(DescribedMethod[P, ItemT]):
    """A server stream method that is not resumed: its items one by one."""

    def __init__(self, describe: Callable[P, ServerStream[Any, ItemT]]) -> None:
        super().__init__(describe)

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: ServiceClient, owner: type) -> Callable[P, AsyncGenerator[ItemT, None]]: ...
    @overload
    def __get__(self, client: SyncServiceClient, owner: type) -> Callable[P, BlockingIterator[ItemT]]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        return self if client is None else self._wrap(client._bind_server_stream(self.describe))
