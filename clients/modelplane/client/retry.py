"""Retrying: the one backoff schedule of the clients, and calls retried on UNAVAILABLE within one deadline.

`BackoffPolicy` is the schedule (capped exponential, jittered) and `Backoff` the state of one loop using
it; unary calls, resuming watch streams, the log shipper's and the coordinator's reconnects and the LLM
client's registry follower all wait by them, each with its own settings. Calls follow gRPC's retry design
(gRFC A6): before retry n the client waits a random time in [0, min(initial * multiplier**(n-1), maximum)],
but never less than the RetryInfo delay the server sent.
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

from modelplane.client.errors import DeadlineExceeded, ModelplaneError, Unavailable

T = TypeVar("T")

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "NO_RETRY",
    "Backoff",
    "BackoffPolicy",
    "CallAttempts",
    "RetryPolicy",
    "backoff_ceilings",
    "call_with_retry",
    "call_with_retry_blocking",
    "is_retryable",
    "is_unreachable",
    "retry_delay",
]


@dataclass(frozen=True)
class BackoffPolicy:
    """Capped exponential backoff with jitter, the one schedule every retry and reconnect loop uses.

    The wait before retry n (1 for the first) is drawn uniformly from [ceiling * (1 - jitter), ceiling],
    where ceiling = min(initial * multiplier**(n-1), maximum): jitter 1.0 is gRPC's "full jitter", 0.5
    keeps at least half the ceiling, so a loop that fails at once does not spin, yet replicas restarted
    together still spread out. A delay the server asked for (RetryInfo) is the least wait.
    """

    initial: float = 0.1
    multiplier: float = 2.0
    maximum: float = 5.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError("backoffs must satisfy 0 <= initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1 for the first)."""
        if retry < 1:
            raise ValueError("retries are numbered from 1")
        # Multiplied step by step and stopped at the cap: a reconnect loop through a long outage counts
        # thousands of failures, and multiplier**n would overflow a float.
        ceiling = self.initial
        for _ in range(retry - 1):
            if ceiling >= self.maximum or ceiling == 0 or self.multiplier == 1:
                break
            ceiling *= self.multiplier
        return min(ceiling, self.maximum)

    def delay(self, retry: int, rng: random.Random, *, at_least: float | None = None) -> float:
        """The wait before retry number `retry`, drawn with `rng`; never less than `at_least` (the
        server's RetryInfo delay, when it sent one)."""
        return _jittered(self.ceiling(retry), self.jitter, rng, at_least)


class Backoff:
    """The backoff state of one retry or reconnect loop: it counts consecutive failures and forgets them
    when the loop makes progress (`reset`). `max_retries` bounds the retries between two resets (None: no
    bound); once they are made the loop is `exhausted` and gives up with its last error. Not thread-safe:
    each loop keeps its own."""

    __slots__ = ("_rng", "failures", "max_retries", "policy")

    def __init__(
        self, policy: BackoffPolicy, *, max_retries: int | None = None, rng: random.Random | None = None
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.policy = policy
        self.max_retries = max_retries
        self.failures = 0
        self._rng = rng or random.Random()

    @property
    def exhausted(self) -> bool:
        """True when `max_retries` retries have been made since the last reset: no retry is left."""
        return self.max_retries is not None and self.failures >= self.max_retries

    def next_delay(self, at_least: float | None = None) -> float:
        """Counts a failure and returns the wait before the next try, at least `at_least` seconds (the
        server's RetryInfo delay). Check `exhausted` first where retries are bounded."""
        self.failures += 1
        return self.policy.delay(self.failures, self._rng, at_least=at_least)

    def reset(self) -> None:
        """The loop made progress: the next failure waits the shortest time again."""
        self.failures = 0


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

    @property
    def backoff(self) -> BackoffPolicy:
        """The schedule of the waits between attempts: full jitter, as gRPC's retry design has it."""
        return BackoffPolicy(self.initial_backoff, self.multiplier, self.max_backoff, jitter=1.0)

    def schedule(self, rng: random.Random | None = None) -> Backoff:
        """A fresh backoff state for one call (or one run of a resuming stream): at most
        max_attempts - 1 retries between resets."""
        return Backoff(self.backoff, max_retries=self.max_attempts - 1, rng=rng)


DEFAULT_RETRY_POLICY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(error: ModelplaneError) -> bool:
    """UNAVAILABLE is the one code meaning "nothing was done, try again" (a server shutting down, storage
    briefly away, a connection lost); every other code is the caller's to handle."""
    return error.code == grpc.StatusCode.UNAVAILABLE


def is_unreachable(error: BaseException) -> bool:
    """Whether `error` means a service could not be reached or did not answer in time (UNAVAILABLE,
    DEADLINE_EXCEEDED, an asyncio timeout, a socket error), as opposed to a refusal (an unknown name, a
    denied token, a bad request), which is the caller's configuration to fix. Typed errors and raw
    grpc.RpcErrors alike."""
    if isinstance(error, Unavailable | DeadlineExceeded | TimeoutError | OSError):
        return True
    if isinstance(error, grpc.RpcError):
        code = getattr(error, "code", None)
        return callable(code) and code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return False


def _jittered(ceiling: float, jitter: float, rng: random.Random, at_least: float | None) -> float:
    delay = rng.uniform(ceiling * (1.0 - jitter), ceiling)
    return delay if at_least is None else max(delay, at_least)


def backoff_ceilings(policy: RetryPolicy) -> Iterator[float]:
    """The upper bound of the wait before each retry, in order: max_attempts - 1 values. (Older form of
    `policy.schedule()`, which a loop should prefer: it also draws the jitter and resets.)"""
    backoff = policy.backoff
    for retry in range(1, policy.max_attempts):
        yield backoff.ceiling(retry)


def retry_delay(ceiling: float, error: ModelplaneError, rng: random.Random) -> float:
    """The wait before the next attempt: full jitter under the ceiling, at least the server's RetryInfo.
    (Older form of `Backoff.next_delay(error.retry_after)`.)"""
    return _jittered(ceiling, 1.0, rng, error.retry_after)


class CallAttempts:
    """The retry state of one call: its deadline and its backoff. Shared by the async and the sync call
    loops, so both retry alike: `remaining()` before each attempt, `delay_after(error)` after a failed one."""

    __slots__ = ("_backoff", "_clock", "_deadline", "_retryable")

    def __init__(
        self,
        *,
        timeout: float | None,
        policy: RetryPolicy,
        retryable: Callable[[ModelplaneError], bool],
        rng: random.Random | None,
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._backoff = policy.schedule(rng)
        self._retryable = retryable

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline), the next attempt's own deadline."""
        return None if self._deadline is None else max(self._deadline - self._clock(), 0.0)

    def delay_after(self, error: ModelplaneError) -> float | None:
        """The wait before retrying after `error`; None when the call must give up with it (not retryable,
        no attempt left, or the retry could not start before the deadline)."""
        if not self._retryable(error) or self._backoff.exhausted:
            return None
        delay = self._backoff.next_delay(error.retry_after)
        if self._deadline is not None and self._clock() + delay >= self._deadline:
            return None
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
    attempts = CallAttempts(timeout=timeout, policy=policy, retryable=retryable, rng=rng, clock=clock)
    while True:
        try:
            return await attempt(attempts.remaining())
        except ModelplaneError as error:
            delay = attempts.delay_after(error)
            if delay is None:
                raise
            await sleep(delay)


def call_with_retry_blocking(
    attempt: Callable[[float | None], T],
    *,
    timeout: float | None,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    retryable: Callable[[ModelplaneError], bool] = is_retryable,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call_with_retry` for a blocking `attempt` (the sync client), waiting with `sleep`."""
    attempts = CallAttempts(timeout=timeout, policy=policy, retryable=retryable, rng=rng, clock=clock)
    while True:
        try:
            return attempt(attempts.remaining())
        except ModelplaneError as error:
            delay = attempts.delay_after(error)
            if delay is None:
                raise
            sleep(delay)
