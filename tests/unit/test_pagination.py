"""Page sizes, order_by parsing, page tokens (round trip, tampering, reuse on another query) and keysets."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.server.errors import InvalidArgument
from modelplane.server.field_rules import Violations
from modelplane.server.pagination import (
    K,
    KeysetPage,
    decode_page_token,
    encode_page_token,
    keyset_condition,
    keyset_page,
    parse_order_by,
    query_fingerprint,
    resolve_page_size,
)
from modelplane.server.registry.search import (
    MODEL_ORDER,
    VERSION_ORDER,
    plan_model_list,
    plan_model_version_list,
)

WHEN = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(("requested", "served"), [(0, 50), (1, 1), (50, 50), (1000, 1000), (1001, 1000)])
def test_page_size_defaults_and_caps(requested: int, served: int) -> None:
    assert resolve_page_size(requested) == served


def test_negative_page_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve_page_size(-1)
    assert caught.value.reason == "INVALID_FIELD"
    assert caught.value.violations[0].field == "page_size"


@pytest.mark.parametrize(
    ("text", "columns", "descending", "canonical"),
    [
        ("", ("m.id",), False, "name"),
        ("name", ("m.id",), False, "name"),
        ("  create_time   DESC ", ("m.create_time", "m.id"), True, "create_time desc"),
        ("update_time asc", ("m.update_time", "m.id"), False, "update_time"),
    ],
)
def test_model_order_by(text: str, columns: tuple[str, ...], descending: bool, canonical: str) -> None:
    order = parse_order_by(text, MODEL_ORDER)
    assert (order.columns, order.descending, order.canonical) == (columns, descending, canonical)


def test_version_order_by_ties_on_sort_key() -> None:
    order = parse_order_by("version_id desc", VERSION_ORDER)
    assert order.sql == "v.version_id DESC, v.sort_key DESC"
    assert order.key_types == (int, str)
    assert parse_order_by("", VERSION_ORDER).columns == ("v.create_time", "v.sort_key")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour", 'unknown field "colour"; expected one of: name, create_time, update_time'),
        ("name sideways", 'expected "asc" or "desc" after "name", found "sideways"'),
        ("name, create_time", "takes one field"),
        ("name desc extra", "takes one field"),
    ],
)
def test_bad_order_by_is_invalid_field(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_order_by(text, MODEL_ORDER)
    assert caught.value.reason == "INVALID_FIELD"
    assert caught.value.violations[0].field == "order_by"
    assert message in caught.value.violations[0].description


def test_fingerprint_separates_its_parts() -> None:
    assert query_fingerprint("ab", "c") != query_fingerprint("a", "bc")
    assert query_fingerprint("a", "b") == query_fingerprint("a", "b")


def test_page_token_round_trips_with_types() -> None:
    fingerprint = query_fingerprint("ListModelVersions", "models/-", "state = READY", "create_time")
    token = encode_page_token(fingerprint, [WHEN, "gpt/0000000000000000042", 7])
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_page_token(token, fingerprint, [datetime, str, int]) == (WHEN, "gpt/0000000000000000042", 7)


def test_empty_token_is_the_first_page() -> None:
    assert decode_page_token("", "anything", [str]) is None


def _reject(token: str, fingerprint: str, types: list[type[str] | type[int] | type[datetime]]) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, fingerprint, types)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.violations[0].field == "page_token"
    return caught.value.violations[0].description


def test_token_for_another_query_is_rejected() -> None:
    token = encode_page_token(query_fingerprint("ListModels", "provider = a", "name"), ["gpt"])
    description = _reject(token, query_fingerprint("ListModels", "provider = b", "name"), [str])
    assert "different query" in description


@pytest.mark.parametrize(
    "token",
    ["not a token!", "AAAA", "x" * 5000, "eyJ2IjoxfQ", "%%%%"],
)
def test_garbage_tokens_are_rejected(token: str) -> None:
    assert "not a page token" in _reject(token, "fp", [str])


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_edited_token_is_rejected() -> None:
    token = encode_page_token("fp", ["gpt", 10])
    raw = _raw(token)
    edited_body = raw[:-8].replace(b'"gpt"', b'"zzz"')
    edited = base64.urlsafe_b64encode(edited_body + raw[-8:]).decode().rstrip("=")
    _reject(edited, "fp", [str, int])
    # Changing any character that changes the decoded bytes breaks the checksum.
    rejected = 0
    for index in range(len(token)):
        flipped = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        if _raw(flipped) == raw:
            continue  # only the unused low bits of the last character changed
        with pytest.raises(InvalidArgument):
            decode_page_token(flipped, "fp", [str, int])
        rejected += 1
    assert rejected >= len(token) - 1


def test_deeply_nested_token_body_is_rejected() -> None:
    # The checksum is not a secret, so a well-checksummed hostile body must still fail cleanly.
    body = b"[" * 3000
    checksum = hashlib.blake2b(body, digest_size=8, person=b"mp-page-token").digest()
    token = base64.urlsafe_b64encode(body + checksum).decode().rstrip("=")
    assert "not a page token" in _reject(token, "fp", [str])


def test_token_keys_must_match_the_order_types() -> None:
    token = encode_page_token("fp", ["gpt", 10])
    _reject(token, "fp", [str])
    _reject(token, "fp", [str, datetime])
    _reject(token, "fp", [int, int])


@pytest.mark.parametrize(
    "moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00", "2026-01-01"]
)
def test_token_times_that_have_no_utc_datetime_are_rejected(moment: str) -> None:
    token = encode_page_token("fp", [moment, "gpt"])
    assert "not a page token" in _reject(token, "fp", [datetime, str])


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_token_times_come_back_in_utc(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    decoded = decode_page_token(encode_page_token("fp", [aware]), "fp", [datetime])
    assert decoded is not None
    (key,) = decoded
    assert isinstance(key, datetime)
    assert key == aware
    assert key.tzinfo is UTC


def test_token_with_another_version_is_rejected() -> None:
    body = json.dumps({"v": 2, "q": "fp", "k": ["x"]}).encode()
    checksum = hashlib.blake2b(body, digest_size=8, person=b"mp-page-token").digest()
    assert "not a page token" in _reject(
        base64.urlsafe_b64encode(body + checksum).decode().rstrip("="), "fp", [str]
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_random_tokens_only_raise_invalid_argument(token: str) -> None:
    try:
        decoded = decode_page_token(token, "fp", [str, int])
    except InvalidArgument as error:
        reason = error.reason
    else:
        reason = "accepted"
        assert decoded is None
    assert reason == ("accepted" if token == "" else "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    ("columns", "descending", "sql"),
    [
        (["m.id"], False, "m.id > $4"),
        (["m.create_time", "m.id"], False, "(m.create_time, m.id) > ($4, $5)"),
        (["v.version_id", "v.sort_key"], True, "(v.version_id, v.sort_key) < ($4, $5)"),
    ],
)
def test_keyset_condition(columns: list[str], descending: bool, sql: str) -> None:
    key = ["k"] * len(columns)
    condition = keyset_condition(columns, key, descending=descending, first_param=4)
    assert condition.sql == sql
    assert condition.params == tuple(key)


def test_plan_numbers_scope_filter_and_keyset_parameters_in_order() -> None:
    first = plan_model_version_list(
        model_id="gpt", filter_text="state = READY", order_by="version_id desc", page_size=2, page_token=""
    )
    assert first.where == "v.model_id = $1 AND (v.state = $2)"
    assert first.params == ("gpt", "ready")
    assert (first.limit, first.page_size, first.order_sql) == (3, 2, "v.version_id DESC, v.sort_key DESC")

    rows = [{"version_id": n, "sort_key": f"gpt/{n:019d}"} for n in (9, 8, 7)]
    page, token = first.page(rows)
    assert page == rows[:2]
    second = plan_model_version_list(
        model_id="gpt", filter_text="state = READY", order_by="version_id DESC", page_size=2, page_token=token
    )
    assert second.where == "v.model_id = $1 AND (v.state = $2) AND (v.version_id, v.sort_key) < ($3, $4)"
    assert second.params == ("gpt", "ready", 8, "gpt/0000000000000000008")
    assert second.page(rows[2:]) == (rows[2:], "")


def test_plan_token_is_bound_to_parent_filter_and_order() -> None:
    plan = plan_model_list(filter_text="", order_by="create_time", page_size=1, page_token="")
    _, token = plan.page([{"create_time": WHEN.astimezone(UTC), "id": "a"}, {"create_time": WHEN, "id": "b"}])
    assert plan_model_list(filter_text="", order_by="create_time", page_size=1, page_token=token).params == (
        WHEN,
        "a",
    )
    for other in (
        {"filter_text": "provider = x", "order_by": "create_time"},
        {"filter_text": "", "order_by": "create_time desc"},
        {"filter_text": "", "order_by": "update_time"},
    ):
        with pytest.raises(InvalidArgument) as caught:
            plan_model_list(page_size=1, page_token=token, **other)
        assert caught.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        plan_model_version_list(model_id=None, filter_text="", order_by="", page_size=1, page_token=token)


def _keyset_page(page_size: int, page_token: str, key_type: type[K], *scope: str) -> KeysetPage[K]:
    """keyset_page on its own: what it collects is raised at once."""
    v = Violations()
    request = keyset_page(v, page_size, page_token, key_type, *scope)
    v.raise_if_any()
    return request


def test_keyset_page_continues_after_the_last_key_it_returned() -> None:
    first = _keyset_page(2, "", int, "ListRollouts", "deployments/chat")
    assert (first.size, first.fetch, first.after) == (2, 3, None)
    items, token = first.page([9, 8, 7], key=lambda n: n)
    assert items == (9, 8)
    second = _keyset_page(2, token, int, "ListRollouts", "deployments/chat")
    assert second.after == 8
    assert second.page([7], key=lambda n: n) == ((7,), "")


def test_keyset_page_token_is_bound_to_its_scope_and_key_type() -> None:
    _, token = _keyset_page(1, "", str, "ListDeployments", "").page(["a", "b"], key=lambda s: s)
    assert _keyset_page(1, token, str, "ListDeployments", "").after == "a"
    for scope in (("ListDeployments", "models/gpt"), ("ListRollouts", "")):
        with pytest.raises(InvalidArgument) as caught:
            _keyset_page(1, token, str, *scope)
        assert caught.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        _keyset_page(1, token, int, "ListDeployments", "")


def test_keyset_page_collects_a_bad_size_and_token_beside_other_fields() -> None:
    v = Violations()
    v.add("parent", "must be deployments/{deployment}")
    request = keyset_page(v, -1, "not a token", int, "ListRollouts", "x")
    assert request.after is None
    with pytest.raises(InvalidArgument) as caught:
        v.raise_if_any()
    assert [f.field for f in caught.value.violations] == ["parent", "page_size", "page_token"]
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
