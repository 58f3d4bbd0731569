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


def datetime_from(value: timestamp_pb2.Timestamp, path: str, found: list[FieldViolation]) -> datetime | None:
    """The timestamp as an aware datetime; None (and a violation added) when it is out of range."""
    if not MIN_SECONDS <= value.seconds <= MAX_SECONDS or not 0 <= value.nanos <= 999_999_999:
        found.append(FieldViolation(path, "must be a timestamp between 0001-01-01 and 9999-12-31"))
        return None
    return value.ToDatetime(tzinfo=UTC)


# google.protobuf.Duration's valid range: +-315,576,000,000 seconds (10,000 years).
MAX_DURATION_SECONDS = 315_576_000_000


def duration_valid(value: duration_pb2.Duration) -> bool:
    """Whether the Duration is one its spec allows: bounded seconds, |nanos| < 1 s, both of one sign."""
    if abs(value.seconds) > MAX_DURATION_SECONDS or abs(value.nanos) > 999_999_999:
        return False
    return not (value.seconds > 0 > value.nanos or value.seconds < 0 < value.nanos)
