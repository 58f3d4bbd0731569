"""SQL of AggregateLogEvents: count, errors, exact latency percentiles, token and cost sums and guardrail
checks per group of stored log events.

Every call reads the matching events themselves (a time range reads only its daily partitions), so any
filter gets exact figures and ingestion pays nothing for aggregates. The query is shaped so that its cost
is one pass over the rows:

- the groups are built in a hash table, not by sorting every (wide) row by its group keys: an ordered-set
  aggregate such as `percentile_disc(...) WITHIN GROUP (ORDER BY latency_us)` rules hashing out, so the
  hash table only collects each group's latencies (`array_agg`, 8 bytes each), and each group's
  percentiles are then taken by percentile_disc over its own array, which sorts that group's latencies
  alone;
- the groups are made in a MATERIALIZED common table expression, which Postgres plans on its own, without
  the order the caller gets: there the hashed plan needs no sort at all. Only the finished groups are
  then sorted into the order of their keys, under the key columns' own collation, as they always were;
- sums are taken as numeric (what sum(bigint) returns) and checked against the int64 range, so a sum too
  large for the contract is refused as OUT_OF_RANGE instead of failing a cast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from modelplane.server.errors import OutOfRange, shown
from modelplane.server.field_rules import INT64_MAX, INT64_MIN
from modelplane.server.logs.domain import EventKind, GroupBy, LogGroup, Money, TrafficSlot
from modelplane.server.store.pool import Connection
from modelplane.v1.error_reason_pb2 import ErrorReason

# The most groups one call returns (one response carries them all); more is TOO_MANY_GROUPS.
MAX_GROUPS = 20_000

_GROUP_SQL: Mapping[GroupBy, str] = {
    GroupBy.SERVICE: "service",
    GroupBy.MODEL_VERSION: "model_version",
    GroupBy.DEPLOYMENT: "deployment",
    GroupBy.TRAFFIC_SLOT: "traffic_slot",
    GroupBy.POLICY: "policy",
    GroupBy.KIND: "kind",
}

# The summed metrics: the LogGroup field a sum fills (also its name in the error), and its SQL; $currency
# stands for the parameter of the requested currency.
_SUMS: tuple[tuple[str, str], ...] = (
    ("input_tokens", "sum(input_tokens)"),
    ("output_tokens", "sum(output_tokens)"),
    ("cached_input_tokens", "sum(cached_input_tokens)"),
    ("reasoning_tokens", "sum(reasoning_tokens)"),
    ("cost", "sum(cost_micros) FILTER (WHERE cost_currency = $currency)"),
)

# Settings of the aggregate's own transaction, measured over 1,300,000 events:
# - enable_sort: Postgres cannot estimate how many groups date_bin(...) makes (it guesses one per row) and
#   then often prefers sorting every row, an external sort of a few hundred MB that takes about twice the
#   whole hashed query. Hashing was faster from 8 to 11,000 groups and within a tenth at 68,000, more
#   than one response can carry. Off, a sort counts as very costly, so the groups' own plan (which sorts
#   nothing when hashed) is always the hashed one; the final sort of the finished groups still runs, as no
#   plan can avoid it.
# - work_mem: the hash table holds every matching latency (about 19 MB for 192 groups); with the default
#   4 MB it spills to disk and the call takes a third longer. The pool's connection count bounds the total.
# - jit: the query's estimated cost starts JIT compilation, which takes about 150 ms and saves less.
_SETTINGS = "SET LOCAL enable_sort = off; SET LOCAL work_mem = '32MB'; SET LOCAL jit = off"


def aggregate_sql(
    where: str,
    params: Sequence[object],
    group_by: Sequence[GroupBy],
    bucket_seconds: int,
    currency_code: str,
    limit: int,
) -> tuple[str, list[object]]:
    """The aggregate query and its arguments; `where` and `params` are a compiled filter; at most `limit`
    groups are returned."""
    args: list[object] = list(params)
    args.append(currency_code)
    currency = f"${len(args)}"
    keys: list[str] = []
    for group in group_by:
        if group is GroupBy.TIME_BUCKET:
            args.append(timedelta(seconds=bucket_seconds))
            expression = f"date_bin(${len(args)}::interval, event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
        else:
            expression = _GROUP_SQL[group]
        keys.append(f"{expression} AS {group.value}")
    names = ", ".join(g.value for g in group_by)
    sums = "".join(f" coalesce({sql.replace('$currency', currency)}, 0) AS {name}," for name, sql in _SUMS)
    # A sum outside the int64 range comes back as NULL, which `aggregate` refuses.
    checked = "".join(
        f" CASE WHEN {name} BETWEEN {INT64_MIN} AND {INT64_MAX} THEN {name}::bigint END AS {name},"
        for name, _ in _SUMS
    )
    sql = (
        "WITH groups AS MATERIALIZED ("
        f"SELECT {''.join(k + ', ' for k in keys)}"
        "count(*) AS n, count(*) FILTER (WHERE is_error) AS errors, count(latency_us) AS latencies,"
        " (SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY v)"
        " FROM unnest(array_agg(latency_us) FILTER (WHERE latency_us IS NOT NULL)) AS v) AS pct,"
        f"{sums}"
        " count(*) FILTER (WHERE kind = 'guardrail') AS checks,"
        " count(*) FILTER (WHERE kind = 'guardrail' AND decision = 'block') AS blocks"
        f" FROM log_events WHERE {where}"
        # Without keys: one group over everything, and none at all when nothing matches.
        + (f" GROUP BY {names}" if group_by else " HAVING count(*) > 0")
        + f") SELECT {''.join(f'{group.value}, ' for group in group_by)}n, errors, latencies, pct,{checked}"
        " checks, blocks FROM groups" + (f" ORDER BY {names}" if group_by else "") + f" LIMIT {int(limit)}"
    )
    return sql, args


def _described(group_by: Sequence[GroupBy], values: Mapping[str, object]) -> str:
    if not group_by:
        return "over every matching event"
    parts = []
    for group in group_by:
        value = values[group.value]
        parts.append(
            f"{group.value} {value.isoformat() if isinstance(value, datetime) else shown(str(value))}"
        )
    return "of " + ", ".join(parts)


async def aggregate(
    conn: Connection,
    *,
    where: str,
    params: Sequence[object],
    group_by: Sequence[GroupBy],
    bucket_seconds: int,
    currency_code: str,
    limit: int,
) -> list[LogGroup]:
    """Metrics of the events matching `where`, one LogGroup per group in the order of the group keys.

    Percentiles are exact: percentile_disc, the smallest stored latency whose cumulative share of the
    group's latencies reaches p. OutOfRange when a sum does not fit in an int64.
    """
    sql, args = aggregate_sql(where, params, group_by, bucket_seconds, currency_code, limit)
    async with conn.transaction(readonly=True):
        await conn.execute(_SETTINGS)
        rows = await conn.fetch(sql, *args)
    groups: list[LogGroup] = []
    for row in rows:
        values = dict(row)
        for name, _ in _SUMS:
            if values[name] is None:
                field = "cost.micros" if name == "cost" else name
                raise OutOfRange(
                    f"the sum of {field} {_described(group_by, values)} is beyond the int64 range;"
                    " narrow the filter's time range or group more finely (by time bucket, say)",
                    reason=ErrorReason.ERROR_REASON_SUM_OUT_OF_RANGE,
                    metadata={"field": field},
                )
        pct = values["pct"] or [None, None, None]
        kind = values.get("kind")
        groups.append(
            LogGroup(
                service=values.get("service") or "",
                model_version=values.get("model_version") or "",
                deployment=values.get("deployment") or "",
                traffic_slot=TrafficSlot(values.get("traffic_slot") or ""),
                policy=values.get("policy") or "",
                kind=EventKind(kind) if kind else None,
                bucket_start=values.get("time_bucket"),
                count=int(values["n"]),
                error_count=int(values["errors"]),
                latency_count=int(values["latencies"]),
                latency_p50_us=pct[0],
                latency_p95_us=pct[1],
                latency_p99_us=pct[2],
                input_tokens=int(values["input_tokens"]),
                output_tokens=int(values["output_tokens"]),
                cached_input_tokens=int(values["cached_input_tokens"]),
                reasoning_tokens=int(values["reasoning_tokens"]),
                cost=Money(currency_code, int(values["cost"])),
                guardrail_checks=int(values["checks"]),
                guardrail_blocks=int(values["blocks"]),
            )
        )
    return groups
