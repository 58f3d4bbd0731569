"""The StreamLogEvents protocol of a log shipper: send, acknowledge, resend after a reconnect, detect stalls.

`AckWindow` holds the batches sent and not yet acknowledged, in order. `LogStream` runs the protocol on
the sender's loop: it opens a stream, resends the window's batches unchanged, sends new batches while the
window has room, releases them as the server acknowledges their sequence numbers (after their commit),
and on any failure reconnects with backoff, for as long as the sender runs. A batch the server refuses
as invalid (INVALID_ARGUMENT naming its sequence) would be refused again: it leaves the window and its
events are reported lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from modelplane.client.errors import InvalidArgument, from_rpc_error
from modelplane.client.log_batches import Batch, BatchCutter
from modelplane.client.retry import Backoff, BackoffPolicy
from modelplane.v1 import logs_pb2, logs_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.v1.logs_pb2_grpc import LogServiceAsyncStub

__all__ = ["AckWindow", "LogStream", "StreamStalled"]

logger = logging.getLogger(__name__)

_StreamCall = grpc.aio.StreamStreamCall[logs_pb2.StreamLogEventsRequest, logs_pb2.StreamLogEventsResponse]


class StreamStalled(Exception):
    """No acknowledgement (or no write completion) within ack_timeout: the stream is given up."""


class AckWindow:
    """The batches in flight, oldest first: at most `size`, released in order by acknowledgements."""

    __slots__ = ("_batches", "events", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the window needs room for a batch")
        self.size = size
        self._batches: deque[Batch] = deque()
        # events counts the events of the batches in the window.
        self.events = 0

    @property
    def full(self) -> bool:
        return len(self._batches) >= self.size

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)
        self.events += batch.events

    def acknowledge(self, sequence: int) -> list[Batch]:
        """Releases every batch up to `sequence` (acknowledgements are cumulative) and returns them."""
        released: list[Batch] = []
        batches = self._batches
        while batches and batches[0].sequence <= sequence:
            batch = batches.popleft()
            self.events -= batch.events
            released.append(batch)
        return released

    def refuse(self, named: str) -> Batch | None:
        """Takes out the batch the server refused: the one whose sequence it named, else the oldest (the
        one it was reading); None when the window is empty."""
        batch = next((b for b in self._batches if str(b.sequence) == named), None)
        if batch is None and self._batches:
            batch = self._batches[0]
        if batch is not None:
            self._batches.remove(batch)
            self.events -= batch.events
        return batch

    def oldest_sent_at(self) -> float | None:
        return self._batches[0].sent_at if self._batches else None

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        # A copy: resending awaits, and acknowledgements may release batches meanwhile.
        return iter(list(self._batches))


class LogStream:
    """Runs StreamLogEvents for one shipper (see the module doc) on the sender's loop.

    It takes batches from `cutter`, waits on `wakeup` for new events, and ends when `stopping` is set.
    `on_progress` is called whenever events are settled (acknowledged, refused, or reported lost in a batch
    of their own). `flush_interval` bounds how long a partly filled batch waits; `ack_timeout` how long a
    write or the oldest acknowledgement may take before the stream is given up.
    """

    def __init__(
        self,
        cutter: BatchCutter,
        *,
        window: int,
        flush_interval: float,
        ack_timeout: float,
        reconnect: BackoffPolicy,
        wakeup: asyncio.Event,
        stopping: asyncio.Event,
        on_progress: Callable[[], None],
    ) -> None:
        if flush_interval <= 0 or ack_timeout <= 0:
            raise ValueError("flush_interval and ack_timeout must be positive")
        self.cutter = cutter
        self.window = AckWindow(window)
        self.flush_interval = flush_interval
        self.ack_timeout = ack_timeout
        self.reconnect = reconnect
        self.wakeup = wakeup
        self.stopping = stopping
        self.on_progress = on_progress
        self.acknowledged = 0
        self.batches_sent = 0
        self.batches_resent = 0
        self.reconnects = 0
        # last_error describes the last failure of the stream ("" once a batch is acknowledged after it).
        self.last_error = ""
        # Streams failed since the last acknowledgement: the first of an outage is a WARNING, the rest DEBUG,
        # and the acknowledgement that ends it one INFO line.
        self.failures_in_a_row = 0

    async def run(self, connection: Connection) -> None:
        """Streams until `stopping` is set; a failure ends one stream, never this loop."""
        stub: LogServiceAsyncStub = logs_pb2_grpc.LogServiceStub(connection.channel)
        backoff = Backoff(self.reconnect)
        first = True
        while not self.stopping.is_set():
            if not first:
                self.reconnects += 1
            first = False
            acknowledged_before = self.acknowledged
            try:
                await self._session(stub, connection.metadata)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._record_failure(error)
            if self.stopping.is_set():
                break
            if self.acknowledged > acknowledged_before:
                backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff.next_delay())

    def _record_failure(self, error: BaseException) -> None:
        if isinstance(error, grpc.RpcError):
            error = from_rpc_error(error)
        if isinstance(error, StreamStalled):
            text = f"stream stalled: {error}"
        else:
            text = str(error) or type(error).__name__
        client_id = self.cutter.client_id
        self.failures_in_a_row += 1
        if self.failures_in_a_row == 1:
            logger.warning("LogShipper %s: log stream failed (%s); reconnecting", client_id, text)
        else:
            logger.debug(
                "LogShipper %s: log stream failed again (%s), %d in a row; reconnecting",
                client_id,
                text,
                self.failures_in_a_row,
            )
        self.last_error = text
        if isinstance(error, InvalidArgument):
            # The server refuses this batch and would refuse it again: sending it for ever would stall
            # every event behind it. Its events are reported as dropped in the next batch.
            batch = self.window.refuse(error.metadata.get("sequence", ""))
            if batch is None:
                return
            self.cutter.reject(batch.events)
            logger.error(
                "LogShipper %s: the server refused batch %d (%d events): %s",
                client_id,
                batch.sequence,
                batch.events,
                error,
            )
            self.on_progress()

    async def _session(self, stub: LogServiceAsyncStub, metadata: tuple[tuple[str, str], ...]) -> None:
        """One StreamLogEvents call: resend what is unacknowledged, then ship new batches until it fails."""
        call: _StreamCall = stub.StreamLogEvents(None, metadata=metadata)
        reader = asyncio.create_task(self._read_acks(call), name="LogShipper acknowledgements")
        try:
            await self._ship(call, reader)
        except (grpc.RpcError, asyncio.InvalidStateError, StreamStalled) as error:
            # A failed write says little; the status the server ended the call with, which the reader
            # holds, says why (INVALID_ARGUMENT naming a batch, UNAVAILABLE, ...). Not waited for past a
            # close: close bounds its wait, and what it leaves unacknowledged is counted only once the
            # sender has ended.
            stopping = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait({reader, stopping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            status = reader.exception() if reader.done() and not reader.cancelled() else None
            if status is not None:
                raise status from error
            raise
        finally:
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError, asyncio.InvalidStateError):
                await reader

    async def _ship(self, call: _StreamCall, reader: asyncio.Task[None]) -> None:
        for batch in self.window:
            await self._send(call, batch)
        while not self.stopping.is_set():
            if reader.done():
                reader.result()
                raise StreamStalled("the server ended the stream")
            self.wakeup.clear()
            await self._fill(call)
            timeout = self.flush_interval
            oldest = self.window.oldest_sent_at()
            if oldest is not None:
                left = oldest + self.ack_timeout - time.monotonic()
                if left <= 0:
                    raise StreamStalled(f"no acknowledgement for {self.ack_timeout:g} s")
                timeout = min(timeout, left)
            waiter = asyncio.ensure_future(self.wakeup.wait())
            await asyncio.wait({waiter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def _fill(self, call: _StreamCall) -> None:
        """Sends new batches while the window has room and there are events (or losses) to report."""
        while not self.window.full:
            batch = self.cutter.next_batch()
            if batch is None:
                return
            if not batch.events:
                # A batch of losses only: the events it reports are settled now.
                self.on_progress()
            self.window.add(batch)
            await self._send(call, batch)

    async def _send(self, call: _StreamCall, batch: Batch) -> None:
        batch.sends += 1
        if batch.sends > 1:
            self.batches_resent += 1
        batch.sent_at = time.monotonic()
        try:
            await asyncio.wait_for(call.write(batch.request), self.ack_timeout)
        except TimeoutError:
            raise StreamStalled(f"a write did not complete in {self.ack_timeout:g} s") from None
        self.batches_sent += 1

    async def _read_acks(self, call: _StreamCall) -> None:
        async for response in call:
            released = self.window.acknowledge(response.ack.sequence)
            if released:
                self.acknowledged += sum(batch.events for batch in released)
                self.last_error = ""
                if self.failures_in_a_row:
                    logger.info(
                        "LogShipper %s: log stream recovered after %d failed attempts",
                        self.cutter.client_id,
                        self.failures_in_a_row,
                    )
                    self.failures_in_a_row = 0
                self.on_progress()
                self.wakeup.set()
