"""check_duration and check_timestamp accept exactly what the protobuf spec allows, and name the field."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.server.proto_time import (
    MAX_DURATION_SECONDS,
    MAX_SECONDS,
    MIN_SECONDS,
    check_duration,
    check_timestamp,
)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (1, 999_999_999),
        (-1, -999_999_999),
        (0, -5),
        (0, 5),
        (MAX_DURATION_SECONDS, 999_999_999),
        (-MAX_DURATION_SECONDS, -999_999_999),
    ],
)
def test_valid_durations_pass(seconds: int, nanos: int) -> None:
    assert check_duration(duration_pb2.Duration(seconds=seconds, nanos=nanos), "x") is None


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (1, 2_000_000_000),
        (1, 1_000_000_000),
        (0, -1_000_000_000),
        (1, -1),
        (-1, 1),
        (MAX_DURATION_SECONDS + 1, 0),
        (-MAX_DURATION_SECONDS - 1, 0),
    ],
)
def test_invalid_durations_are_named_by_path(seconds: int, nanos: int) -> None:
    violation = check_duration(duration_pb2.Duration(seconds=seconds, nanos=nanos), "policy.time_budget")
    assert violation is not None
    assert violation.field == "policy.time_budget"
    assert "Duration" in violation.description


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(0, 0), (MIN_SECONDS, 0), (MAX_SECONDS, 999_999_999), (1_700_000_000, 1)]
)
def test_valid_timestamps_pass(seconds: int, nanos: int) -> None:
    assert check_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), "t") is None


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, -1), (0, 1_000_000_000), (MIN_SECONDS - 1, 0), (MAX_SECONDS + 1, 0), (1, 2_000_000_000)],
)
def test_invalid_timestamps_are_named_by_path(seconds: int, nanos: int) -> None:
    violation = check_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), "start_time")
    assert violation is not None
    assert violation.field == "start_time"
