"""CheckStream on grpc's sync API: send a text in chunks as it is generated, learn of a block as soon as it
is certain, and get the final verdict.

The caller's chunks go to gRPC through a queue that the call reads as its request iterator; a reader thread
records the server's answers, so `blocked`, `early_verdict` and `violations` are current without waiting.
Not retried, as in the async client: the text already sent cannot be replayed on the caller's behalf.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import grpc

from modelplane.client.check_stream_state import CheckStreamReplies
from modelplane.client.errors import ModelplaneError, from_rpc_error
from modelplane.v1 import guardrails_pb2

__all__ = ["CheckStreamSession"]


class CheckStreamSession(CheckStreamReplies):
    """One CheckStream. Use it as `with`: leaving the block before `finish()` cancels the call. Calls to
    one session come from one thread; its properties may be read from any."""

    def __init__(
        self,
        stub: Any,
        start: guardrails_pb2.CheckStreamStart,
        *,
        metadata: tuple[tuple[str, str], ...],
        timeout: float | None,
    ) -> None:
        super().__init__()
        self._stub = stub
        self._start = start
        self._metadata = metadata
        self._timeout = timeout
        # None closes the request stream.
        self._requests: queue.Queue[guardrails_pb2.CheckStreamRequest | None] = queue.Queue()
        self._changed = threading.Condition()
        self._call: Any = None
        self._reader: threading.Thread | None = None
        self._error: ModelplaneError | None = None
        self._ended = False
        self._done = False

    def open(self) -> None:
        """Starts the call and sends the start message (done by `with`)."""
        if self._call is not None:
            raise RuntimeError("the stream is already open")
        self._requests.put(guardrails_pb2.CheckStreamRequest(start=self._start))
        self._call = self._stub.CheckStream(self._outgoing(), timeout=self._timeout, metadata=self._metadata)
        self._reader = threading.Thread(
            target=self._read, args=(self._call,), name="CheckStream reader", daemon=True
        )
        self._reader.start()

    def send(self, chunk: str) -> None:
        """Sends the next piece of the text. Raises the call's error if it has failed."""
        self._require_open()
        if self._ended:
            raise RuntimeError("the stream has ended: no chunk may follow finish()")
        self._raise_error()
        if chunk:
            self._requests.put(guardrails_pb2.CheckStreamRequest(chunk=chunk))

    def wait_blocked(self) -> guardrails_pb2.CheckVerdict | None:
        """Waits for the early BLOCK verdict and returns it; None when the stream ended without a block."""
        self._require_open()
        with self._changed:
            self._changed.wait_for(lambda: self._error is not None or self._early is not None or self._done)
        self._raise_error()
        if self._early is not None:
            return self._early
        return self._final if self.blocked else None

    def finish(self) -> guardrails_pb2.CheckVerdict:
        """Says the text is complete and returns the final verdict, equal to CheckContent's on the whole
        text. Raises the call's error if it failed."""
        self._require_open()
        if not self._ended:
            self._ended = True
            self._requests.put(guardrails_pb2.CheckStreamRequest(end=guardrails_pb2.CheckStreamEnd()))
            self._requests.put(None)
        with self._changed:
            self._changed.wait_for(lambda: self._done)
        self._raise_error()
        if self._final is None:
            raise RuntimeError("CheckStream ended without a final verdict")
        return self._final

    def cancel(self) -> None:
        """Abandons the stream (the server stores nothing for an unfinished text)."""
        if self._call is not None:
            self._call.cancel()
        self._requests.put(None)
        if self._reader is not None:
            self._reader.join()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._final is None:
            self.cancel()

    def _require_open(self) -> None:
        if self._call is None:
            raise RuntimeError("the stream is not open: use `with` or call open()")

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _outgoing(self) -> Iterator[guardrails_pb2.CheckStreamRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self, call: Iterator[guardrails_pb2.CheckStreamResponse]) -> None:
        try:
            for response in call:
                with self._changed:
                    self._record(response)
                    self._changed.notify_all()
        except grpc.RpcError as error:
            self._error = from_rpc_error(error)
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()
