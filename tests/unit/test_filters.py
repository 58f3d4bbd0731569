"""The AIP-160 filter parser and compiler: precedence, parameters, and errors that point at a position."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.server.errors import InvalidArgument
from modelplane.server.filters import (
    MAX_FILTER_LENGTH,
    And,
    Comparison,
    FilterSchema,
    Not,
    Or,
    SqlFragment,
    compile_filter,
    escape_like,
    parse_filter,
)
from modelplane.server.registry.search import MODEL_FILTER, VERSION_FILTER


def _error(text: str, versions: bool = False) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        compile_filter(text, VERSION_FILTER if versions else MODEL_FILTER, first_param=1)
    return caught.value


def _fields(node: object) -> object:
    """The tree with comparisons reduced to their field names, to compare shapes."""
    if isinstance(node, Comparison):
        return node.field
    if isinstance(node, Not):
        return ("NOT", _fields(node.child))
    if isinstance(node, And):
        return ("AND", *(_fields(c) for c in node.children))
    if isinstance(node, Or):
        return ("OR", *(_fields(c) for c in node.children))
    return node


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("a = 1", "a"),
        ("a = 1 AND b = 2 OR c = 3", ("AND", "a", ("OR", "b", "c"))),
        ("a = 1 OR b = 2 AND c = 3", ("AND", ("OR", "a", "b"), "c")),
        ("a = 1 b = 2 OR c = 3", ("AND", "a", ("OR", "b", "c"))),
        ("(a = 1 AND b = 2) OR c = 3", ("OR", ("AND", "a", "b"), "c")),
        ("NOT a = 1 -b:*", ("AND", ("NOT", "a"), ("NOT", "b"))),
        ("NOT(a = 1)", ("NOT", "a")),
        ("a=1 AND b=2 AND c=3", ("AND", "a", "b", "c")),
        ("  ", None),
        ("", None),
    ],
)
def test_precedence_follows_aip_160(text: str, shape: object) -> None:
    assert _fields(parse_filter(text)) == shape


def test_values_become_parameters_numbered_from_first_param() -> None:
    compiled = compile_filter(
        'display_name = "x\'; DROP TABLE models; --" OR provider = openai', MODEL_FILTER, first_param=3
    )
    assert compiled.sql == "(m.display_name = $3 OR m.provider = $4)"
    assert compiled.params == ("x'; DROP TABLE models; --", "openai")


def test_empty_filter_is_true() -> None:
    compiled = compile_filter("   ", MODEL_FILTER, first_param=1)
    assert (compiled.sql, compiled.params) == ("TRUE", ())


@pytest.mark.parametrize(
    ("text", "sql", "params"),
    [
        ('name = "models/gpt-4o"', "m.id = $1", ("gpt-4o",)),
        ("name != models/gpt-4o", "m.id <> $1", ("gpt-4o",)),
        ('name = "models/gpt_4*"', "m.id LIKE $1", ("gpt\\_4%",)),
        ('display_name:"50%"', "m.display_name ILIKE $1", ("%50\\%%",)),
        ("description:*", "m.description <> ''", ()),
        ('labels.team = "ml"', "m.labels @> jsonb_build_object($1::text, $2::text)", ("team", "ml")),
        ("labels.team != ml", "NOT (m.labels @> jsonb_build_object($1::text, $2::text))", ("team", "ml")),
        ("labels.team:*", "m.labels ? $1", ("team",)),
        ("labels:team", "m.labels ? $1", ("team",)),
        ("labels.app.kubernetes.io/name:*", "m.labels ? $1", ("app.kubernetes.io/name",)),
        (
            'create_time >= "2025-01-02T03:04:05+02:00"',
            "m.create_time >= $1",
            (datetime(2025, 1, 2, 1, 4, 5, tzinfo=UTC),),
        ),
        ('update_time < "2025-01-01t00:00:00z"', "m.update_time < $1", (datetime(2025, 1, 1, tzinfo=UTC),)),
    ],
)
def test_model_fields_compile(text: str, sql: str, params: tuple[object, ...]) -> None:
    compiled = compile_filter(text, MODEL_FILTER, first_param=1)
    assert compiled.sql == sql
    assert compiled.params == params


@pytest.mark.parametrize(
    ("text", "sql", "params"),
    [
        ("capabilities:tool_use", "$1 = ANY(v.capabilities)", ("tool_use",)),
        ("capabilities:CAPABILITY_CHAT", "$1 = ANY(v.capabilities)", ("chat",)),
        ("capabilities:*", "cardinality(v.capabilities) > 0", ()),
        ("state = Ready", "v.state = $1", ("ready",)),
        ("state != MODEL_VERSION_STATE_ARCHIVED", "v.state <> $1", ("archived",)),
        ("context_window > -5", "v.context_window > $1", (-5,)),
        ("output_price <= 2000000", "v.output_price <= $1", (2000000,)),
        ("provider = openai", "m.provider = $1", ("openai",)),
        ("model = models/gpt", "v.model_id = $1", ("gpt",)),
        ("alias != prod", "NOT EXISTS", ("prod",)),
        ("alias:*", "EXISTS", ()),
    ],
)
def test_version_fields_compile(text: str, sql: str, params: tuple[object, ...]) -> None:
    compiled = compile_filter(text, VERSION_FILTER, first_param=1)
    assert compiled.sql.startswith(sql)
    assert compiled.params == params


def test_strings_take_escapes_and_single_quotes() -> None:
    compiled = compile_filter(r"""display_name = "say \"hi\" \\ ok" description = 'it\'s'""", MODEL_FILTER)
    assert compiled.params == ('say "hi" \\ ok', "it's")


def test_escape_like_neutralises_wildcards() -> None:
    assert escape_like(r"a%b_c\d") == r"a\%b\_c\\d"


# The expected position is 1-based: the character where the problem is (len + 1 for the end).
INVALID = [
    ("name =", 7, 'expected a value after "=", found end of filter', False),
    ("provider = openai AND", 22, "expected a field name, found end of filter", False),
    ("(provider = openai", 19, 'expected ")" to close the "(" at position 1', False),
    ("provider = openai)", 18, 'found ")" without a matching "("', False),
    ("provider openai", 10, 'expected an operator (=, !=, <, <=, >, >=, :) after "provider"', False),
    ("color = red", 1, 'unknown field "color"; expected one of: name, display_name', False),
    (
        "display_name < x",
        14,
        'operator "<" is not supported on display_name; expected one of: =, !=, :',
        False,
    ),
    ('display_name = "open', 21, 'expected a closing " for the string at position 16', False),
    ("create_time > yesterday", 15, "expected an RFC 3339 timestamp", False),
    ('create_time > "2025-01-01T00:00:00"', 15, "with a time zone", False),
    ("name = gpt-4o", 8, 'expected a name like "models/{id}"', False),
    ("labels = x", 8, 'operator "=" is not supported on labels; expected one of: :', False),
    ("labels.:*", 1, 'expected a key after "labels."', False),
    ("display_name = *", 16, '"*" (any value) is only allowed after ":"', False),
    ("provider = AND", 12, 'expected a value after "=", found "AND"', False),
    ("() ", 2, 'expected a comparison after "(", found ")"', False),
    ("OR a = 1", 1, 'expected a field name, found "OR"', False),
    ("NOT NOT a = 1", 5, 'expected a field name, found "NOT"', False),
    ("= 1", 1, 'expected a field name, found "="', False),
    ('context_window > "big"', 18, 'expected an integer for context_window, found "big"', True),
    ("context_window > 99999999999999999999", 18, "out of the 64-bit integer range", True),
    ("max_output_tokens = *", 21, '"*" (any value) is only allowed after ":"', True),
    (
        "capabilities:teleport",
        14,
        'unknown capabilities value "teleport"; expected one of: CHAT, COMPLETION',
        True,
    ),
    ("capabilities = CHAT", 14, 'operator "=" is not supported on capabilities; expected one of: :', True),
    ("state = gone", 9, "expected one of: READY, DEPRECATED, ARCHIVED", True),
    ("provider:open", 9, 'operator ":" is not supported on provider', True),
    ("labels.x = y weight > 3", 14, 'unknown field "weight"', True),
    ('create_time > "0001-01-01T00:00:00+01:00"', 15, "out of the supported time range", True),
    ('provider = "a\x00b"', 14, "the character U+0000, which is not allowed", False),
    ("provider = \udcff", 12, "the character U+DCFF", False),
]


@pytest.mark.parametrize(("text", "position", "message", "versions"), INVALID)
def test_invalid_filters_name_the_position(text: str, position: int, message: str, versions: bool) -> None:
    error = _error(text, versions)
    assert error.reason == "INVALID_FILTER"
    (violation,) = error.violations
    assert violation.field == "filter"
    assert violation.description.startswith(f"position {position}: ")
    assert message in violation.description


def test_unknown_field_lists_the_allowed_ones() -> None:
    description = _error("colour = red").violations[0].description
    assert "name, display_name, description, provider, labels.<key>, create_time, update_time" in description


def test_too_long_filter_is_rejected() -> None:
    text = "provider = x OR " * 200
    assert len(text) > MAX_FILTER_LENGTH
    assert "the limit is 2000" in _error(text).violations[0].description


def test_nesting_is_limited_to_32() -> None:
    assert compile_filter("(" * 32 + "provider = x" + ")" * 32, MODEL_FILTER).params == ("x",)
    description = _error("(" * 33 + "provider = x" + ")" * 33).violations[0].description
    assert description.startswith("position 33: parentheses nest deeper than 32")


ALPHABET = st.sampled_from(
    [
        *"()\"'\\=!<>:*-. \tabcxyz019",
        *(" AND ", " OR ", "NOT ", "name", "labels.", "state", "context_window", "models/", "READY"),
        "create_time",
    ]
)


def _outcome(text: str, schema: FilterSchema) -> SqlFragment | InvalidArgument:
    """The compiled filter or the InvalidArgument it raised; any other exception fails the test."""
    try:
        return compile_filter(text, schema, first_param=1)
    except InvalidArgument as error:
        return error


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_filter_like_text_only_ever_raises_invalid_argument(text: str) -> None:
    for schema in (MODEL_FILTER, VERSION_FILTER):
        outcome = _outcome(text, schema)
        if isinstance(outcome, InvalidArgument):
            assert outcome.reason == "INVALID_FILTER"
            assert re.match(r"position \d+: ", outcome.violations[0].description)
        else:
            # Every parameter the SQL names is supplied, and nothing else.
            numbers = {int(n) for n in re.findall(r"\$(\d+)", outcome.sql)}
            assert numbers == set(range(1, len(outcome.params) + 1))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_only_ever_raises_invalid_argument(text: str) -> None:
    outcome = _outcome(text, VERSION_FILTER)
    if isinstance(outcome, InvalidArgument):
        assert outcome.violations[0].field == "filter"
    else:
        assert outcome.sql
