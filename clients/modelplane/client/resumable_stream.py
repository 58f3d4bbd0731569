"""Watch streams that outlive a broken call: reopened where they stopped, with no gap and no repeat.

WatchModels and WatchDeployment send `oneof event {change, progress}` messages in revision order, and their
start_revision is inclusive (0: from now). A stream that ends with UNAVAILABLE (a server shutting down, a
lost connection) is reopened from the position the caller has reached, after a wait chosen by the retry
policy of `modelplane.client.retry` (full jitter, at least the server's RetryInfo, never past the deadline).
`resumable_watch` runs on grpc.aio, `resumable_watch_blocking` on grpc's sync API, with the same rules.
"""

# The `timeout` parameter is the whole watch's deadline handed to gRPC, not an asyncio timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from modelplane.client.errors import ModelplaneError, from_rpc_error
from modelplane.client.retry import RetryPolicy, is_retryable

__all__ = [
    "WATCH_RESUME_POLICY",
    "WatchPosition",
    "WatchReopenings",
    "resumable_watch",
    "resumable_watch_blocking",
]

ResponseT = TypeVar("ResponseT", bound=Message)

# A watch is long-lived, and the likeliest break is a server restarting, which takes seconds: more and
# longer waits than a unary call's policy (whose waits must fit in a 10 s deadline), up to about half a
# minute of waiting in all before the watch gives up. A message received restores the whole budget.
WATCH_RESUME_POLICY = RetryPolicy(max_attempts=10, initial_backoff=0.2, max_backoff=5.0)


class WatchPosition:
    """Where to reopen a watch so that the caller sees no gap and no repeat.

    A progress mark at R says every change up to R was sent: reopen at R + 1. A change at R says only that
    changes before R were all sent, since one revision can hold several changes and a stream can end
    between them: reopen at R and drop as many changes of revision R as the caller already has.
    """

    def __init__(self, start_revision: int) -> None:
        # The start_revision to reopen with: 0 (from now) until the stream has said where it stands.
        self.start_revision = start_revision
        # How many changes of revision `start_revision` the caller already has.
        self.received_at_start = 0
        # Repeats still expected on the current stream: the changes of `start_revision` sent before.
        self._repeats = 0

    def reopen(self) -> int:
        """The start_revision of the next stream; from now on its repeats are dropped."""
        self._repeats = self.received_at_start
        return self.start_revision

    def receive(self, kind: str | None, revision: int) -> bool:
        """Records one message (`kind` "change" or "progress"); False when it is a repeat to drop."""
        if kind == "progress":
            self.start_revision, self.received_at_start, self._repeats = revision + 1, 0, 0
        elif kind == "change":
            if revision == self.start_revision and self._repeats > 0:
                self._repeats -= 1
                return False
            if revision == self.start_revision:
                self.received_at_start += 1
            else:
                self.start_revision, self.received_at_start, self._repeats = revision, 1, 0
        return True


def _event(response: Message) -> tuple[str | None, int]:
    """The kind of a watch message's `event` and its revision (0 when it carries none)."""
    kind = response.WhichOneof("event")
    if kind is None:
        return None, 0
    return kind, int(getattr(response, kind).revision)


class WatchReopenings:
    """The reopening state of one watch: its deadline, its position and its backoff, shared by the async
    and the blocking watch loops so that both resume alike."""

    def __init__(
        self,
        *,
        start_revision: int,
        resume: bool,
        timeout: float | None,
        policy: RetryPolicy,
        rng: random.Random | None,
        clock: Callable[[], float],
    ) -> None:
        self.position = WatchPosition(start_revision)
        self._resume = resume
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._backoff = policy.schedule(rng)

    def remaining(self) -> float | None:
        """Seconds left of the whole watch (None: no deadline), the next stream's own deadline."""
        return None if self._deadline is None else max(self._deadline - self._clock(), 0.0)

    def receive(self, response: Message) -> bool:
        """Records one message; False when it is a repeat to drop. The stream works again, so the next
        break gets the whole budget."""
        self._backoff.reset()
        return self.position.receive(*_event(response))

    def delay_after(self, error: ModelplaneError) -> float | None:
        """The wait before reopening after `error`; None when the watch must end with it."""
        if not self._resume or not is_retryable(error) or self._backoff.exhausted:
            return None
        delay = self._backoff.next_delay(error.retry_after)
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            return None
        return delay


async def resumable_watch(
    open_call: Callable[[int, float | None], grpc.aio.UnaryStreamCall[Any, ResponseT]],
    *,
    start_revision: int,
    resume: bool = True,
    timeout: float | None = None,
    policy: RetryPolicy = WATCH_RESUME_POLICY,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[ResponseT, None]:
    """The messages of a watch opened by `open_call(start_revision, remaining_seconds)`, reopened on
    UNAVAILABLE when `resume` is set.

    `policy.max_attempts` bounds the consecutive failed openings; `timeout` (None: none) bounds the whole
    watch. Any other error, or UNAVAILABLE once the budget or the deadline is spent, is raised as a
    ModelplaneError (RevisionCompacted, for one).
    """
    reopenings = WatchReopenings(
        start_revision=start_revision, resume=resume, timeout=timeout, policy=policy, rng=rng, clock=clock
    )
    while True:
        call = open_call(reopenings.position.reopen(), reopenings.remaining())
        try:
            async for response in call:
                if reopenings.receive(response):
                    yield response
            return
        except grpc.RpcError as rpc_error:
            error: ModelplaneError = from_rpc_error(rpc_error)
            delay = reopenings.delay_after(error)
            if delay is None:
                raise error from rpc_error
        finally:
            call.cancel()
        await sleep(delay)


def resumable_watch_blocking(
    open_call: Callable[[int, float | None], Iterator[ResponseT]],
    *,
    start_revision: int,
    resume: bool = True,
    timeout: float | None = None,
    policy: RetryPolicy = WATCH_RESUME_POLICY,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[ResponseT, None, None]:
    """`resumable_watch` on grpc's sync API: `open_call` returns the call (a response iterator that can be
    cancelled); the messages are yielded as they come, blocking in between. Closing the iterator cancels
    the call."""
    reopenings = WatchReopenings(
        start_revision=start_revision, resume=resume, timeout=timeout, policy=policy, rng=rng, clock=clock
    )
    while True:
        call = open_call(reopenings.position.reopen(), reopenings.remaining())
        try:
            for response in call:
                if reopenings.receive(response):
                    yield response
            return
        except grpc.RpcError as rpc_error:
            error: ModelplaneError = from_rpc_error(rpc_error)
            delay = reopenings.delay_after(error)
            if delay is None:
                raise error from rpc_error
        finally:
            cancel = getattr(call, "cancel", None)
            if callable(cancel):
                cancel()
        sleep(delay)
