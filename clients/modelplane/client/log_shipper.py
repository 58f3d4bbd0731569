"""LogShipper: the event sink that never blocks its caller; it batches events and streams them to LogService.

`emit(event)` takes an event of modelplane.client.events (InferenceEvent, GuardrailEvent, RoutingEvent) or a
ready `modelplane.v1.logs_pb2.LogEvent`, appends it to a bounded in-memory queue and returns. It never
waits for I/O and never raises. When the queue is full the OLDEST queued event is dropped to make room
and counted; the count travels in the next batch (`dropped_since_last`), so the server's per-client
counters show every loss. Events that cannot be converted into a LogEvent are dropped, counted and
reported the same way.

A background sender turns queued events into LogEvents (conversion happens off the caller's path), cuts
them into batches of at most `batch_size` events (a batch goes out when it is full or `flush_interval`
seconds after the last send), numbers each batch with the next sequence number of this client, and
streams the batches over one StreamLogEvents call. A batch stays in memory until the server acknowledges
its sequence number, which it does only after the transaction holding its events commits. When the
stream breaks (server down, restarted, stalled past `ack_timeout`), the sender reconnects with capped
exponential backoff and jitter and sends every unacknowledged batch again, unchanged: same event ids,
same sequence numbers. The server drops events whose ids it already holds, so a resend never duplicates.
A batch the server refuses as invalid (INVALID_ARGUMENT naming its sequence) would be refused again: it
is dropped, counted in `stats.rejected` and reported in the next batch's `dropped_since_last`.
At most `max_unacknowledged_batches` batches are in flight; while that window is full (server slow or
away) the sender stops taking events off the queue, and the queue's own bound decides what is lost.
Memory is therefore bounded by `queue_size + max_unacknowledged_batches * batch_size` events.

Where the sender runs. Given a target ("host:port"), the shipper starts its own daemon thread with its own
event loop and channel: `emit` works from plain threads and from any event loop, and the network work
never runs on the caller's loop. Given a `Connection` (whose grpc.aio channel belongs to the loop it was
made on), the sender is an asyncio task on that running loop; `emit` still works from any thread.

Shutdown: `flush(timeout)` waits until every event emitted before the call is acknowledged or dropped;
`close(timeout)` flushes and stops; `aflush` and `aclose` are their async forms. Events still
unacknowledged at close are counted in `stats.abandoned`. A shipper on its own thread that is never
closed is flushed for at most `exit_flush_timeout` seconds at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import grpc

from modelplane.client.channel import Connection, TlsOptions, connect
from modelplane.client.errors import InvalidArgument, from_rpc_error
from modelplane.client.log_events import MAX_INSTANCE, SERVICE_PATTERN, to_log_event
from modelplane.client.retry import Backoff, BackoffPolicy
from modelplane.v1 import logs_pb2, logs_pb2_grpc

if TYPE_CHECKING:
    from modelplane.v1.logs_pb2_grpc import LogServiceAsyncStub

__all__ = ["MAX_BATCH_SIZE", "EventQueue", "LogShipper", "ShipperStats"]

logger = logging.getLogger(__name__)

# A batch is cut before its encoded size passes this, well under the 4 MiB message limit of both sides.
_MAX_BATCH_BYTES = 3 * 1024 * 1024
# The server refuses larger batches (LogBatch.events).
MAX_BATCH_SIZE = 1000
_CLIENT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")

_StreamCall = grpc.aio.StreamStreamCall[logs_pb2.StreamLogEventsRequest, logs_pb2.StreamLogEventsResponse]


@dataclass(frozen=True)
class ShipperStats:
    """Counters of one LogShipper since it was made; a snapshot, read with `shipper.stats`."""

    # accepted counts the events emit() put on the queue.
    accepted: int
    # dropped counts events pushed out of the full queue, plus events emitted after close.
    dropped: int
    # unconvertible counts events that could not be turned into a LogEvent (an unknown type, a bad value).
    unconvertible: int
    # rejected counts events in batches the server refused as invalid (they are not sent again).
    rejected: int
    # acknowledged counts events the server has committed.
    acknowledged: int
    # abandoned counts events still unacknowledged when the shipper was closed.
    abandoned: int
    batches_sent: int
    # batches_resent counts sends of a batch after the first (after a reconnect).
    batches_resent: int
    # reconnects counts streams opened after the first.
    reconnects: int
    # queued is the number of events waiting in the queue now; unacknowledged those in batches in flight.
    queued: int
    unacknowledged: int
    # last_error describes the last failure of the stream ("" when there was none).
    last_error: str


class EventQueue:
    """A bounded FIFO of events that any thread may put into: when full, `put` drops the OLDEST event and
    counts it, so the newest events survive an outage. Only the drop count needs the lock (it must be
    exact); `pop` takes no lock (deque.popleft is atomic), so the consumer never makes a producer wait.
    """

    __slots__ = (
        "_closed",
        "_dropped_reported",
        "_events",
        "_lock",
        "accepted",
        "capacity",
        "dropped",
        "refused",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._events: deque[object] = deque()
        self._lock = threading.Lock()
        self._closed = False
        # accepted counts events put; dropped those pushed out by a put into a full queue; refused those
        # put after close (never accepted).
        self.accepted = 0
        self.dropped = 0
        self.refused = 0
        self._dropped_reported = 0

    def put(self, event: object) -> int:
        """Appends `event`, dropping the oldest first when full; returns the length after, 0 when closed."""
        with self._lock:
            if self._closed:
                self.refused += 1
                return 0
            events = self._events
            if len(events) >= self.capacity:
                # IndexError: the consumer emptied the queue meanwhile, so nothing needs dropping.
                with contextlib.suppress(IndexError):
                    events.popleft()
                    self.dropped += 1
            events.append(event)
            self.accepted += 1
            return len(events)

    def pop(self) -> object:
        """The oldest event, removed; IndexError when empty."""
        return self._events.popleft()

    def take_dropped(self) -> int:
        """How many events were dropped since the last call."""
        with self._lock:
            dropped = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            return dropped

    def unreported_dropped(self) -> int:
        """How many events were dropped since the last `take_dropped`, without resetting it."""
        with self._lock:
            return self.dropped - self._dropped_reported

    def close(self) -> None:
        """Refuses (and counts) every later put."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def clear(self) -> int:
        """Empties the queue; returns how many events it held."""
        with self._lock:
            count = len(self._events)
            self._events.clear()
            return count

    def __len__(self) -> int:
        return len(self._events)


class _Batch:
    """One numbered batch; kept until acknowledged, and sent unchanged again after a reconnect."""

    __slots__ = ("events", "request", "sends", "sent_at", "sequence")

    def __init__(self, sequence: int, request: logs_pb2.StreamLogEventsRequest, events: int) -> None:
        self.sequence = sequence
        self.request = request
        self.events = events
        self.sends = 0
        self.sent_at = 0.0


class _StreamStalled(Exception):
    """No acknowledgement (or no write completion) within ack_timeout: the stream is given up."""


def _default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:MAX_INSTANCE]


def _client_id(service: str, instance: str) -> str:
    # Unique per shipper, and readable in GetIngestionStats: service, instance, then a random tail.
    tail = uuid.uuid4().hex[:12]
    head = _CLIENT_ID_UNSAFE.sub("_", f"{service}:{instance}")[: 127 - len(tail)]
    return f"{head}:{tail}"


class LogShipper:
    """Non-blocking, bounded, batching EventSink that ships events to LogService (see the module doc).

    `target` is "host:port" (the shipper then owns a channel on its own thread; `token`, `tls`,
    `metadata` and `options` are as for `modelplane.client.connect`) or a `Connection` (the shipper then
    runs on the running event loop and uses the connection's channel and metadata; make it inside that
    loop). `service` and `instance` stamp every event that does not name its own; `client_id` names this
    shipper to the server's drop and gap counters (unique per process by default).
    """

    def __init__(
        self,
        target: str | Connection,
        *,
        service: str,
        instance: str | None = None,
        client_id: str | None = None,
        token: str | None = None,
        tls: bool | TlsOptions = False,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_unacknowledged_batches: int = 8,
        ack_timeout: float = 10.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        exit_flush_timeout: float = 2.0,
    ) -> None:
        if not SERVICE_PATTERN.match(service):
            raise ValueError(
                'service must be 1 to 63 characters of lower-case letters, digits, "-", "_", "."'
            )
        if instance is not None and len(instance) > MAX_INSTANCE:
            raise ValueError(f"instance must be at most {MAX_INSTANCE} characters")
        if client_id is not None and (not 0 < len(client_id) <= 128 or _CLIENT_ID_UNSAFE.search(client_id)):
            raise ValueError('client_id must be 1 to 128 characters of letters, digits, "-", "_", ".", ":"')
        if queue_size < 1 or max_unacknowledged_batches < 1:
            raise ValueError("queue_size and max_unacknowledged_batches must be positive")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        if flush_interval <= 0 or ack_timeout <= 0:
            raise ValueError("flush_interval and ack_timeout must be positive")
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")
        self.service = service
        self.instance = instance or _default_instance()
        self.client_id = client_id or _client_id(service, self.instance)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._window = max_unacknowledged_batches
        self._ack_timeout = ack_timeout
        # Half fixed, half jitter: replicas of a service restarted together do not reconnect in step.
        self._reconnect = BackoffPolicy(initial=initial_backoff, maximum=max_backoff, jitter=0.5)
        self._exit_flush_timeout = exit_flush_timeout

        self._queue = EventQueue(queue_size)
        # Written by the sender only.
        self._unconvertible = 0
        self._rejected = 0
        self._unreported_rejected = 0
        self._unconvertible_reported = 0
        self._acknowledged = 0
        self._abandoned = 0
        self._batches_sent = 0
        self._batches_resent = 0
        self._reconnects = 0
        self._last_error = ""
        self._sequence = 0
        self._pending: deque[_Batch] = deque()
        self._pending_events = 0
        # Notified by the sender whenever events are acknowledged or dropped, for flush().
        self._progress = threading.Condition(threading.Lock())

        # asyncio.Event binds to a loop on first use, so these serve the shipper's loop whichever it is.
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

        if isinstance(target, str):
            self._loop = asyncio.new_event_loop()

            def open_connection() -> Connection:
                # Called on the shipper's thread: a grpc.aio channel belongs to the loop it is made on.
                return connect(target, token=token, tls=tls, metadata=metadata, options=options)

            self._thread = threading.Thread(
                target=self._thread_main, args=(open_connection,), name=f"LogShipper[{service}]", daemon=True
            )
            self._thread.start()
            atexit.register(self._close_at_exit)
        else:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "a LogShipper on a Connection runs on the connection's event loop: make it inside that "
                    "loop, or give a target address to run it on its own thread"
                ) from None
            self._task = self._loop.create_task(self._run(target), name=f"LogShipper[{service}]")
        self._loop_thread_id = self._thread.ident if self._thread is not None else threading.get_ident()

    # The caller's side.

    def emit(self, event: object) -> None:
        """Queues `event` for shipping and returns at once; never blocks, never raises (see the module
        doc)."""
        try:
            if self._queue.put(event) == self._batch_size:
                # Once per full batch, not per event: waking the sender's loop writes to its self-pipe.
                self._loop.call_soon_threadsafe(self._wake)
        except Exception:
            # emit must not raise: a failure here loses this one event, never the caller's work.
            logger.debug("LogShipper.emit failed", exc_info=True)

    @property
    def stats(self) -> ShipperStats:
        """A snapshot of the shipper's counters."""
        queue = self._queue
        return ShipperStats(
            accepted=queue.accepted,
            dropped=queue.dropped + queue.refused,
            unconvertible=self._unconvertible,
            rejected=self._rejected,
            acknowledged=self._acknowledged,
            abandoned=self._abandoned,
            batches_sent=self._batches_sent,
            batches_resent=self._batches_resent,
            reconnects=self._reconnects,
            queued=len(queue),
            unacknowledged=self._pending_events,
            last_error=self._last_error,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every event emitted before the call is acknowledged or dropped, at most `timeout`
        seconds (None: no limit); True when that happened. Sends a partly filled batch at once. Blocks the
        calling thread: from the event loop a Connection-based shipper runs on, use `await aflush()`."""
        if threading.get_ident() == self._loop_thread_id:
            raise RuntimeError("flush() would block the shipper's own event loop: use `await aflush()`")
        return self._flush_from_worker(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 -- passed to flush()
        """`flush` for async code: waits on a worker thread, so every event loop (this one too) runs on."""
        return await asyncio.to_thread(self._flush_from_worker, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Flushes for at most `timeout` seconds, then stops the sender and releases the channel it owns.
        Events emitted afterwards are dropped (counted). Blocks the calling thread (see `flush`)."""
        if threading.get_ident() == self._loop_thread_id:
            raise RuntimeError("close() would block the shipper's own event loop: use `await aclose()`")
        if self._queue.closed:
            return
        started = time.monotonic()
        self.flush(timeout)
        remaining = None if timeout is None else max(timeout - (time.monotonic() - started), 0.0)
        self._shut()
        if self._thread is not None:
            atexit.unregister(self._close_at_exit)
            with contextlib.suppress(RuntimeError):
                # RuntimeError: the loop is already closed, so the sender has already ended.
                self._loop.call_soon_threadsafe(self._set_stop)
            self._thread.join(None if remaining is None else remaining + 1.0)
        else:
            future = asyncio.run_coroutine_threadsafe(self._stop_task(), self._loop)
            future.result(None if remaining is None else remaining + 1.0)

    async def aclose(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109 -- bounds the flush
        """`close` for async code."""
        if self._thread is not None:
            await asyncio.to_thread(self.close, timeout)
            return
        if self._queue.closed:
            return
        await self.aflush(timeout)
        self._shut()
        if asyncio.get_running_loop() is self._loop:
            await self._stop_task()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop_task(), self._loop))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    # Bookkeeping shared by both sides.

    def _settled(self) -> int:
        # Every accepted event ends acknowledged, dropped from the queue, unconvertible, rejected by the
        # server or abandoned at close. Drops take the oldest events first, so once this count reaches
        # the number accepted before a flush, those events are settled (short of drops racing resends).
        return (
            self._acknowledged + self._queue.dropped + self._unconvertible + self._rejected + self._abandoned
        )

    def _flush_from_worker(self, timeout: float | None) -> bool:
        target = self._queue.accepted
        self._request_flush()
        with self._progress:
            return self._progress.wait_for(lambda: self._settled() >= target, timeout)

    def _request_flush(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake)

    def _shut(self) -> None:
        self._queue.close()

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _close_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close(self._exit_flush_timeout)

    # The sender's side: everything below runs on the shipper's event loop.

    def _wake(self) -> None:
        self._wakeup.set()

    def _set_stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    async def _stop_task(self) -> None:
        self._set_stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _thread_main(self, open_connection: Callable[[], Connection]) -> None:
        asyncio.set_event_loop(self._loop)

        async def run() -> None:
            connection = open_connection()
            try:
                await self._run(connection)
            finally:
                await connection.close(None)

        try:
            self._loop.run_until_complete(run())
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _run(self, connection: Connection) -> None:
        stub: LogServiceAsyncStub = logs_pb2_grpc.LogServiceStub(connection.channel)
        backoff = Backoff(self._reconnect)
        first = True
        try:
            while not self._stop.is_set():
                if not first:
                    self._reconnects += 1
                first = False
                acknowledged_before = self._acknowledged
                try:
                    await self._session(stub, connection.metadata)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    # Any failure ends this stream, never the sender.
                    self._record_failure(error)
                if self._stop.is_set():
                    break
                if self._acknowledged > acknowledged_before:
                    backoff.reset()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff.next_delay())
        finally:
            # Nothing is accepted any more (close shut the queue first): what is left is lost.
            self._abandoned = self._pending_events + self._queue.clear()
            if self._abandoned:
                logger.warning(
                    "LogShipper %s closed with %d unacknowledged events", self.client_id, self._abandoned
                )
            self._notify_progress()

    def _record_failure(self, error: BaseException) -> None:
        if isinstance(error, grpc.RpcError):
            error = from_rpc_error(error)
        if isinstance(error, _StreamStalled):
            text = f"stream stalled: {error}"
        else:
            text = str(error) or type(error).__name__
        if text != self._last_error:
            logger.warning("LogShipper %s: log stream failed (%s); reconnecting", self.client_id, text)
        self._last_error = text
        if isinstance(error, InvalidArgument) and self._pending:
            # The server refuses this batch and would refuse it again: sending it for ever would stall
            # every event behind it. Its events are reported as dropped in the next batch.
            named = error.metadata.get("sequence", "")
            batch = next((b for b in self._pending if str(b.sequence) == named), self._pending[0])
            self._pending.remove(batch)
            self._pending_events -= batch.events
            self._rejected += batch.events
            self._unreported_rejected += batch.events
            logger.error(
                "LogShipper %s: the server refused batch %d (%d events): %s",
                self.client_id,
                batch.sequence,
                batch.events,
                error,
            )
            self._notify_progress()

    async def _session(self, stub: LogServiceAsyncStub, metadata: tuple[tuple[str, str], ...]) -> None:
        """One StreamLogEvents call: resend what is unacknowledged, then ship new batches until it fails."""
        call: _StreamCall = stub.StreamLogEvents(None, metadata=metadata)
        reader = asyncio.create_task(self._read_acks(call), name="LogShipper acknowledgements")
        try:
            await self._ship(call, reader)
        except (grpc.RpcError, asyncio.InvalidStateError, _StreamStalled) as error:
            # A failed write says little; the status the server ended the call with, which the reader
            # holds, says why (INVALID_ARGUMENT naming a batch, UNAVAILABLE, ...). Not waited for past a
            # close: close bounds its wait, and what it leaves unacknowledged is counted only once the
            # sender has ended.
            stopping = asyncio.ensure_future(self._stop.wait())
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
        for batch in list(self._pending):
            await self._send(call, batch)
        while not self._stop.is_set():
            if reader.done():
                reader.result()
                raise _StreamStalled("the server ended the stream")
            self._wakeup.clear()
            await self._fill(call)
            timeout = self._flush_interval
            if self._pending:
                left = self._pending[0].sent_at + self._ack_timeout - time.monotonic()
                if left <= 0:
                    raise _StreamStalled(f"no acknowledgement for {self._ack_timeout:g} s")
                timeout = min(timeout, left)
            waiter = asyncio.ensure_future(self._wakeup.wait())
            await asyncio.wait({waiter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def _fill(self, call: _StreamCall) -> None:
        """Sends new batches while the window has room and there are events (or losses) to report."""
        while len(self._pending) < self._window:
            batch = self._next_batch()
            if batch is None:
                return
            self._pending.append(batch)
            self._pending_events += batch.events
            await self._send(call, batch)

    async def _send(self, call: _StreamCall, batch: _Batch) -> None:
        batch.sends += 1
        if batch.sends > 1:
            self._batches_resent += 1
        batch.sent_at = time.monotonic()
        try:
            await asyncio.wait_for(call.write(batch.request), self._ack_timeout)
        except TimeoutError:
            raise _StreamStalled(f"a write did not complete in {self._ack_timeout:g} s") from None
        self._batches_sent += 1

    def _unreported_losses(self) -> int:
        return (
            self._queue.unreported_dropped()
            + self._unconvertible
            - self._unconvertible_reported
            + self._unreported_rejected
        )

    def _next_batch(self) -> _Batch | None:
        """Takes up to batch_size events off the queue and numbers them as the next batch, with the losses
        since the last one; None when there is neither an event nor a loss to report. A batch may be
        empty: it then only reports losses (events dropped or unconvertible)."""
        queue = self._queue
        if not queue and not self._unreported_losses():
            return None
        events: list[logs_pb2.LogEvent] = []
        size = 0
        while len(events) < self._batch_size:
            try:
                event = queue.pop()
            except IndexError:
                break
            try:
                message = to_log_event(event, service=self.service, instance=self.instance)
            except Exception as error:
                # One bad event must not stop the others.
                self._unconvertible += 1
                if self._unconvertible == 1:
                    logger.warning(
                        "LogShipper %s: dropping an event it cannot convert: %s", self.client_id, error
                    )
                continue
            events.append(message)
            size += message.ByteSize()
            if size >= _MAX_BATCH_BYTES:
                break
        dropped = (
            queue.take_dropped()
            + self._unconvertible
            - self._unconvertible_reported
            + self._unreported_rejected
        )
        self._unconvertible_reported = self._unconvertible
        self._unreported_rejected = 0
        if not events and not dropped:
            return None
        if not events:
            self._notify_progress()
        self._sequence += 1
        request = logs_pb2.StreamLogEventsRequest(
            batch=logs_pb2.LogBatch(
                client_id=self.client_id, sequence=self._sequence, dropped_since_last=dropped, events=events
            )
        )
        return _Batch(self._sequence, request, len(events))

    async def _read_acks(self, call: _StreamCall) -> None:
        async for response in call:
            acknowledged = response.ack.sequence
            released = False
            while self._pending and self._pending[0].sequence <= acknowledged:
                batch = self._pending.popleft()
                self._pending_events -= batch.events
                self._acknowledged += batch.events
                released = True
            if released:
                self._last_error = ""
                self._notify_progress()
                self._wake()
