"""Postgres's integer form of a timestamptz, as the bulk pool exchanges it, converts to and from
datetimes and UTC days without loss over the whole range a datetime holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from modelplane.server.store.pg_time import PG_EPOCH_UNIX_SECONDS, from_pg_micros, pg_micros, pg_utc_day

MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999), timezones=st.just(UTC)
)


@given(MOMENTS)
def test_a_moment_survives_the_integer_form(moment: datetime) -> None:
    assert from_pg_micros(pg_micros(moment)) == moment


@given(MOMENTS)
def test_the_integer_form_knows_the_utc_day(moment: datetime) -> None:
    assert pg_utc_day(pg_micros(moment)) == moment.date()


def test_the_epochs() -> None:
    assert pg_micros(datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert pg_micros(datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    assert datetime(2000, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC) == timedelta(
        seconds=PG_EPOCH_UNIX_SECONDS
    )
