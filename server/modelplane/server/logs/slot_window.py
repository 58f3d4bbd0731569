"""SQL of the rollout gates' reading: one deployment's canary and stable events in a time window, compared.

One bounded query per evaluation: the window's time range prunes log_events to the daily partitions it
covers and is read by their primary key (event_time, event_id), so the rows scanned are those of the
window alone; the deployment, slot and kind narrow them in the same pass. The callers bound the window
(24 hours at most). The slot's rows are read once (a MATERIALIZED common table expression), and for
latency each slot's quantile and the count above the canary's bar come from that one read.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelplane.server.logs.domain import SlotComparison, SlotFigures, SlotWindowQuery, WindowMeasure
from modelplane.server.store.pool import Connection

# Per measure: the kind of events read, the value of a row (NULL: not a sample), what is a hit, and what
# else narrows the rows ($5 is the query's currency code or policy).
_MEASURES: Mapping[WindowMeasure, tuple[str, str, str, str]] = {
    WindowMeasure.ERRORS: ("inference", "1", "is_error", ""),
    WindowMeasure.LATENCY: ("inference", "latency_us", "false", ""),
    WindowMeasure.COST: ("inference", "cost_micros", "false", " AND cost_currency = $5"),
    WindowMeasure.TOKENS: (
        "inference",
        "coalesce(input_tokens, 0) + coalesce(output_tokens, 0)",
        "false",
        "",
    ),
    WindowMeasure.BLOCKS: ("guardrail", "1", "decision = 'block'", " AND policy = $5"),
    WindowMeasure.REDACTS: ("guardrail", "1", "decision = 'redact'", " AND policy = $5"),
    WindowMeasure.ROUTING_FAILURES: ("routing", "1", "is_error", ""),
}

# jit: the estimated cost of a window over many rows starts JIT compilation, which costs more than it saves.
_SETTINGS = "SET LOCAL jit = off"


def window_sql(query: SlotWindowQuery) -> tuple[str, list[object]]:
    """The comparison query of `query` and its arguments."""
    kind, value, hit, narrow = _MEASURES[query.measure]
    args: list[object] = [query.start, query.end, query.deployment, kind]
    if narrow:
        args.append(query.currency_code if query.measure is WindowMeasure.COST else query.policy)
    rows = (
        f"SELECT traffic_slot AS slot, ({value})::bigint AS v, ({hit}) AS hit FROM log_events"
        " WHERE event_time >= $1 AND event_time < $2 AND deployment = $3"
        f" AND traffic_slot IN ('canary', 'stable') AND kind = $4{narrow}"
    )
    if query.measure is WindowMeasure.LATENCY:
        args += [query.quantile, query.bar_value, query.bar_ratio, query.bar_margin]
        q, bar_value, bar_ratio, bar_margin = (f"${len(args) - i}" for i in (3, 2, 1, 0))
        quantiles = (
            f"SELECT slot, percentile_disc({q}::float8) WITHIN GROUP (ORDER BY v) AS quantile FROM w"
            " WHERE v IS NOT NULL GROUP BY slot"
        )
        bar = (
            f"SELECT coalesce({bar_value}::float8, {bar_ratio}::float8"
            f" * (SELECT quantile FROM q WHERE slot = 'stable') + {bar_margin}::float8) AS canary_bar"
        )
    else:
        quantiles = "SELECT NULL::text AS slot, NULL::bigint AS quantile WHERE false"
        bar = "SELECT NULL::float8 AS canary_bar"
    sql = (
        f"WITH w AS MATERIALIZED ({rows}), q AS ({quantiles}), b AS ({bar})"
        " SELECT w.slot, count(w.v) AS n, count(*) FILTER (WHERE w.hit) AS hits,"
        " coalesce(sum(w.v::numeric), 0)::float8 AS total,"
        " coalesce(sum(w.v::numeric * w.v), 0)::float8 AS squares, max(q.quantile) AS quantile,"
        " count(*) FILTER (WHERE w.v > CASE WHEN w.slot = 'canary' THEN b.canary_bar ELSE q.quantile END)"
        " AS over_bar, max(b.canary_bar) AS bar"
        " FROM w LEFT JOIN q ON q.slot = w.slot CROSS JOIN b GROUP BY w.slot"
    )
    return sql, args


_EMPTY = SlotFigures(samples=0, hits=0, total=0.0, squares=0.0, quantile=None, over_bar=0)


async def compare_slots(conn: Connection, query: SlotWindowQuery) -> SlotComparison:
    """Both slots' figures over the window (a slot without events: zeros)."""
    sql, args = window_sql(query)
    async with conn.transaction(readonly=True):
        await conn.execute(_SETTINGS)
        rows = await conn.fetch(sql, *args)
    figures = {
        row["slot"]: SlotFigures(
            samples=int(row["n"]),
            hits=int(row["hits"]),
            total=float(row["total"]),
            squares=float(row["squares"]),
            quantile=None if row["quantile"] is None else float(row["quantile"]),
            over_bar=int(row["over_bar"]),
        )
        for row in rows
    }
    bars = [row["bar"] for row in rows if row["bar"] is not None]
    return SlotComparison(
        canary=figures.get("canary", _EMPTY),
        stable=figures.get("stable", _EMPTY),
        bar=float(bars[0]) if bars else None,
    )
