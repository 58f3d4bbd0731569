"""Timestamps and durations to and from requests; one out of range is refused by path, never raised."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.server.errors import FieldViolation

# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A datetime as a google.protobuf.Timestamp."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def timestamp_valid(value: timestamp_pb2.Timestamp) -> bool:
    """Whether the Timestamp is one its spec allows: 0001-01-01 to 9999-12-31, nanos in [0, 10^9)."""
    return MIN_SECONDS <= value.seconds <= MAX_SECONDS and 0 <= value.nanos <= 999_999_999


def check_timestamp(value: timestamp_pb2.Timestamp, field_path: str) -> FieldViolation | None:
    """The violation of a request's Timestamp field at `field_path`, or None when it is valid.

    The one check every Timestamp of a request goes through before anything reads it.
    """
    if timestamp_valid(value):
        return None
    return FieldViolation(
        field_path,
        "must be a valid google.protobuf.Timestamp: from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z,"
        " with nanos from 0 to 999999999",
    )


def datetime_from(value: timestamp_pb2.Timestamp, path: str, found: list[FieldViolation]) -> datetime | None:
    """The timestamp as an aware datetime; None (and a violation added) when it is out of range."""
    violation = check_timestamp(value, path)
    if violation is not None:
        found.append(violation)
        return None
    return value.ToDatetime(tzinfo=UTC)


# google.protobuf.Duration's valid range: +-315,576,000,000 seconds (10,000 years).
MAX_DURATION_SECONDS = 315_576_000_000


def duration_valid(value: duration_pb2.Duration) -> bool:
    """Whether the Duration is one its spec allows: bounded seconds, |nanos| < 1 s, both of one sign."""
    if abs(value.seconds) > MAX_DURATION_SECONDS or abs(value.nanos) > 999_999_999:
        return False
    return not (value.seconds > 0 > value.nanos or value.seconds < 0 < value.nanos)


def check_duration(value: duration_pb2.Duration, field_path: str) -> FieldViolation | None:
    """The violation of a request's Duration field at `field_path`, or None when it is valid.

    The one check every Duration of a request goes through before anything reads it: `{seconds: 1,
    nanos: 2000000000}` is refused, never read as 3 s. Bounds of a field's own (positive, at most a
    minute) are the caller's to add after this.
    """
    if duration_valid(value):
        return None
    return FieldViolation(
        field_path,
        "must be a valid google.protobuf.Duration: seconds within +-315576000000, nanos from -999999999"
        " to 999999999 and of the same sign as seconds",
    )
