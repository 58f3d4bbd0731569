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

Threads. `emit`, `flush` and `stats` may be called from any number of threads at once (and `emit` from
any event loop): puts into the queue hold its lock only to append and count, the sender's state is
written on its loop alone, and `flush` waits on a condition the sender notifies. `close` may be called
from any thread but the sender's own; calls after the first do nothing.

Shutdown: `flush(timeout)` waits until every event emitted before the call is acknowledged or dropped;
`close(timeout)` flushes and stops; `aflush` and `aclose` are their async forms. Events still
unacknowledged at close are counted in `stats.abandoned`. A shipper on its own thread that is never
closed is flushed for at most `exit_flush_timeout` seconds at interpreter exit.

The parts, one job each: `event_queue.EventQueue` (the bounded, drop-counting queue),
`log_batches.BatchCutter` (numbered batches and their loss reports), `log_stream.LogStream` (the
stream, acknowledgement and reconnect protocol) and `sender_loop.SenderLoop` (the thread-to-loop bridge);
this module composes them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from modelplane.client.channel import Connection, TlsOptions, connect
from modelplane.client.event_queue import EventQueue
from modelplane.client.log_batches import BatchCutter
from modelplane.client.log_events import MAX_INSTANCE, SERVICE_PATTERN
from modelplane.client.log_stream import LogStream
from modelplane.client.retry import BackoffPolicy
from modelplane.client.sender_loop import SenderLoop

__all__ = ["LogShipper", "ShipperStats"]

logger = logging.getLogger(__name__)

_CLIENT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


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
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")
        self.service = service
        self.instance = instance or _default_instance()
        self.client_id = client_id or _client_id(service, self.instance)
        self._batch_size = batch_size
        self._exit_flush_timeout = exit_flush_timeout
        self._queue = EventQueue(queue_size)
        self._cutter = BatchCutter(
            self._queue,
            client_id=self.client_id,
            service=service,
            instance=self.instance,
            batch_size=batch_size,
        )
        # Events still unacknowledged when the sender ended; written once, as it ends.
        self._abandoned = 0
        try:
            self._sender = SenderLoop(name=f"LogShipper[{service}]", own_thread=isinstance(target, str))
        except RuntimeError:
            raise RuntimeError(
                "a LogShipper on a Connection runs on the connection's event loop: make it inside that "
                "loop, or give a target address to run it on its own thread"
            ) from None
        self._stream = LogStream(
            self._cutter,
            window=max_unacknowledged_batches,
            flush_interval=flush_interval,
            ack_timeout=ack_timeout,
            # Half fixed, half jitter: replicas of a service restarted together do not reconnect in step.
            reconnect=BackoffPolicy(initial=initial_backoff, maximum=max_backoff, jitter=0.5),
            wakeup=self._sender.wakeup,
            stopping=self._sender.stopping,
            on_progress=self._sender.notify,
        )
        if isinstance(target, str):

            async def run_on_own_channel() -> None:
                # Called on the shipper's thread: a grpc.aio channel belongs to the loop it is made on.
                connection = connect(target, token=token, tls=tls, metadata=metadata, options=options)
                try:
                    await self._run(connection)
                finally:
                    await connection.close(None)

            self._sender.start(run_on_own_channel)
            atexit.register(self._close_at_exit)
        else:
            self._sender.start(lambda: self._run(target))

    # The caller's side: any thread.

    def emit(self, event: object) -> None:
        """Queues `event` for shipping and returns at once; never blocks, never raises (see the module
        doc)."""
        try:
            if self._queue.put(event) == self._batch_size:
                # Once per full batch, not per event: waking the sender's loop writes to its self-pipe.
                self._sender.wake()
        except Exception:
            # emit must not raise: a failure here loses this one event, never the caller's work.
            logger.debug("LogShipper.emit failed", exc_info=True)

    @property
    def stats(self) -> ShipperStats:
        """A snapshot of the shipper's counters."""
        queue = self._queue
        stream = self._stream
        return ShipperStats(
            accepted=queue.accepted,
            dropped=queue.dropped + queue.refused,
            unconvertible=self._cutter.unconvertible,
            rejected=self._cutter.rejected,
            acknowledged=stream.acknowledged,
            abandoned=self._abandoned,
            batches_sent=stream.batches_sent,
            batches_resent=stream.batches_resent,
            reconnects=stream.reconnects,
            queued=len(queue),
            unacknowledged=stream.window.events,
            last_error=stream.last_error,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every event emitted before the call is acknowledged or dropped, at most `timeout`
        seconds (None: no limit); True when that happened. Sends a partly filled batch at once. Blocks the
        calling thread: from the event loop a Connection-based shipper runs on, use `await aflush()`."""
        if self._sender.on_loop_thread():
            raise RuntimeError("flush() would block the shipper's own event loop: use `await aflush()`")
        return self._flush_from_worker(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 -- passed to flush()
        """`flush` for async code: waits on a worker thread, so every event loop (this one too) runs on."""
        return await asyncio.to_thread(self._flush_from_worker, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Flushes for at most `timeout` seconds, then stops the sender and releases the channel it owns.
        Events emitted afterwards are dropped (counted). Blocks the calling thread (see `flush`)."""
        if self._sender.on_loop_thread():
            raise RuntimeError("close() would block the shipper's own event loop: use `await aclose()`")
        if self._queue.closed:
            return
        started = time.monotonic()
        self.flush(timeout)
        remaining = None if timeout is None else max(timeout - (time.monotonic() - started), 0.0)
        self._queue.close()
        if self._sender.owns_thread:
            atexit.unregister(self._close_at_exit)
        self._sender.stop(None if remaining is None else remaining + 1.0)

    async def aclose(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109 -- bounds the flush
        """`close` for async code."""
        if self._sender.owns_thread:
            await asyncio.to_thread(self.close, timeout)
            return
        if self._queue.closed:
            return
        await self.aflush(timeout)
        self._queue.close()
        await self._sender.astop()

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

    def _settled(self) -> int:
        # Every accepted event ends acknowledged, dropped from the queue, unconvertible, rejected by the
        # server or abandoned at close. Drops take the oldest events first, so once this count reaches
        # the number accepted before a flush, those events are settled (short of drops racing resends).
        cutter = self._cutter
        return (
            self._stream.acknowledged
            + self._queue.dropped
            + cutter.unconvertible
            + cutter.rejected
            + self._abandoned
        )

    def _flush_from_worker(self, timeout: float | None) -> bool:
        target = self._queue.accepted
        self._sender.wake()
        return self._sender.wait_for(lambda: self._settled() >= target, timeout)

    def _close_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close(self._exit_flush_timeout)

    # The sender's side: on the shipper's event loop.

    async def _run(self, connection: Connection) -> None:
        try:
            await self._stream.run(connection)
        finally:
            # Nothing is accepted any more (close shut the queue first): what is left is lost.
            self._abandoned = self._stream.window.events + self._queue.clear()
            if self._abandoned:
                logger.warning(
                    "LogShipper %s closed with %d unacknowledged events", self.client_id, self._abandoned
                )
            self._sender.notify()
