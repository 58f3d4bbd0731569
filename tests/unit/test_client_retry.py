"""The client's retry schedule: capped exponential backoff with jitter, RetryInfo honoured, one deadline.

A hand-driven clock stands in for time so the deadline arithmetic is checked exactly without sleeping.
"""

from __future__ import annotations

import random

import grpc
import pytest

from modelplane.client.errors import (
    DeadlineExceeded,
    EtagMismatch,
    ModelplaneError,
    NotFound,
    ShuttingDown,
    StorageUnavailable,
    Unavailable,
)
from modelplane.client.retry import (
    DEFAULT_RETRY_POLICY,
    NO_RETRY,
    Backoff,
    BackoffPolicy,
    RetryPolicy,
    backoff_ceilings,
    call_with_retry,
    is_retryable,
    is_unreachable,
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


class FixedDraws(random.Random):
    """A random source whose draws are given: uniform(a, b) returns a + (b - a) * the next fraction."""

    def __init__(self, *fractions: float) -> None:
        super().__init__(0)
        self.fractions = list(fractions)

    def random(self) -> float:
        return self.fractions.pop(0)


# BackoffPolicy and Backoff: the one schedule.


def test_the_ceiling_grows_by_the_multiplier_up_to_the_maximum() -> None:
    policy = BackoffPolicy(initial=0.5, multiplier=3.0, maximum=10.0)

    assert [policy.ceiling(n) for n in range(1, 6)] == pytest.approx([0.5, 1.5, 4.5, 10.0, 10.0])


def test_a_long_outage_stays_at_the_cap_without_overflowing() -> None:
    policy = BackoffPolicy(initial=0.1, multiplier=2.0, maximum=5.0)

    assert policy.ceiling(1_000_000) == 5.0
    assert BackoffPolicy(initial=0.0, maximum=1.0).ceiling(10_000) == 0.0
    assert BackoffPolicy(initial=0.3, multiplier=1.0, maximum=1.0).ceiling(10_000) == 0.3


@pytest.mark.parametrize(
    ("jitter", "fraction", "expected"),
    [
        (1.0, 0.0, 0.0),
        (1.0, 0.25, 1.0),
        (0.5, 0.0, 2.0),
        (0.5, 0.5, 3.0),
        (0.0, 0.9, 4.0),
    ],
)
def test_jitter_is_the_random_share_of_the_ceiling(jitter: float, fraction: float, expected: float) -> None:
    policy = BackoffPolicy(initial=4.0, maximum=4.0, jitter=jitter)

    assert policy.delay(1, FixedDraws(fraction)) == pytest.approx(expected)


def test_a_server_delay_is_the_least_wait() -> None:
    policy = BackoffPolicy(initial=1.0, maximum=1.0)

    assert policy.delay(1, FixedDraws(0.5), at_least=3.0) == 3.0
    assert policy.delay(1, FixedDraws(0.5), at_least=0.1) == 0.5


def test_a_seeded_source_gives_the_same_schedule() -> None:
    policy = BackoffPolicy(initial=0.1, maximum=2.0, jitter=0.5)
    first = Backoff(policy, rng=random.Random(11))
    second = Backoff(policy, rng=random.Random(11))

    delays = [first.next_delay() for _ in range(8)]

    assert delays == [second.next_delay() for _ in range(8)]
    assert all(policy.ceiling(n) / 2 <= d <= policy.ceiling(n) for n, d in enumerate(delays, start=1))


def test_backoff_counts_failures_and_starts_over_after_progress() -> None:
    backoff = Backoff(BackoffPolicy(initial=1.0, maximum=100.0, jitter=0.0))

    assert [backoff.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert backoff.failures == 3
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_a_bounded_backoff_is_exhausted_after_its_retries_until_reset() -> None:
    backoff = Backoff(BackoffPolicy(), max_retries=2, rng=random.Random(1))

    backoff.next_delay()
    assert not backoff.exhausted
    backoff.next_delay()
    assert backoff.exhausted
    backoff.reset()
    assert not backoff.exhausted
    assert Backoff(BackoffPolicy(), max_retries=0).exhausted
    assert not Backoff(BackoffPolicy()).exhausted


def test_a_retry_policy_schedules_with_full_jitter_and_its_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.2, max_backoff=1.0, multiplier=4.0)
    backoff = policy.schedule(FixedDraws(1.0, 1.0))

    assert policy.backoff == BackoffPolicy(initial=0.2, multiplier=4.0, maximum=1.0, jitter=1.0)
    assert [backoff.next_delay(), backoff.next_delay()] == pytest.approx([0.2, 0.8])
    assert backoff.exhausted


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"initial": -0.1}, "initial"),
        ({"initial": 2.0, "maximum": 1.0}, "maximum"),
        ({"multiplier": 0.9}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_bad_backoff_policies_are_refused(settings: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BackoffPolicy(**settings)


def test_retries_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        BackoffPolicy().ceiling(0)
    with pytest.raises(ValueError, match="max_retries"):
        Backoff(BackoffPolicy(), max_retries=-1)


# RetryPolicy and call_with_retry.


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


def _raw_rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "raw", None)


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("down"),
        StorageUnavailable("database away"),
        DeadlineExceeded("slow"),
        TimeoutError(),
        ConnectionRefusedError(),
        _raw_rpc_error(grpc.StatusCode.UNAVAILABLE),
        _raw_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_what_did_not_reach_the_service_is_unreachable(error: BaseException) -> None:
    assert is_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no such alias"),
        EtagMismatch("stale"),
        ValueError("bad"),
        _raw_rpc_error(grpc.StatusCode.PERMISSION_DENIED),
        _raw_rpc_error(grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_a_refusal_is_not_unreachable(error: BaseException) -> None:
    assert not is_unreachable(error)


def test_retry_codes_are_status_codes() -> None:
    assert Unavailable.code == grpc.StatusCode.UNAVAILABLE
