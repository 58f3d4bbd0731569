"""Retrying calls that failed with UNAVAILABLE: capped exponential backoff with jitter, within one deadline.

The schedule follows gRPC's retry design (gRFC A6): before retry n the client waits a random time in
[0, min(initial * multiplier**(n-1), maximum)], but never less than the RetryInfo delay the server sent.
All attempts share the call's deadline: a retry that could not start before it is not made, and the last
error is raised instead, so the caller sees why the call failed rather than a bare DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from modelplane.client.errors import ModelplaneError

T = TypeVar("T")

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "NO_RETRY",
    "RetryPolicy",
    "backoff_ceilings",
    "call_with_retry",
    "is_retryable",
    "retry_delay",
]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried; max_attempts counts the first attempt too."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")


DEFAULT_RETRY_POLICY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(error: ModelplaneError) -> bool:
    """UNAVAILABLE is the one code meaning "nothing was done, try again" (a server shutting down, storage
    briefly away, a connection lost); every other code is the caller's to handle."""
    return error.code == grpc.StatusCode.UNAVAILABLE


def backoff_ceilings(policy: RetryPolicy) -> Iterator[float]:
    """The upper bound of the wait before each retry, in order: max_attempts - 1 values."""
    ceiling = policy.initial_backoff
    for _ in range(policy.max_attempts - 1):
        yield min(ceiling, policy.max_backoff)
        ceiling *= policy.multiplier


def retry_delay(ceiling: float, error: ModelplaneError, rng: random.Random) -> float:
    """The wait before the next attempt: full jitter under the ceiling, at least the server's RetryInfo."""
    delay = rng.uniform(0.0, ceiling)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


async def call_with_retry(
    attempt: Callable[[float | None], Awaitable[T]],
    *,
    timeout: float | None,  # noqa: ASYNC109 -- a deadline split among gRPC attempts, not an asyncio timeout
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    retryable: Callable[[ModelplaneError], bool] = is_retryable,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Runs attempt(remaining_seconds) until it succeeds, raises a non-retryable error, runs out of attempts
    or would run past the deadline `timeout` seconds from now (None: no deadline, remaining is None)."""
    rng = rng or random.Random()
    deadline = None if timeout is None else clock() + timeout
    ceilings = backoff_ceilings(policy)
    while True:
        remaining = None if deadline is None else max(deadline - clock(), 0.0)
        try:
            return await attempt(remaining)
        except ModelplaneError as error:
            if not retryable(error):
                raise
            ceiling = next(ceilings, None)
            if ceiling is None:
                raise
            delay = retry_delay(ceiling, error, rng)
            if deadline is not None and clock() + delay >= deadline:
                raise
            await sleep(delay)
