"""Watch streams that outlive a broken call: reopened where they stopped, with no gap and no repeat.

WatchModels and WatchDeployment send `oneof event {change, progress}` messages in revision order, and their
start_revision is inclusive (0: from now). A stream that ends with UNAVAILABLE (a server shutting down, a
lost connection) is reopened from the position the caller has reached, after a wait chosen by the retry
policy of `modelplane.client.retry` (full jitter, at least the server's RetryInfo, never past the deadline).
"""

# The `timeout` parameter is the whole watch's deadline handed to gRPC, not an asyncio timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from modelplane.client.errors import ModelplaneError, from_rpc_error
from modelplane.client.retry import RetryPolicy, backoff_ceilings, is_retryable, retry_delay

__all__ = ["WATCH_RESUME_POLICY", "WatchPosition", "resumable_watch"]

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
    rng = rng or random.Random()
    deadline = None if timeout is None else clock() + timeout
    position = WatchPosition(start_revision)
    ceilings = backoff_ceilings(policy)
    while True:
        remaining = None if deadline is None else max(deadline - clock(), 0.0)
        call = open_call(position.reopen(), remaining)
        try:
            async for response in call:
                # The stream works again: the next break gets the whole budget.
                ceilings = backoff_ceilings(policy)
                if position.receive(*_event(response)):
                    yield response
            return
        except grpc.RpcError as rpc_error:
            error: ModelplaneError = from_rpc_error(rpc_error)
            ceiling = next(ceilings, None)
            if not resume or not is_retryable(error) or ceiling is None:
                raise error from rpc_error
            delay = retry_delay(ceiling, error, rng)
            if deadline is not None and clock() + delay >= deadline:
                raise error from rpc_error
        finally:
            call.cancel()
        await sleep(delay)
