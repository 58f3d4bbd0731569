"""What every synchronous service client shares: its channel, metadata, deadline and retries, and how it runs
the methods described in modelplane.client.methods on grpc's sync API."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Self, TypeVar

import grpc
from google.protobuf.message import Message

from modelplane.client.base import DEFAULT_TIMEOUT
from modelplane.client.errors import from_rpc_error
from modelplane.client.methods import BlockingIterator, Paged, ServerStream, Unary, Watch, page_request
from modelplane.client.resumable_stream import resumable_watch_blocking
from modelplane.client.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry_blocking
from modelplane.client.trace_context import with_trace_context

if TYPE_CHECKING:
    from modelplane.client.sync.channel import Connection

__all__ = ["SyncServiceClient"]

P = ParamSpec("P")
ResultT = TypeVar("ResultT")
ItemT = TypeVar("ItemT")
MessageT = TypeVar("MessageT", bound=Message)


class SyncServiceClient:
    """The base of the synchronous service clients, built from a sync `Connection` or from a grpc.Channel.

    Its methods block: a unary call returns its result (retried on UNAVAILABLE within its deadline, its
    errors raised as ModelplaneError), a List's all-pages twin and a watch return plain iterators. Used as
    `with`, it closes what it was built from on exit; do not do that with a channel other code still uses.
    A client may be shared by threads: each call keeps its own state.
    """

    # The service's generated stub class (grpc's sync API), set by each client.
    _stub_class: ClassVar[type[Any]]

    def __init__(
        self,
        source: Connection | grpc.Channel,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(source, grpc.Channel):
            channel = source
            defaults: tuple[tuple[tuple[str, str], ...], float, RetryPolicy] = (
                (),
                DEFAULT_TIMEOUT,
                DEFAULT_RETRY_POLICY,
            )
        else:
            channel = source.channel
            defaults = (source.metadata, source.timeout, source.retry)
        self._source = source
        self._channel: grpc.Channel = channel
        self.metadata: tuple[tuple[str, str], ...] = defaults[0] if metadata is None else tuple(metadata)
        self.timeout: float = defaults[1] if timeout is None else timeout
        self.retry: RetryPolicy = defaults[2] if retry is None else retry
        # What retries and resumed watches measure their deadlines and waits with (tests pass a fake time).
        self._clock = clock
        self._sleep = sleep
        self._stub: Any = self._stub_class(channel)

    def close(self) -> None:
        """Closes the connection or channel this client was built from."""
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _unary(self, rpc: str, request: Message, timeout: float | None) -> Any:
        """One unary call within its deadline, retried on UNAVAILABLE, its errors as ModelplaneError."""
        method = getattr(self._stub, rpc)

        def attempt(remaining: float | None) -> Any:
            try:
                return method(request, timeout=remaining, metadata=with_trace_context(self.metadata))
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error

        return call_with_retry_blocking(
            attempt,
            timeout=self.timeout if timeout is None else timeout,
            policy=self.retry,
            clock=self._clock,
            sleep=self._sleep,
        )

    def _bind_unary(self, describe: Callable[P, Unary[Any, ResultT]]) -> Callable[P, ResultT]:
        def call(*args: P.args, **kwargs: P.kwargs) -> ResultT:
            unary = describe(*args, **kwargs)
            return unary.result(self._unary(unary.rpc, unary.request, unary.timeout))

        return call

    def _bind_page(self, describe: Callable[P, Paged[MessageT, Any]]) -> Callable[P, MessageT]:
        def call(*args: P.args, **kwargs: P.kwargs) -> MessageT:
            paged = describe(*args, **kwargs)
            response: MessageT = self._unary(paged.rpc, paged.request, paged.timeout)
            return response

        return call

    def _bind_pages(self, describe: Callable[P, Paged[Any, ItemT]]) -> Callable[P, BlockingIterator[ItemT]]:
        def iterate(*args: P.args, **kwargs: P.kwargs) -> BlockingIterator[ItemT]:
            paged = describe(*args, **kwargs)
            token: str = getattr(paged.request, "page_token", "")
            while True:
                response = self._unary(paged.rpc, page_request(paged.request, token), paged.timeout)
                yield from paged.items(response)
                token = response.next_page_token
                if not token:
                    return

        return iterate

    def _bind_watch(self, describe: Callable[P, Watch[MessageT]]) -> Callable[P, BlockingIterator[MessageT]]:
        def call(*args: P.args, **kwargs: P.kwargs) -> BlockingIterator[MessageT]:
            watch = describe(*args, **kwargs)
            method = getattr(self._stub, watch.rpc)

            def open_call(revision: int, remaining: float | None) -> Iterator[MessageT]:
                stream: Iterator[MessageT] = method(
                    watch.request_at(revision), timeout=remaining, metadata=with_trace_context(self.metadata)
                )
                return stream

            return resumable_watch_blocking(
                open_call,
                start_revision=watch.start_revision,
                resume=watch.resume,
                timeout=watch.timeout,
                policy=watch.policy,
                clock=self._clock,
                sleep=self._sleep,
            )

        return call

    def _bind_server_stream(
        self, describe: Callable[P, ServerStream[Any, ItemT]]
    ) -> Callable[P, BlockingIterator[ItemT]]:
        def iterate(*args: P.args, **kwargs: P.kwargs) -> BlockingIterator[ItemT]:
            stream = describe(*args, **kwargs)
            call = getattr(self._stub, stream.rpc)(
                stream.request, timeout=stream.timeout, metadata=with_trace_context(self.metadata)
            )
            try:
                for response in call:
                    yield from stream.items(response)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error
            finally:
                call.cancel()

        return iterate
