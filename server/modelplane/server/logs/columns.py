"""The stored columns of a log event, in COPY order, each with where its value comes from and the rule it
must follow: the one table from which the ingestion row's column list (EVENT_COLUMNS), the hot path's row
builder (rows.py), the domain event's row (`domain_row`) and the per-field rules of validation.py derive.

A column gives two views of itself: `fast`, lines of Python that read its value straight from a LogEvent
message and raise _SlowPath where a rule is broken (rows.py compiles them into one function per payload
kind, so the hot path makes no object per event and calls nothing per column); and `value`/`check`,
which read a checked domain event and name each broken rule by its field path. Adding a LogEvent field is
adding a row here (and its proto conversion in convert.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplane.server.errors import FieldViolation
from modelplane.server.field_rules import CURRENCY_CODE
from modelplane.server.logs import enums
from modelplane.server.logs.domain import (
    CONTROL_PLANE_EVENT_ID_PREFIX,
    CONTROL_PLANE_SERVICE,
    Guardrail,
    Inference,
    Links,
    LogEvent,
    Routing,
)
from modelplane.server.proto_time import MAX_DURATION_SECONDS, MAX_SECONDS, MIN_SECONDS
from modelplane.server.store.pg_time import PG_EPOCH_UNIX_SECONDS, pg_micros

MAX_ID_LENGTH = 128
MAX_MESSAGE_LENGTH = 4096
MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_VALUE_LENGTH = 256
MAX_NAME_LENGTH = 256
MAX_PROVIDER_LENGTH = 63

EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SERVICE_NAME = re.compile(r"[a-z0-9._-]{1,63}")
ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_.]{0,62}")

# The payload kinds a client may send (the WhichOneof name; None for a plain message).
CLIENT_KINDS: tuple[str | None, ...] = (None, "inference", "routing", "guardrail")
_PAYLOAD_TYPES: Mapping[str, type] = {"inference": Inference, "routing": Routing, "guardrail": Guardrail}
# Domain payload fields named apart from their proto field.
_DOMAIN_NAMES = {"latency": "latency_us"}

Violations = list[FieldViolation]


class Names:
    """The module-level names the compiled row functions use: each column's constants, under unique names."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, stem: str, value: Any) -> str:
        name = f"_{re.sub(r'[^A-Za-z0-9]', '_', stem)}_{len(self.values)}"
        self.values[name] = value
        return name


def _read(event: LogEvent, path: str) -> Any:
    """The domain value at a proto path ("links.trace_id", "inference.provider"); None when the event's
    payload is another kind."""
    head, _, rest = path.partition(".")
    if not rest:
        return getattr(event, head)
    if head == "links":
        return getattr(event.links, rest)
    payload_type = _PAYLOAD_TYPES[head]
    if not isinstance(event.payload, payload_type):
        return None
    return getattr(event.payload, _DOMAIN_NAMES.get(rest, rest))


def _kind(event: LogEvent) -> str | None:
    """The event's payload kind as the proto's oneof names it; None for a plain message."""
    return event.kind.value if event.payload is not None else None


def ref(source: str) -> str:
    """How the compiled row functions read a proto path: links and the payload are bound once to locals
    named as their fields (rows.py), the event's own fields are read from `m`."""
    return source if "." in source else f"m.{source}"


def _kind_of(path: str) -> str | None:
    head = path.partition(".")[0]
    return head if head in _PAYLOAD_TYPES else None


@dataclass(frozen=True)
class Column:
    """One stored column read from one field; `source` is its proto path, or one per payload kind."""

    name: str
    source: str | Mapping[str, str] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def source_of(self, kind: str | None) -> str | None:
        """The field this column is read from in an event of `kind`; None when it stays NULL."""
        if self.source is None or isinstance(self.source, str):
            source = self.source
            return source if source is not None and _kind_of(source) in (None, kind) else None
        return self.source.get(kind or "")

    @property
    def var(self) -> str:
        return f"c_{self.name}"

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        """Lines that set `self.var` from the message `m`, raising _SlowPath where a rule is broken."""
        source = self.source_of(kind)
        yield f"{self.var} = {ref(source)}" if source else f"{self.var} = None"

    def value(self, event: LogEvent) -> Any:
        """The stored value of a checked domain event."""
        source = self.source_of(_kind(event))
        return None if source is None else _read(event, source)

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        """Appends what breaks this column's rule to `found`."""


@dataclass(frozen=True)
class Reserved:
    """Values of a text only the server writes: `value` itself, or with `prefix`, anything starting so."""

    value: str
    described: str
    prefix: bool = False

    def holds(self, text: str) -> bool:
        return text.startswith(self.value) if self.prefix else text == self.value

    def fast(self, var: str, names: Names) -> str:
        value = names.add("reserved", self.value)
        return f"{var}.startswith({value})" if self.prefix else f"{var} == {value}"


@dataclass(frozen=True)
class Text(Column):
    """Text of at most `limit` characters, without the NUL character; with `pattern`, matching it (and
    `reserved`: values only the server writes)."""

    limit: int = MAX_NAME_LENGTH
    pattern: re.Pattern[str] | None = None
    described: str = ""
    # Pattern matches remembered: a stream repeats the same few values, and a set lookup costs a fifth of
    # a match. Cleared when full, so a client cycling through values cannot grow it.
    remembered: bool = False
    reserved: Reserved | None = None

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        source = self.source_of(kind)
        if source is None:
            yield f"{self.var} = None"
            return
        v = self.var
        yield f"{v} = {ref(source)}"
        if self.pattern is not None:
            # The patterns take no NUL character and nothing longer than the limit.
            pattern = names.add(f"{self.name}_pattern", self.pattern)
            if self.remembered:
                seen = names.add(f"{self.name}_seen", set())
                yield f"if {v} not in {seen} and not _seen({seen}, {v}, {pattern}): raise _SlowPath"
            else:
                yield f"if not {pattern}.fullmatch({v}): raise _SlowPath"
        else:
            yield f"if len({v}) > {self.limit} or _NUL in {v}: raise _SlowPath"
        if self.reserved is not None:
            yield f"if {self.reserved.fast(v, names)}: raise _SlowPath"

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        source = self.source_of(_kind(event))
        if source is None:
            return
        text = _read(event, source)
        path = f"{prefix}.{source}"
        if self.pattern is not None and not self.pattern.fullmatch(text):
            found.append(FieldViolation(path, self.described))
        elif self.pattern is None and len(text) > self.limit:
            found.append(FieldViolation(path, f"must be at most {self.limit} characters, got {len(text)}"))
        elif self.reserved is not None and self.reserved.holds(text):
            found.append(FieldViolation(path, self.reserved.described))


@dataclass(frozen=True)
class Count(Column):
    """An integer at or above zero; with `at_most`, at most the named column's value."""

    at_most: str | None = None

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        yield from super().fast(kind, names)
        if self.source_of(kind) is not None:
            bound = f" or {self.var} > c_{self.at_most}" if self.at_most else ""
            yield f"if {self.var} < 0{bound}: raise _SlowPath"

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        source = self.source_of(_kind(event))
        if source is None:
            return
        number = _read(event, source)
        if number < 0:
            found.append(FieldViolation(f"{prefix}.{source}", "must not be negative"))
        # Beside a negative bound, which is named itself, no number is "more than" it.
        elif self.at_most and number > max(0, _read(event, source.rpartition(".")[0] + "." + self.at_most)):
            found.append(FieldViolation(f"{prefix}.{source}", f"must be at most {self.at_most}"))


@dataclass(frozen=True)
class Enumerated(Column):
    """An enum stored in its SQL form: `stored` maps each proto number a client may send to it (an unknown
    or UNSPECIFIED number is refused), `domain` the domain value to it."""

    stored: Mapping[str, Mapping[Any, str]] = field(default_factory=dict)
    domain: Callable[[Any], str] = lambda value: str(value.value)

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        source = self.source_of(kind)
        if source is None:
            yield f"{self.var} = None"
            return
        table = names.add(f"{self.name}_stored", self.stored[source])
        yield f"{self.var} = {table}.get({ref(source)})"
        yield f"if {self.var} is None: raise _SlowPath"

    def value(self, event: LogEvent) -> Any:
        found = super().value(event)
        return None if found is None and self.source_of(_kind(event)) is None else self.domain(found)


@dataclass(frozen=True)
class Linked(Column):
    """A link of the event that a payload field may set too: the payload's value when the link is unset,
    refused when both are set and differ. `link` is the column read from the links."""

    link: Column = field(default_factory=lambda: Column(""))
    payload: Mapping[str, Column] = field(default_factory=dict)
    unset: object = ""

    @property
    def var(self) -> str:
        return self.link.var

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        yield from self.link.fast(kind, names)
        other = self.payload.get(kind or "")
        if other is None:
            return
        yield from other.fast(kind, names)
        mine, theirs, unset = self.var, other.var, repr(self.unset)
        yield f"if {theirs} != {unset} and {mine} != {unset} and {theirs} != {mine}: raise _SlowPath"
        yield f"if {mine} == {unset}: {mine} = {theirs}"

    def value(self, event: LogEvent) -> Any:
        # A checked event's links hold the payload's value already (validation.checked_event).
        return self.link.value(event)

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        self.link.check(event, prefix, found)
        other = self.payload.get(_kind(event) or "")
        if other is None:
            return
        other.check(event, prefix, found)
        mine, theirs = self.link.value(event), other.value(event)
        if theirs != self.unset and mine != self.unset and theirs != mine:
            path = f"{prefix}.{other.source_of(_kind(event))}"
            found.append(FieldViolation(path, f"is {theirs!r} but the event's links say {mine!r}"))


@dataclass(frozen=True)
class EventTime(Column):
    """The event time, required, between 0001 and 9999 (the window of time is the service's to check)."""

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        v = self.var
        yield "ts = m.event_time"
        yield "seconds, nanos = ts.seconds, ts.nanos"
        # An unset time reads as the epoch, so only the epoch needs the (slower) question of presence.
        yield (
            f'if not (seconds or nanos or m.HasField("event_time")) or not ({MIN_SECONDS} <= seconds <='
            f" {MAX_SECONDS} and 0 <= nanos <= 999_999_999): raise _SlowPath"
        )
        yield f"{v} = (seconds - {PG_EPOCH_UNIX_SECONDS}) * 1_000_000 + nanos // 1000"

    def value(self, event: LogEvent) -> Any:
        return pg_micros(event.event_time)


@dataclass(frozen=True)
class Kind(Column):
    """The payload kind's stored name."""

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        yield f"{self.var} = {kind or 'message'!r}"

    def value(self, event: LogEvent) -> Any:
        return event.kind.value


@dataclass(frozen=True)
class Attributes(Column):
    """At most MAX_ATTRIBUTES keys of ATTRIBUTE_KEY, values of at most MAX_ATTRIBUTE_VALUE_LENGTH
    characters, stored as compact JSON."""

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        v, key = self.var, names.add("attribute_key", ATTRIBUTE_KEY)
        yield f'{v} = "{{}}"'
        yield "if m.attributes:"
        yield "    items = dict(m.attributes)"
        yield f"    if len(items) > {MAX_ATTRIBUTES}: raise _SlowPath"
        yield "    for key, value in items.items():"
        yield (
            f"        if not {key}.fullmatch(key) or len(value) > {MAX_ATTRIBUTE_VALUE_LENGTH}"
            " or _NUL in value: raise _SlowPath"
        )
        yield f'    {v} = _json_dumps(items, separators=(",", ":"))'

    def value(self, event: LogEvent) -> Any:
        attributes = event.attributes
        return json.dumps(dict(attributes), separators=(",", ":")) if attributes else "{}"

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        path, attributes = f"{prefix}.attributes", event.attributes
        if len(attributes) > MAX_ATTRIBUTES:
            found.append(
                FieldViolation(
                    path,
                    f"at most {MAX_ATTRIBUTES} keys, got {len(attributes)}; put identifiers with many values"
                    " in message or links",
                )
            )
        for key, value in attributes.items():
            if not ATTRIBUTE_KEY.fullmatch(key):
                found.append(
                    FieldViolation(
                        f"{path}[{key[:64]!r}]",
                        "key must be 1 to 63 lower-case letters, digits, '_' or '.', starting with a letter",
                    )
                )
            elif len(value) > MAX_ATTRIBUTE_VALUE_LENGTH:
                found.append(
                    FieldViolation(
                        f"{path}[{key!r}]", f"value must be at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters"
                    )
                )


@dataclass(frozen=True)
class Latency(Column):
    """A Duration stored in microseconds, not negative; NULL when unset."""

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        source = self.source_of(kind)
        v = self.var
        if source is None:
            yield f"{v} = None"
            return
        yield f"d = {ref(source)}"
        yield "d_seconds, d_nanos = d.seconds, d.nanos"
        yield f"{v} = None"
        yield "if d_seconds or d_nanos:"
        # A valid Duration that is not negative: both parts at or above zero, each within its bound.
        yield (
            f"    if not (0 <= d_seconds <= {MAX_DURATION_SECONDS} and 0 <= d_nanos <= 999_999_999):"
            " raise _SlowPath"
        )
        yield f"    {v} = d_seconds * 1_000_000 + d_nanos // 1000"
        yield f'elif {source.rpartition(".")[0]}.HasField("latency"): {v} = 0'

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        source = self.source_of(_kind(event))
        micros = None if source is None else _read(event, source)
        if micros is not None and micros < 0:
            found.append(FieldViolation(f"{prefix}.{source}", "must not be negative"))


@dataclass(frozen=True)
class Cost(Column):
    """An inference's cost: micro-units (not negative) and an ISO 4217 currency, or none at all (the
    service then prices the tokens from the registry); `unpriced` says which."""

    @property
    def names(self) -> tuple[str, ...]:
        return ("cost_micros", "cost_currency", "cost_from_registry")

    @property
    def var(self) -> str:
        return "c_cost_micros, c_cost_currency, c_cost_from_registry"

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        if kind != "inference":
            yield f"{self.var} = None, None, None"
            return
        seen, pattern = names.add("currency_seen", set()), names.add("currency", CURRENCY_CODE)
        yield "money = inference.cost"
        yield "c_cost_currency, c_cost_micros = money.currency_code, money.micros"
        yield "c_cost_from_registry = False"
        yield "if c_cost_currency:"
        yield (
            f"    if c_cost_micros < 0 or (c_cost_currency not in {seen}"
            f" and not _seen({seen}, c_cost_currency, {pattern})): raise _SlowPath"
        )
        yield 'elif inference.HasField("cost"): raise _SlowPath  # a cost needs its currency'
        yield "else:"
        yield "    c_cost_micros = c_cost_currency = None"
        yield "    unpriced = True"

    def value(self, event: LogEvent) -> Any:
        p = event.payload
        if not isinstance(p, Inference):
            return None, None, None
        if p.cost is None:
            return None, None, p.cost_from_registry
        return p.cost.micros, p.cost.currency_code, p.cost_from_registry

    def check(self, event: LogEvent, prefix: str, found: Violations) -> None:
        p = event.payload
        if isinstance(p, Inference) and p.cost is not None:
            if not CURRENCY_CODE.fullmatch(p.cost.currency_code):
                found.append(
                    FieldViolation(
                        f"{prefix}.inference.cost.currency_code", "must be an ISO 4217 code like USD"
                    )
                )
            if p.cost.micros < 0:
                found.append(FieldViolation(f"{prefix}.inference.cost.micros", "must not be negative"))


@dataclass(frozen=True)
class IsError(Column):
    """Error level, or a payload that says the call failed (a fallback route still answered)."""

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        levels = names.add("error_levels", frozenset(enums.ERROR_LEVEL_NUMBERS))
        failed = {"inference": ' or c_status != "ok"', "routing": " or c_status not in ('ok', 'fallback')"}
        yield f"{self.var} = m.level in {levels}{failed.get(kind or '', '')}"

    def value(self, event: LogEvent) -> Any:
        return event.is_error


@dataclass(frozen=True)
class ServerOnly(Column):
    """A column only the server's own control-plane events fill (in SQL); NULL in every client's row."""

    def fast(self, kind: str | None, names: Names) -> Iterator[str]:
        yield f"{self.var} = None"

    def value(self, event: LogEvent) -> Any:
        return None


def _lower_name(value: Any) -> str:
    return "" if value is None else str(value.name.lower())


_SLOT = Enumerated("traffic_slot", "links.traffic_slot", stored={"links.traffic_slot": enums.SLOT_STORED})

COLUMNS: tuple[Column, ...] = (
    EventTime("event_time"),
    Text(
        "event_id",
        "event_id",
        pattern=EVENT_ID,
        described="must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
        reserved=Reserved(
            CONTROL_PLANE_EVENT_ID_PREFIX,
            f"must not start with {CONTROL_PLANE_EVENT_ID_PREFIX!r}, the server's own events' prefix",
            prefix=True,
        ),
    ),
    Text(
        "service",
        "service",
        pattern=SERVICE_NAME,
        described="must be 1 to 63 lower-case letters, digits, '-', '_' or '.'",
        remembered=True,
        reserved=Reserved(
            CONTROL_PLANE_SERVICE, f"{CONTROL_PLANE_SERVICE!r} is the server's own; name your service"
        ),
    ),
    Text("instance", "instance", limit=MAX_ID_LENGTH),
    Enumerated("level", "level", stored={"level": enums.LEVEL_STORED}),
    Kind("kind"),
    Text("message", "message", limit=MAX_MESSAGE_LENGTH),
    Linked(
        "model_version",
        link=Text("model_version", "links.model_version"),
        payload={"inference": Text("inference_model_version", "inference.model_version")},
    ),
    Linked(
        "deployment",
        link=Text("deployment", "links.deployment"),
        payload={"routing": Text("routing_deployment", "routing.deployment")},
    ),
    Linked(
        "traffic_slot",
        link=_SLOT,
        payload={
            "routing": Enumerated("routing_slot", "routing.slot", stored={"routing.slot": enums.SLOT_STORED})
        },
    ),
    Linked(
        "policy",
        link=Text("policy", "links.policy"),
        payload={"guardrail": Text("guardrail_policy", "guardrail.policy")},
    ),
    Linked(
        "policy_revision",
        link=Count("policy_revision", "links.policy_revision"),
        payload={"guardrail": Count("guardrail_revision", "guardrail.revision")},
        unset=0,
    ),
    Text("trace_id", "links.trace_id", limit=MAX_ID_LENGTH),
    Text("span_id", "links.span_id", limit=MAX_ID_LENGTH),
    Text("request_id", "links.request_id", limit=MAX_ID_LENGTH),
    Attributes("attributes"),
    Text("provider", "inference.provider", limit=MAX_PROVIDER_LENGTH),
    Count("input_tokens", "inference.input_tokens"),
    Count("output_tokens", "inference.output_tokens"),
    Count("cached_input_tokens", "inference.cached_input_tokens", at_most="input_tokens"),
    Count("reasoning_tokens", "inference.reasoning_tokens", at_most="output_tokens"),
    Latency("latency_us", {"inference": "inference.latency", "routing": "routing.latency"}),
    Cost("cost"),
    Enumerated(
        "status",
        {"inference": "inference.status", "routing": "routing.outcome"},
        stored={"inference.status": enums.STATUS_STORED, "routing.outcome": enums.OUTCOME_STORED},
    ),
    Text("rollout", "routing.rollout", limit=MAX_ID_LENGTH),
    Text("endpoint", "routing.endpoint", limit=MAX_NAME_LENGTH),
    Enumerated(
        "decision",
        "guardrail.decision",
        stored={"guardrail.decision": enums.DECISION_STORED},
        domain=_lower_name,
    ),
    Count("violation_count", "guardrail.violation_count"),
    Enumerated(
        "highest_severity",
        "guardrail.highest_severity",
        stored={"guardrail.highest_severity": enums.SEVERITY_STORED},
        domain=_lower_name,
    ),
    ServerOnly("change_resource"),
    ServerOnly("change_action"),
    ServerOnly("change_actor"),
    ServerOnly("change_revision"),
    IsError("is_error"),
)


def linked(event: LogEvent) -> Links:
    """The event's links, each unset one filled from the payload field linked to it (the Linked columns)."""
    kind, changes = _kind(event), {}
    for column in COLUMNS:
        if not isinstance(column, Linked):
            continue
        other = column.payload.get(kind or "")
        if other is not None and isinstance(column.link.source, str):
            name = column.link.source.partition(".")[2]
            source = other.source_of(kind)
            if getattr(event.links, name) == column.unset and source is not None:
                changes[name] = _read(event, source)
    return dataclasses.replace(event.links, **changes) if changes else event.links


def domain_row(event: LogEvent) -> tuple[object, ...]:
    """The ingestion row (EVENT_COLUMNS) of a checked domain event."""
    row: list[object] = []
    for column in COLUMNS:
        value = column.value(event)
        row.extend(value if len(column.names) > 1 else (value,))
    return tuple(row)


def check_columns(event: LogEvent, prefix: str, found: Violations) -> None:
    """Appends every broken rule of the event's columns to `found`, each by its field path."""
    for column in COLUMNS:
        column.check(event, prefix, found)


# The stored columns of one event, in the order of an ingestion row (COPY's column list).
EVENT_COLUMNS: tuple[str, ...] = tuple(name for column in COLUMNS for name in column.names)
# Positions in an ingestion row that pricing reads and writes; the three cost columns are adjacent.
ROW_EVENT_TIME = EVENT_COLUMNS.index("event_time")
ROW_MODEL_VERSION = EVENT_COLUMNS.index("model_version")
ROW_INPUT_TOKENS = EVENT_COLUMNS.index("input_tokens")
ROW_OUTPUT_TOKENS = EVENT_COLUMNS.index("output_tokens")
ROW_CACHED_INPUT_TOKENS = EVENT_COLUMNS.index("cached_input_tokens")
ROW_REASONING_TOKENS = EVENT_COLUMNS.index("reasoning_tokens")
ROW_COST = EVENT_COLUMNS.index("cost_micros")
