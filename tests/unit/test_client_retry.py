"""The client's retry schedule: capped exponential backoff with jitter, RetryInfo honoured, one deadline.

A hand-driven clock stands in for time so the deadline arithmetic is checked exactly without sleeping.
"""

from __future__ import annotations

import random

import grpc
import pytest

from modelplane.client.errors import (
    EtagMismatch,
    ModelplaneError,
    ShuttingDown,
    StorageUnavailable,
    Unavailable,
)
from modelplane.client.retry import (
    DEFAULT_RETRY_POLICY,
    NO_RETRY,
    RetryPolicy,
    backoff_ceilings,
    call_with_retry,
    is_retryable,
    retry_delay,
)
from tests.support.manual_clock import ManualClock


class ScriptedAttempts:
    """An attempt function that raises the given errors in turn, then returns "done"."""

    def __init__(self, clock: ManualClock, failures: list[ModelplaneError], cost: float = 0.0) -> None:
        self.clock = clock
        self.failures = list(failures)
        self.cost = cost
        self.remaining_seen: list[float | None] = []

    async def __call__(self, remaining: float | None) -> str:
        self.remaining_seen.append(remaining)
        self.clock.now += self.cost
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_default_schedule_doubles_from_100_ms() -> None:
    assert list(backoff_ceilings(DEFAULT_RETRY_POLICY)) == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_schedule_is_capped() -> None:
    policy = RetryPolicy(max_attempts=6, initial_backoff=1.0, max_backoff=3.0, multiplier=2.0)

    assert list(backoff_ceilings(policy)) == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_no_retry_has_an_empty_schedule() -> None:
    assert list(backoff_ceilings(NO_RETRY)) == []


def test_jitter_stays_under_the_ceiling_and_varies() -> None:
    rng = random.Random(7)
    error = Unavailable("down")
    delays = [retry_delay(0.8, error, rng) for _ in range(200)]

    assert all(0.0 <= d <= 0.8 for d in delays)
    assert len(set(delays)) > 100


def test_retry_info_sets_the_least_wait() -> None:
    error = StorageUnavailable("database away", retry_after=2.0)

    assert retry_delay(0.1, error, random.Random(1)) == 2.0


@pytest.mark.parametrize(
    "policy",
    [
        {"max_attempts": 0},
        {"initial_backoff": -1.0},
        {"initial_backoff": 2.0, "max_backoff": 1.0},
        {"multiplier": 0.5},
    ],
)
def test_bad_policies_are_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"max_attempts|backoff|multiplier"):
        RetryPolicy(**policy)  # type: ignore[arg-type]


def test_only_unavailable_is_retryable() -> None:
    assert is_retryable(Unavailable("x"))
    assert is_retryable(ShuttingDown("x"))
    assert not is_retryable(EtagMismatch("x"))
    assert not is_retryable(ModelplaneError("x"))


async def test_retries_unavailable_until_success() -> None:
    clock = ManualClock()
    attempts = ScriptedAttempts(clock, [Unavailable("a"), ShuttingDown("b")])

    result = await call_with_retry(
        attempts, timeout=10.0, rng=random.Random(3), clock=clock, sleep=clock.sleep
    )

    assert result == "done"
    assert len(attempts.remaining_seen) == 3
    assert len(clock.sleeps) == 2
    assert 0.0 <= clock.sleeps[0] <= 0.1
    assert 0.0 <= clock.sleeps[1] <= 0.2


async def test_each_attempt_gets_what_is_left_of_the_deadline() -> None:
    clock = ManualClock()
    attempts = ScriptedAttempts(clock, [Unavailable("a"), Unavailable("b")], cost=1.0)

    await call_with_retry(attempts, timeout=10.0, rng=random.Random(3), clock=clock, sleep=clock.sleep)

    first, second, third = attempts.remaining_seen
    assert first == 10.0
    assert second == pytest.approx(10.0 - 1.0 - clock.sleeps[0])
    assert third == pytest.approx(10.0 - 2.0 - clock.sleeps[0] - clock.sleeps[1])


async def test_other_codes_are_raised_at_once() -> None:
    clock = ManualClock()
    attempts = ScriptedAttempts(clock, [EtagMismatch("stale")])

    with pytest.raises(EtagMismatch):
        await call_with_retry(attempts, timeout=10.0, clock=clock, sleep=clock.sleep)
    assert len(attempts.remaining_seen) == 1
    assert clock.sleeps == []


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = ManualClock()
    failures: list[ModelplaneError] = [Unavailable(f"try {n}") for n in range(1, 4)]
    attempts = ScriptedAttempts(clock, failures)

    with pytest.raises(Unavailable, match="try 3"):
        await call_with_retry(
            attempts, timeout=60.0, policy=RetryPolicy(max_attempts=3), clock=clock, sleep=clock.sleep
        )
    assert len(attempts.remaining_seen) == 3


async def test_no_retry_past_the_deadline() -> None:
    clock = ManualClock()
    # The server asks for 5 s, but only 3 s are left: retrying could not finish in time.
    attempts = ScriptedAttempts(clock, [StorageUnavailable("database away", retry_after=5.0)])

    with pytest.raises(StorageUnavailable):
        await call_with_retry(attempts, timeout=3.0, clock=clock, sleep=clock.sleep)
    assert len(attempts.remaining_seen) == 1
    assert clock.sleeps == []


async def test_deadline_spent_by_slow_attempts_stops_retries() -> None:
    clock = ManualClock()
    failures: list[ModelplaneError] = [Unavailable(f"try {n}") for n in range(1, 10)]
    attempts = ScriptedAttempts(clock, failures, cost=2.0)

    with pytest.raises(Unavailable):
        await call_with_retry(
            attempts,
            timeout=5.0,
            policy=RetryPolicy(max_attempts=10, initial_backoff=0.5, max_backoff=0.5),
            rng=random.Random(5),
            clock=clock,
            sleep=clock.sleep,
        )
    # Attempts at 0 s and about 2.5 s start; a third could not start before the 5 s deadline.
    assert len(attempts.remaining_seen) <= 3
    assert all(r is not None and r > 0 for r in attempts.remaining_seen)
    assert clock.now - 100.0 <= 5.0 + 2.0


async def test_no_deadline_passes_none() -> None:
    clock = ManualClock()
    attempts = ScriptedAttempts(clock, [Unavailable("a")])

    await call_with_retry(attempts, timeout=None, clock=clock, sleep=clock.sleep)

    assert attempts.remaining_seen == [None, None]


def test_retry_codes_are_status_codes() -> None:
    assert Unavailable.code == grpc.StatusCode.UNAVAILABLE
