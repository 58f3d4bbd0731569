"""Postgres's own form of a timestamptz, microseconds since 2000-01-01 00:00 UTC, as the bulk pool's
connections exchange it (pool.exchange_timestamps_as_micros): to and from datetimes and UTC days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Seconds from the Unix epoch to Postgres's, for converting a protobuf Timestamp without a datetime.
PG_EPOCH_UNIX_SECONDS = 946_684_800
_MICROSECOND = timedelta(microseconds=1)
_MICROS_A_DAY = 86_400_000_000


def pg_micros(moment: datetime) -> int:
    """An aware datetime in Postgres's form."""
    return (moment - PG_EPOCH) // _MICROSECOND


def from_pg_micros(micros: int) -> datetime:
    """The aware UTC datetime of a value in Postgres's form."""
    return PG_EPOCH + timedelta(microseconds=micros)


def pg_utc_day(micros: int) -> date:
    """The UTC day of a value in Postgres's form."""
    return PG_EPOCH.date() + timedelta(days=micros // _MICROS_A_DAY)
