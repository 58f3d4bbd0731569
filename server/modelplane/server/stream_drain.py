"""Reads what is left of a client's request stream, unparsed and discarded, before the server ends the call.

A call with a request stream that the server ends (with an error, or OK before the last request was read)
while the client is still sending races the client's own gRPC core: the client's pending send fails, and
grpc's Python client then reports INTERNAL "Internal error from Core" in place of the status the server
sent, with none of its details (about one call in three in a loop of three-message streams refused at the
first message; even an early OK loses now and then). A status sent after the client's half-close cannot be
overtaken, so the server reads the rest of the stream first. The wait is bounded: a client that never
half-closes (a log shipper, say) holds the call for DRAIN_SECONDS at most, and at most DRAIN_BYTES are
read, one message in memory at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

# The longest wait for the client to half-close once the server has its answer (the call's deadline can
# make it shorter): far longer than a client needs to send what it had queued, and within a shutdown's
# wait for open streams (STREAM_END_WAIT).
DRAIN_SECONDS = 1.0
# The most bytes read and thrown away: a client streaming past it gets the status at once.
DRAIN_BYTES = 32 * 1024 * 1024


async def _next(source: AsyncIterator[bytes]) -> bytes | None:
    # None for the end: a task must not end with StopAsyncIteration.
    return await anext(source, None)


def _retrieve(task: asyncio.Task[bytes | None]) -> None:
    # A read nobody awaits any more (the call ended meanwhile) fails quietly with the call.
    if not task.cancelled():
        task.exception()


class ResumableRequests:
    """A call's stream of request bytes that loses nothing when its reader is cancelled mid-read.

    gRPC's own request iterator ends for good when a read is cancelled (the handler's task on shutdown,
    the log stream's reader task when the stream fails), so nothing could be read after it. Here each read
    is a task of its own, awaited shielded: a cancelled reader leaves it running, and the next read (the
    drain's) takes its message.
    """

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._pending: asyncio.Task[bytes | None] | None = None
        # The client half-closed and every message was read.
        self.ended = False

    def __aiter__(self) -> ResumableRequests:
        return self

    async def __anext__(self) -> bytes:
        if self.ended:
            raise StopAsyncIteration
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(_next(self._source))
            pending.add_done_callback(_retrieve)
        message = await asyncio.shield(pending)
        self._pending = None
        if message is None:
            self.ended = True
            raise StopAsyncIteration
        return message

    async def drain(self, remaining: float | None, *, seconds: float = DRAIN_SECONDS) -> bool:
        """Reads and discards requests until the client half-closes; whether it did within the bounds.

        `remaining` is the call's time left (None without a deadline). A client that cancels ends the
        call's task as it would anywhere else: asyncio.CancelledError propagates.
        """
        window = seconds if remaining is None else min(seconds, remaining)
        if self.ended:
            return True
        if window <= 0:
            return False
        read = 0
        try:
            async with asyncio.timeout(window):
                async for message in self:
                    read += len(message)
                    if read > DRAIN_BYTES:
                        return False
        except TimeoutError:
            return False
        except Exception:  # a read gRPC failed (the call is over): there is nothing left to wait for
            return False
        return True
