"""AIP-160 filters: parse a subset of the filter language and compile it to parameterised SQL for a schema.

Grammar (positions in error messages are 1-based character offsets into the filter text):

    filter      = [ expression ]
    expression  = sequence { "AND" sequence }
    sequence    = factor { factor }                  (terms side by side are an implicit AND)
    factor      = term { "OR" term }
    term        = [ "NOT" | "-" ] simple
    simple      = comparison | "(" expression ")"
    comparison  = field operator value
    field       = name | name "." key                (e.g. provider, labels.team)
    operator    = "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
    value       = string | word | integer | "*"

- As in AIP-160, OR binds tighter than AND: `a AND b OR c` means `a AND (b OR c)`, and so does `a b OR c`.
- AND, OR and NOT are keywords only in upper case; quote a value to use one of them as text.
- A string is double- or single-quoted; a backslash takes the next character literally (`"say \\"hi\\""`).
- A word is a run of characters other than white space, quotes, parentheses and the operator characters
  `= ! < > :`; `-12` and `42` are integers, `*` alone means "any value".
- `:` is "has": on text it matches a case-insensitive substring, on a list it matches a member, on a map
  `labels:team` or `labels.team:*` matches when the key is present, and `field:*` when the field is set.
- `!=` is the exact complement of `=`: `labels.team != "ml"` also matches rows without a `team` label.
- Names compare as full resource names (`name = "models/gpt-4o"`); a trailing `*` matches a prefix
  (`name = "models/gpt-*"`).
- Timestamps are RFC 3339 strings in quotes with a time zone (`create_time >= "2025-01-01T00:00:00Z"`).
- Enum values are case-insensitive and may carry the enum prefix (`state = READY`,
  `capabilities:CAPABILITY_TOOL_USE`).
- A filter is at most 2000 characters long and nests parentheses at most 32 deep.

Values never enter the SQL text: every value becomes a `$n` parameter for asyncpg.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Literal, TypeAlias

from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.field_rules import INT64_MAX, INT64_MIN
from modelplane.v1.error_reason_pb2 import ErrorReason

MAX_FILTER_LENGTH = 2000
MAX_NESTING_DEPTH = 32

FILTER_FIELD = "filter"
INVALID_FILTER = ErrorReason.ERROR_REASON_INVALID_FILTER

EQ, NE, LT, LE, GT, GE, HAS = "=", "!=", "<", "<=", ">", ">=", ":"
ALL_OPERATORS = (EQ, NE, LT, LE, GT, GE, HAS)
_SQL_COMPARATORS = {EQ: "=", NE: "<>", LT: "<", LE: "<=", GT: ">", GE: ">="}
_KEYWORDS = frozenset({"AND", "OR", "NOT"})
# Characters that end a word: the operator characters, quotes and parentheses.
_DELIMITERS = frozenset("()\"'=!<>:")
_INTEGER = re.compile(r"-?[0-9]+")


def _violation(position: int, message: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation(FILTER_FIELD, f"position {position}: {message}")], reason=INVALID_FILTER
    )


# ---------------------------------------------------------------------------------------------------------
# Schema


class FieldType(Enum):
    """How a filter field's values are checked and which SQL a comparison on it becomes."""

    TEXT = "text"
    """A text column: = and != are exact, `:` is a case-insensitive substring, `:*` means non-empty."""
    RESOURCE_NAME = "resource name"
    """An id column compared as `{name_prefix}{id}`; a trailing `*` on the value matches a prefix."""
    INTEGER = "integer"
    TIMESTAMP = "timestamp"
    ENUM = "enum"
    """A text column holding one of `choices` (stored form); input is matched case-insensitively."""
    ENUM_LIST = "enum list"
    """A text[] column of `choices`; `field:VALUE` matches rows whose list holds the value."""
    MAP = "map"
    """A jsonb object of string values, filtered as `field.key`, or `field:key` for presence."""
    LINKED_TEXT = "linked text"
    """A value held in another table: `column` is an SQL template whose `{value}` is the parameter."""


_DEFAULT_OPERATORS: Mapping[FieldType, frozenset[str]] = {
    FieldType.TEXT: frozenset({EQ, NE, HAS}),
    FieldType.RESOURCE_NAME: frozenset({EQ, NE}),
    FieldType.INTEGER: frozenset({EQ, NE, LT, LE, GT, GE}),
    FieldType.TIMESTAMP: frozenset({EQ, NE, LT, LE, GT, GE}),
    FieldType.ENUM: frozenset({EQ, NE}),
    FieldType.ENUM_LIST: frozenset({HAS}),
    FieldType.MAP: frozenset({EQ, NE, HAS}),
    FieldType.LINKED_TEXT: frozenset({EQ, NE, HAS}),
}


@dataclass(frozen=True, eq=False)
class FilterField:
    """One field a filter may name. Build it with the `*_field` functions below rather than by hand."""

    name: str
    type: FieldType
    column: str
    operators: frozenset[str]
    name_prefix: str = ""
    # Accepted spelling (upper case, without enum prefix) -> stored value.
    choices: Mapping[str, str] = field(default_factory=dict)
    choice_prefix: str = ""
    # LINKED_TEXT: the SQL for `field:*` (linked to any value).
    any_sql: str = ""

    @property
    def display_name(self) -> str:
        return f"{self.name}.<key>" if self.type is FieldType.MAP else self.name


def _operators(kind: FieldType, operators: Iterable[str] | None) -> frozenset[str]:
    if operators is None:
        return _DEFAULT_OPERATORS[kind]
    chosen = frozenset(operators)
    unsupported = chosen - _DEFAULT_OPERATORS[kind]
    if unsupported:
        raise ValueError(f"{kind.value} fields do not support {sorted(unsupported)}")
    return chosen


def text_field(name: str, column: str, *, operators: Iterable[str] | None = None) -> FilterField:
    return FilterField(name, FieldType.TEXT, column, _operators(FieldType.TEXT, operators))


def resource_name_field(
    name: str, column: str, *, prefix: str, operators: Iterable[str] | None = None
) -> FilterField:
    kind = FieldType.RESOURCE_NAME
    return FilterField(name, kind, column, _operators(kind, operators), name_prefix=prefix)


def integer_field(name: str, column: str, *, operators: Iterable[str] | None = None) -> FilterField:
    return FilterField(name, FieldType.INTEGER, column, _operators(FieldType.INTEGER, operators))


def timestamp_field(name: str, column: str, *, operators: Iterable[str] | None = None) -> FilterField:
    return FilterField(name, FieldType.TIMESTAMP, column, _operators(FieldType.TIMESTAMP, operators))


def enum_field(
    name: str,
    column: str,
    choices: Mapping[str, str],
    *,
    prefix: str = "",
    list_column: bool = False,
    operators: Iterable[str] | None = None,
) -> FilterField:
    """`choices` maps each accepted name (e.g. "TOOL_USE") to its stored form ("tool_use"); input may
    also carry `prefix` ("CAPABILITY_TOOL_USE") and any letter case."""
    kind = FieldType.ENUM_LIST if list_column else FieldType.ENUM
    upper = {key.upper(): stored for key, stored in choices.items()}
    return FilterField(
        name, kind, column, _operators(kind, operators), choices=upper, choice_prefix=prefix.upper()
    )


def map_field(name: str, column: str, *, operators: Iterable[str] | None = None) -> FilterField:
    return FilterField(name, FieldType.MAP, column, _operators(FieldType.MAP, operators))


def linked_text_field(
    name: str, template: str, *, any_sql: str, operators: Iterable[str] | None = None
) -> FilterField:
    """`template` is an SQL condition with `{value}` where the compared value's parameter goes, e.g.
    an EXISTS over a link table; `any_sql` is the condition for `name:*`."""
    if "{value}" not in template:
        raise ValueError("template must contain {value}")
    kind = FieldType.LINKED_TEXT
    return FilterField(name, kind, template, _operators(kind, operators), any_sql=any_sql)


class FilterSchema:
    """The fields one list method may filter on."""

    def __init__(self, fields: Iterable[FilterField]) -> None:
        self.fields: dict[str, FilterField] = {}
        for f in fields:
            if f.name in self.fields:
                raise ValueError(f"duplicate filter field {f.name!r}")
            self.fields[f.name] = f

    @property
    def allowed(self) -> str:
        return ", ".join(f.display_name for f in self.fields.values())


@dataclass(frozen=True)
class SqlFragment:
    """A piece of SQL with `$n` placeholders and the values for them, in order."""

    sql: str
    params: tuple[object, ...] = ()


CompiledFilter: TypeAlias = SqlFragment


# ---------------------------------------------------------------------------------------------------------
# Syntax tree


ValueKind = Literal["string", "word", "integer", "star"]


@dataclass(frozen=True)
class Value:
    kind: ValueKind
    text: str
    position: int


@dataclass(frozen=True)
class Comparison:
    field: str
    field_position: int
    operator: str
    operator_position: int
    value: Value


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node: TypeAlias = "Comparison | And | Or | Not"


# ---------------------------------------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive descent straight over the text, so every error knows its character position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, index: int, message: str) -> InvalidArgument:
        return _violation(index + 1, message)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def word_end(self, start: int) -> int:
        end = start
        while end < len(self.text) and not self.text[end].isspace() and self.text[end] not in _DELIMITERS:
            end += 1
        return end

    def peek_word(self) -> str:
        return self.text[self.pos : self.word_end(self.pos)]

    def found(self, index: int) -> str:
        if index >= len(self.text):
            return "end of filter"
        char = self.text[index]
        if char in "\"'":
            return "a quoted string"
        if char in _DELIMITERS:
            two = self.text[index : index + 2]
            return f'"{two}"' if two in ("!=", "<=", ">=") else f'"{char}"'
        word = self.text[index : self.word_end(index)]
        return f'"{word}"' if len(word) <= 30 else f'"{word[:30]}..."'

    def parse(self) -> Node | None:
        self.skip_space()
        if self.at_end():
            return None
        node = self.expression()
        self.skip_space()
        if not self.at_end():
            if self.text[self.pos] == ")":
                raise self.fail(self.pos, 'found ")" without a matching "("')
            raise self.fail(self.pos, f"expected AND, OR or end of filter, found {self.found(self.pos)}")
        return node

    def expression(self) -> Node:
        sequences = [self.sequence()]
        while True:
            self.skip_space()
            if self.peek_word() != "AND":
                break
            self.pos += 3
            sequences.append(self.sequence())
        return sequences[0] if len(sequences) == 1 else And(tuple(sequences))

    def sequence(self) -> Node:
        factors = [self.factor()]
        while True:
            self.skip_space()
            if self.at_end() or self.text[self.pos] == ")" or self.peek_word() in ("AND", "OR"):
                break
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else And(tuple(factors))

    def factor(self) -> Node:
        terms = [self.term()]
        while True:
            self.skip_space()
            if self.peek_word() != "OR":
                break
            self.pos += 2
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def term(self) -> Node:
        self.skip_space()
        negated = False
        if not self.at_end() and self.text[self.pos] == "-":
            negated = True
            self.pos += 1
        elif self.peek_word() == "NOT":
            negated = True
            self.pos += 3
        node = self.simple()
        return Not(node) if negated else node

    def simple(self) -> Node:
        self.skip_space()
        if not self.at_end() and self.text[self.pos] == "(":
            opening = self.pos
            self.depth += 1
            if self.depth > MAX_NESTING_DEPTH:
                raise self.fail(opening, f"parentheses nest deeper than {MAX_NESTING_DEPTH} levels")
            self.pos += 1
            self.skip_space()
            if not self.at_end() and self.text[self.pos] == ")":
                raise self.fail(self.pos, 'expected a comparison after "(", found ")"')
            node = self.expression()
            self.skip_space()
            if self.at_end() or self.text[self.pos] != ")":
                raise self.fail(
                    self.pos,
                    f'expected ")" to close the "(" at position {opening + 1}, found {self.found(self.pos)}',
                )
            self.pos += 1
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Comparison:
        start = self.pos
        name = self.peek_word()
        if not name or name in _KEYWORDS:
            raise self.fail(start, f"expected a field name, found {self.found(start)}")
        self.pos += len(name)
        self.skip_space()
        op_start = self.pos
        operator = self.operator()
        if operator is None:
            raise self.fail(
                op_start,
                f'expected an operator (=, !=, <, <=, >, >=, :) after "{name}", found {self.found(op_start)}',
            )
        self.skip_space()
        value = self.value(operator)
        return Comparison(name, start + 1, operator, op_start + 1, value)

    def operator(self) -> str | None:
        for candidate in ("!=", "<=", ">=", "=", "<", ">", ":"):
            if self.text.startswith(candidate, self.pos):
                self.pos += len(candidate)
                return candidate
        return None

    def value(self, operator: str) -> Value:
        start = self.pos
        if self.at_end():
            raise self.fail(start, f'expected a value after "{operator}", found end of filter')
        char = self.text[start]
        if char in "\"'":
            return Value("string", self.string(char), start + 1)
        word = self.peek_word()
        if not word or word in _KEYWORDS:
            raise self.fail(start, f'expected a value after "{operator}", found {self.found(start)}')
        self.pos += len(word)
        if word == "*":
            return Value("star", word, start + 1)
        if _INTEGER.fullmatch(word):
            return Value("integer", word, start + 1)
        return Value("word", word, start + 1)

    def string(self, quote: str) -> str:
        opening = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        raise self.fail(
            len(self.text),
            f"expected a closing {quote} for the string at position {opening + 1}, found end of filter",
        )


def parse_filter(text: str) -> Node | None:
    """Parses filter text into a syntax tree; None for an empty filter. Raises InvalidArgument."""
    if len(text) > MAX_FILTER_LENGTH:
        raise _violation(
            MAX_FILTER_LENGTH + 1,
            f"the filter is {len(text)} characters long; the limit is {MAX_FILTER_LENGTH}",
        )
    for index, char in enumerate(text):
        # Postgres text cannot hold NUL, and lone surrogates cannot be sent as UTF-8.
        if char == "\x00" or "\ud800" <= char <= "\udfff":
            raise _violation(
                index + 1, f"the filter contains the character U+{ord(char):04X}, which is not allowed"
            )
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------------------
# Compiler


def escape_like(text: str) -> str:
    """Escapes LIKE's wildcards so `text` matches only itself (backslash is Postgres' default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Compiler:
    def __init__(self, schema: FilterSchema, first_param: int) -> None:
        self.schema = schema
        self.params: list[object] = []
        self.first_param = first_param

    def param(self, value: object) -> str:
        self.params.append(value)
        return f"${self.first_param + len(self.params) - 1}"

    def node(self, node: Node) -> str:
        if isinstance(node, Comparison):
            return self.comparison(node)
        if isinstance(node, Not):
            return f"NOT ({self.node(node.child)})"
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(self.node(child) for child in node.children) + ")"

    def resolve(self, c: Comparison) -> tuple[FilterField, str | None]:
        """Finds the schema field of `c.field`; the second item is the map key of `labels.<key>`."""
        exact = self.schema.fields.get(c.field)
        if exact is not None:
            return exact, None
        head, dot, key = c.field.partition(".")
        parent = self.schema.fields.get(head)
        if dot and parent is not None and parent.type is FieldType.MAP:
            if not key:
                raise _violation(c.field_position, f'expected a key after "{head}.", e.g. {head}.team')
            return parent, key
        raise _violation(
            c.field_position, f'unknown field "{c.field}"; expected one of: {self.schema.allowed}'
        )

    def comparison(self, c: Comparison) -> str:
        f, key = self.resolve(c)
        operators = f.operators
        if f.type is FieldType.MAP and key is None:
            # The bare map name only takes `labels:key` (presence); comparisons need a key.
            operators = frozenset({HAS})
        if c.operator not in operators:
            allowed = ", ".join(op for op in ALL_OPERATORS if op in operators)
            raise _violation(
                c.operator_position,
                f'operator "{c.operator}" is not supported on {c.field}; expected one of: {allowed}',
            )
        if c.value.kind == "star" and c.operator != HAS and f.type is not FieldType.RESOURCE_NAME:
            raise _violation(
                c.value.position, f'"*" (any value) is only allowed after ":", as in {c.field}:*'
            )
        if f.type is FieldType.TEXT:
            return self.text(f, c)
        if f.type is FieldType.RESOURCE_NAME:
            return self.resource_name(f, c)
        if f.type is FieldType.INTEGER:
            return f"{f.column} {_SQL_COMPARATORS[c.operator]} {self.param(self.integer(f, c.value))}"
        if f.type is FieldType.TIMESTAMP:
            return f"{f.column} {_SQL_COMPARATORS[c.operator]} {self.param(self.timestamp(f, c.value))}"
        if f.type is FieldType.ENUM:
            return f"{f.column} {_SQL_COMPARATORS[c.operator]} {self.param(self.choice(f, c.value))}"
        if f.type is FieldType.ENUM_LIST:
            if c.value.kind == "star":
                return f"cardinality({f.column}) > 0"
            return f"{self.param(self.choice(f, c.value))} = ANY({f.column})"
        if f.type is FieldType.MAP:
            return self.map(f, key, c)
        return self.linked_text(f, c)

    def text_of(self, f: FilterField, value: Value) -> str:
        if value.kind == "star":
            raise _violation(value.position, f'expected a text value for {f.name}, found "*"')
        return value.text

    def text(self, f: FilterField, c: Comparison) -> str:
        if c.operator == HAS:
            if c.value.kind == "star":
                return f"{f.column} <> ''"
            return f"{f.column} ILIKE {self.param('%' + escape_like(c.value.text) + '%')}"
        return f"{f.column} {_SQL_COMPARATORS[c.operator]} {self.param(self.text_of(f, c.value))}"

    def resource_name(self, f: FilterField, c: Comparison) -> str:
        text = c.value.text
        if not text.startswith(f.name_prefix) or c.value.kind == "integer":
            raise _violation(
                c.value.position, f'expected a name like "{f.name_prefix}{{id}}" for {f.name}, found "{text}"'
            )
        rest = text[len(f.name_prefix) :]
        if rest.endswith("*"):
            operator = "LIKE" if c.operator == EQ else "NOT LIKE"
            return f"{f.column} {operator} {self.param(escape_like(rest[:-1]) + '%')}"
        return f"{f.column} {_SQL_COMPARATORS[c.operator]} {self.param(rest)}"

    def integer(self, f: FilterField, value: Value) -> int:
        if value.kind != "integer":
            shown = "*" if value.kind == "star" else f'"{value.text}"'
            raise _violation(value.position, f"expected an integer for {f.name}, found {shown}")
        number = int(value.text)
        if not INT64_MIN <= number <= INT64_MAX:
            raise _violation(value.position, f"{value.text} is out of the 64-bit integer range")
        return number

    def timestamp(self, f: FilterField, value: Value) -> datetime:
        expected = f'expected an RFC 3339 timestamp in quotes for {f.name}, e.g. "2025-01-31T12:00:00Z"'
        if value.kind not in ("string", "word"):
            raise _violation(value.position, f"{expected}, found {value.text}")
        try:
            moment = datetime.fromisoformat(value.text.strip().upper())
        except ValueError:
            raise _violation(value.position, f'{expected}, found "{value.text}"') from None
        if moment.tzinfo is None:
            raise _violation(value.position, f'{expected} (with a time zone), found "{value.text}"')
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise _violation(value.position, f'"{value.text}" is out of the supported time range') from None

    def choice(self, f: FilterField, value: Value) -> str:
        spelled = value.text.upper()
        if f.choice_prefix and spelled.startswith(f.choice_prefix):
            spelled = spelled[len(f.choice_prefix) :]
        stored = f.choices.get(spelled) if value.kind in ("string", "word") else None
        if stored is None:
            raise _violation(
                value.position,
                f'unknown {f.name} value "{value.text}"; expected one of: {", ".join(f.choices)}',
            )
        return stored

    def map(self, f: FilterField, key: str | None, c: Comparison) -> str:
        if key is None:
            if c.value.kind == "star":
                return f"{f.column} <> '{{}}'::jsonb"
            return f"{f.column} ? {self.param(c.value.text)}"
        if c.operator == HAS and c.value.kind == "star":
            return f"{f.column} ? {self.param(key)}"
        pair = f"jsonb_build_object({self.param(key)}::text, {self.param(self.text_of(f, c.value))}::text)"
        # Containment is true or false, never NULL, so `!=` and NOT match rows that lack the key.
        contains = f"{f.column} @> {pair}"
        return f"NOT ({contains})" if c.operator == NE else contains

    def linked_text(self, f: FilterField, c: Comparison) -> str:
        if c.value.kind == "star":
            return f.any_sql
        condition = f.column.format(value=self.param(self.text_of(f, c.value)))
        return f"NOT {condition}" if c.operator == NE else condition


def compile_filter(text: str, schema: FilterSchema, *, first_param: int = 1) -> CompiledFilter:
    """Compiles filter text to an SQL condition whose placeholders start at `$first_param`.

    An empty filter compiles to "TRUE". Raises InvalidArgument (field "filter", reason INVALID_FILTER)
    with the 1-based character position of the problem and what was expected there.
    """
    tree = parse_filter(text)
    if tree is None:
        return SqlFragment("TRUE")
    compiler = _Compiler(schema, first_param)
    sql = compiler.node(tree)
    return SqlFragment(sql, tuple(compiler.params))


__all__ = [
    "ALL_OPERATORS",
    "MAX_FILTER_LENGTH",
    "MAX_NESTING_DEPTH",
    "And",
    "Comparison",
    "CompiledFilter",
    "FieldType",
    "FilterField",
    "FilterSchema",
    "Node",
    "Not",
    "Or",
    "SqlFragment",
    "Value",
    "compile_filter",
    "enum_field",
    "escape_like",
    "integer_field",
    "linked_text_field",
    "map_field",
    "parse_filter",
    "resource_name_field",
    "text_field",
]
