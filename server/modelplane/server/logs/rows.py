"""The ingestion hot path: a batch's events straight to their rows (EVENT_COLUMNS), by functions compiled
from the column table, one per payload kind; a batch with an event they refuse goes the slow path.

Tens of thousands of events a second leave no room for an object, or a call, per column: so each column
of columns.py writes its reads and checks as lines of Python, and this module joins them into one
function per kind. The rules are those of the slow path (convert.event, then validation.checked_event),
read from the same table; a refused event is then converted and checked the slow path, so what a client is
told about a bad batch does not depend on this path. That includes the NUL character, which the server
checks for in every other request before its handler runs (calls.py): here each text column looks
for it unless its pattern already excludes it. `show_source` prints what was compiled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from modelplane.server.errors import InvalidArgument
from modelplane.server.logs.columns import CLIENT_KINDS, COLUMNS, EVENT_ID, Names
from modelplane.server.logs.convert import batch
from modelplane.server.logs.domain import MAX_BATCH_EVENTS, LogBatch, Row, RowBatch
from modelplane.server.logs.validation import MAX_DROPPED_PER_BATCH
from modelplane.server.nul_characters import refuse_nul_characters
from modelplane.v1 import logs_pb2 as pb

# Remembered pattern matches are cleared at this many, so a client cycling through values cannot grow them.
_SEEN_MAX = 1024


class _SlowPath(Exception):
    """An event the fast path does not take: its batch goes the slow path, which names every problem."""


def _seen(seen: set[str], value: str, pattern: re.Pattern[str]) -> bool:
    """Whether `value` matches `pattern`; remembered in `seen` when it does."""
    if not pattern.fullmatch(value):
        return False
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen.add(value)
    return True


def _source(kind: str | None, names: Names) -> str:
    lines = ["unpriced = False", "links = m.links"]
    if kind is not None:
        lines.append(f"{kind} = m.{kind}")
    for column in COLUMNS:
        lines += column.fast(kind, names)
    row = ", ".join(column.var for column in COLUMNS)
    body = "\n".join(f"    {line}" for line in lines)
    return f"def row_{kind or 'message'}(m):\n{body}\n    return ({row}), unpriced\n"


def _compile() -> tuple[dict[str | None, Callable[[pb.LogEvent], tuple[Row, bool]]], str]:
    names = Names()
    sources = [_source(kind, names) for kind in CLIENT_KINDS]
    code = "\n\n".join(sources)
    namespace: dict[str, Any] = {
        **names.values,
        "_SlowPath": _SlowPath,
        "_seen": _seen,
        "_NUL": "\x00",
        "_json_dumps": json.dumps,
    }
    exec(compile(code, "<log rows>", "exec"), namespace)
    return {kind: namespace[f"row_{kind or 'message'}"] for kind in CLIENT_KINDS}, code


_ROW_OF_KIND, _SOURCE = _compile()


def show_source() -> str:
    """The compiled row functions' source, for reading and debugging."""
    return _SOURCE


def header_fits(message: pb.LogBatch, *, client_required: bool) -> bool:
    """Whether the batch's own fields follow the rules, so its events may take the hot path."""
    client_id = message.client_id
    return (
        len(message.events) <= MAX_BATCH_EVENTS
        and message.sequence >= 0
        and 0 <= message.dropped_since_last <= MAX_DROPPED_PER_BATCH
        and bool(EVENT_ID.fullmatch(client_id) if client_id or client_required else True)
    )


def add_rows(
    events: Sequence[pb.LogEvent], start: int, stop: int, rows: list[Row], unpriced: list[int]
) -> bool:
    """Appends the rows of events[start:stop]; False when one of them does not take the hot path (a
    control-plane change is the server's own: no client kind)."""
    try:
        for i in range(start, stop):
            m = events[i]
            build = _ROW_OF_KIND.get(m.WhichOneof("payload"))
            if build is None:
                return False
            row, needs_price = build(m)
            rows.append(row)
            if needs_price:
                unpriced.append(i)
    except (_SlowPath, OverflowError, ValueError):
        return False
    return True


def batch_rows(
    message: pb.LogBatch, prefix: str, *, client_required: bool, metadata: dict[str, str] | None = None
) -> LogBatch | RowBatch:
    """The batch as rows when every event follows the rules (all but the time window, which is the
    service's to check), else the domain batch, whose conversion and checks name every problem."""
    if header_fits(message, client_required=client_required):
        rows: list[Row] = []
        unpriced: list[int] = []
        if add_rows(message.events, 0, len(message.events), rows, unpriced):
            return row_batch(message, rows, unpriced)
    return long_way(message, prefix, metadata)


def row_batch(message: pb.LogBatch, rows: list[Row], unpriced: list[int]) -> RowBatch:
    return RowBatch(
        message.client_id, message.sequence, message.dropped_since_last, tuple(rows), tuple(unpriced)
    )


def long_way(message: pb.LogBatch, prefix: str, metadata: dict[str, str] | None) -> LogBatch:
    """A batch the hot path refused, converted by the rules that name every problem: first the NUL
    character, as the server reports it for any other request (the ingestion methods are exempt from
    the interceptor's check, see LogServicer.TEXT_CHECKED_METHODS), then everything else."""
    try:
        refuse_nul_characters(message, f"{prefix}.")
    except InvalidArgument as exc:
        exc.metadata.update(metadata or {})
        raise
    return batch(message, prefix)
