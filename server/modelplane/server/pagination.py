"""Keyset pagination for list methods: page sizes, order_by, opaque page tokens bound to their query.

A page is `WHERE <scope> AND <filter> AND (sort column, tiebreak) > ($n, $n+1) ORDER BY ... LIMIT size + 1`;
the extra row only says whether a next page exists. The page token carries the last row's key and a
fingerprint of the query (scope, filter, order_by) it was made for, so it cannot be replayed against another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from modelplane.server.errors import InvalidArgument
from modelplane.server.field_rules import INT64_MAX, INT64_MIN, Violations
from modelplane.server.filters import FilterSchema, SqlFragment, compile_filter
from modelplane.v1.error_reason_pb2 import ErrorReason

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_LENGTH = 4096

INVALID_PAGE_TOKEN = ErrorReason.ERROR_REASON_INVALID_PAGE_TOKEN
INVALID_FIELD = ErrorReason.ERROR_REASON_INVALID_FIELD

KeyValue: TypeAlias = str | int | datetime
KeyType: TypeAlias = type[str] | type[int] | type[datetime]

_TOKEN_VERSION = 1
_TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
# The checksum catches edited, truncated or corrupted tokens. It is deliberately not a secret (no HMAC
# under a server key): a token only positions, within the query it is bound to, a query the caller may
# run anyway (a filter on the same keys reaches the same rows), so forging one gains nothing, and an
# unkeyed token needs no key shared by every replica and survives any key's rotation. The price is that
# a token's keys are checked like any other input (`_key_value`): types, bigint range, no NUL, times that
# exist in UTC, so a forged token is INVALID_PAGE_TOKEN, never a failure further in.
_CHECKSUM_SIZE = 8
_CHECKSUM_PERSON = b"mp-page-token"


def resolve_page_size(requested: int) -> int:
    """0 means the default of 50; more than 1000 is served as 1000; negative is INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative", reason=INVALID_FIELD)
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


# ---------------------------------------------------------------------------------------------------------
# order_by


@dataclass(frozen=True)
class OrderField:
    """A column a list can be sorted by, and the Python type of its values (for page-token keys)."""

    column: str
    key_type: KeyType

    @property
    def key_name(self) -> str:
        """The column's name without its table alias: how it is read from a selected row."""
        return self.column.rpartition(".")[2]


@dataclass(frozen=True, eq=False)
class OrderSchema:
    """The order_by fields of one list method; `tiebreak` is a unique column that makes every order total."""

    fields: Mapping[str, OrderField]
    default: str
    tiebreak: OrderField


@dataclass(frozen=True)
class OrderBy:
    """A parsed order_by: the sort field, then the tiebreak, all in one direction."""

    field: str
    descending: bool
    keys: tuple[OrderField, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(k.column for k in self.keys)

    @property
    def key_types(self) -> tuple[KeyType, ...]:
        return tuple(k.key_type for k in self.keys)

    @property
    def canonical(self) -> str:
        """The normal form ("create_time desc"), so equivalent spellings share page tokens."""
        return f"{self.field} desc" if self.descending else self.field

    @property
    def sql(self) -> str:
        """The ORDER BY list, e.g. "m.create_time DESC, m.id DESC"."""
        direction = " DESC" if self.descending else ""
        return ", ".join(f"{column}{direction}" for column in self.columns)

    def key_of(self, row: Row) -> tuple[KeyValue, ...]:
        """The keyset key of a selected row; the row must carry each key column under its bare name."""
        return tuple(row[k.key_name] for k in self.keys)


def parse_order_by(text: str, schema: OrderSchema) -> OrderBy:
    """Parses "field", "field asc" or "field desc" (empty: the schema's default, ascending)."""
    words = text.split()
    if not words:
        words = [schema.default]
    allowed = ", ".join(schema.fields)
    if "," in text or len(words) > 2:
        raise InvalidArgument.field(
            "order_by",
            f'takes one field, optionally followed by "asc" or "desc"; the fields are: {allowed}',
            reason=INVALID_FIELD,
        )
    name = words[0]
    chosen = schema.fields.get(name)
    if chosen is None:
        raise InvalidArgument.field(
            "order_by", f'unknown field "{name}"; expected one of: {allowed}', reason=INVALID_FIELD
        )
    direction = words[1].lower() if len(words) == 2 else "asc"
    if direction not in ("asc", "desc"):
        raise InvalidArgument.field(
            "order_by", f'expected "asc" or "desc" after "{name}", found "{words[1]}"', reason=INVALID_FIELD
        )
    tiebreak = schema.tiebreak
    keys = (chosen,) if chosen.column == tiebreak.column else (chosen, tiebreak)
    return OrderBy(name, direction == "desc", keys)


# ---------------------------------------------------------------------------------------------------------
# Page tokens


def query_fingerprint(*parts: str) -> str:
    """A short digest of everything a page token is bound to (method, parent, filter, canonical order_by)."""
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return base64.urlsafe_b64encode(digest.digest()[:12]).decode()


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECKSUM_SIZE, person=_CHECKSUM_PERSON).digest()


def _json_key(value: KeyValue) -> str | int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("page-token timestamps must carry a time zone")
        return value.isoformat()
    return value


def encode_page_token(fingerprint: str, last_key: Sequence[KeyValue]) -> str:
    """An opaque token: URL-safe base64 of a versioned JSON body and its checksum."""
    body = json.dumps(
        {"v": _TOKEN_VERSION, "q": fingerprint, "k": [_json_key(v) for v in last_key]},
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(body + _checksum(body)).decode().rstrip("=")


def _token_error(description: str) -> InvalidArgument:
    return InvalidArgument.field("page_token", description, reason=INVALID_PAGE_TOKEN)


_MALFORMED = "is not a page token this server issued; pass next_page_token back unchanged"


def _key_value(raw: object, key_type: KeyType) -> KeyValue:
    if key_type is datetime and isinstance(raw, str):
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("naive timestamp")
        # Postgres is asked in UTC: a time at the edge of datetime's range in a far offset
        # (0001-01-01T00:00:00+14:00) has no UTC datetime, and would fail in the driver, not here.
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValueError("timestamp out of range in UTC") from None
    # A token's checksum is no secret, so its keys are checked like any input: within a bigint, and text
    # Postgres can hold.
    if key_type is int and isinstance(raw, int) and not isinstance(raw, bool):
        if not INT64_MIN <= raw <= INT64_MAX:
            raise ValueError("integer key out of range")
        return raw
    if key_type is str and isinstance(raw, str):
        if "\x00" in raw:
            raise ValueError("text key with a NUL character")
        return raw
    raise ValueError(f"expected {key_type.__name__}")


def decode_page_token(
    token: str, fingerprint: str, key_types: Sequence[KeyType]
) -> tuple[KeyValue, ...] | None:
    """The last key of the previous page, or None for an empty token (the first page).

    Raises InvalidArgument (page_token, INVALID_PAGE_TOKEN) for a malformed or edited token, and for a
    token made for another query (a different fingerprint).
    """
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_LENGTH or not _TOKEN_ALPHABET.fullmatch(token):
        raise _token_error(_MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise _token_error(_MALFORMED) from None
    body, checksum = raw[:-_CHECKSUM_SIZE], raw[-_CHECKSUM_SIZE:]
    if len(raw) <= _CHECKSUM_SIZE or _checksum(body) != checksum:
        raise _token_error(_MALFORMED)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise _token_error(_MALFORMED) from None
    if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
        raise _token_error(_MALFORMED)
    if payload.get("q") != fingerprint:
        raise _token_error(
            "was made for a different query; use a page token only with the same parent, filter and "
            "order_by it was returned for"
        )
    keys = payload.get("k")
    if not isinstance(keys, list) or len(keys) != len(key_types):
        raise _token_error(_MALFORMED)
    try:
        return tuple(_key_value(raw_key, key_type) for raw_key, key_type in zip(keys, key_types, strict=True))
    except ValueError:
        raise _token_error(_MALFORMED) from None


def check_page(
    v: Violations, page_size: int, page_token: str, fingerprint: str, key_types: Sequence[KeyType]
) -> tuple[int, tuple[KeyValue, ...] | None]:
    """The page size and the previous page's last key, their violations collected into `v` beside the
    list request's other fields."""
    size = v.collect(lambda: resolve_page_size(page_size), DEFAULT_PAGE_SIZE)
    last_key = v.collect(lambda: decode_page_token(page_token, fingerprint, key_types), None)
    return size, last_key


K = TypeVar("K", str, int)
Item = TypeVar("Item")


@dataclass(frozen=True)
class KeysetPage(Generic[K]):
    """One request for a page of a list in a fixed order of one unique key (an id, a number)."""

    size: int
    fingerprint: str
    # The key of the previous page's last item; None on the first page.
    after: K | None

    @property
    def fetch(self) -> int:
        """How many items to read: one more than the page, which only says whether a next page exists."""
        return self.size + 1

    def page(self, items: Sequence[Item], key: Callable[[Item], K]) -> tuple[tuple[Item, ...], str]:
        """The items to return and the next_page_token ("" on the last page)."""
        if len(items) <= self.size:
            return tuple(items), ""
        return tuple(items[: self.size]), encode_page_token(self.fingerprint, (key(items[self.size - 1]),))


def keyset_page(
    v: Violations, page_size: int, page_token: str, key_type: type[K], *scope: str
) -> KeysetPage[K]:
    """A list request in the order of one key, its token bound to `scope` (method, parent); a bad page size
    or token is collected into `v` beside the request's other fields (raise before using the page)."""
    fingerprint = query_fingerprint(*scope)
    size, last = check_page(v, page_size, page_token, fingerprint, (key_type,))
    if last is None:
        return KeysetPage(size, fingerprint, None)
    after = last[0]
    assert isinstance(after, key_type), "decode_page_token returns keys of the types asked for"
    return KeysetPage(size, fingerprint, after)


# ---------------------------------------------------------------------------------------------------------
# Keyset conditions and whole list plans


def keyset_condition(
    columns: Sequence[str], key: Sequence[KeyValue], *, descending: bool, first_param: int
) -> SqlFragment:
    """`(c1, c2) > ($n, $n+1)` (`<` when descending): the rows after `key` in ORDER BY c1, c2 order."""
    if not columns or len(columns) != len(key):
        raise ValueError("keyset_condition needs one key value per column")
    comparator = "<" if descending else ">"
    placeholders = [f"${first_param + i}" for i in range(len(columns))]
    if len(columns) == 1:
        return SqlFragment(f"{columns[0]} {comparator} {placeholders[0]}", tuple(key))
    return SqlFragment(
        f"({', '.join(columns)}) {comparator} ({', '.join(placeholders)})",
        tuple(key),
    )


class Row(Protocol):
    """What a selected row must offer (asyncpg.Record and dict both do)."""

    def __getitem__(self, key: str, /) -> Any: ...


R = TypeVar("R", bound=Row)


@dataclass(frozen=True)
class ListPlan:
    """Everything a store needs to run one page of a list:

    `SELECT ... WHERE {where} ORDER BY {order_sql} LIMIT {limit}` with `params`, then `page(rows)`.
    """

    where: str
    params: tuple[object, ...]
    order_sql: str
    limit: int
    page_size: int
    order: OrderBy
    fingerprint: str

    def next_page_token(self, last_row: Row) -> str:
        return encode_page_token(self.fingerprint, self.order.key_of(last_row))

    def page(self, rows: Sequence[R]) -> tuple[list[R], str]:
        """The page to return and its next_page_token ("" on the last page)."""
        if len(rows) <= self.page_size:
            return list(rows), ""
        kept = list(rows[: self.page_size])
        return kept, self.next_page_token(kept[-1])


def plan_list(
    *,
    filter_text: str,
    filter_schema: FilterSchema,
    order_by: str,
    order_schema: OrderSchema,
    page_size: int,
    page_token: str,
    scope: SqlFragment | None = None,
    scope_parts: Sequence[str] = (),
) -> ListPlan:
    """Validates and compiles one list request.

    `scope` is a condition every row must meet besides the filter (e.g. the parent); its placeholders
    start at $1. `scope_parts` (method name, parent) go into the fingerprint with the filter and the
    canonical order_by, so a token only continues the query it came from.
    """
    # Every bad field of the request is named at once; a token is checked only against a valid order_by,
    # which says what its keys are.
    v = Violations()
    size = v.collect(lambda: resolve_page_size(page_size), DEFAULT_PAGE_SIZE)
    parsed_order = v.collect(lambda: parse_order_by(order_by, order_schema), None)
    conditions: list[str] = []
    params: list[object] = []
    if scope is not None:
        conditions.append(scope.sql)
        params.extend(scope.params)
    first_param = len(params) + 1
    compiled = v.collect(lambda: compile_filter(filter_text, filter_schema, first_param=first_param), None)
    last_key = None
    fingerprint = ""
    if parsed_order is not None:
        order = parsed_order
        fingerprint = query_fingerprint(*scope_parts, filter_text, order.canonical)
        last_key = v.collect(lambda: decode_page_token(page_token, fingerprint, order.key_types), None)
    v.raise_if_any()
    # Both were read: raise_if_any raised otherwise.
    assert parsed_order is not None
    assert compiled is not None
    if compiled.sql != "TRUE":
        conditions.append(f"({compiled.sql})")
        params.extend(compiled.params)
    if last_key is not None:
        keyset = keyset_condition(
            order.columns, last_key, descending=order.descending, first_param=len(params) + 1
        )
        conditions.append(keyset.sql)
        params.extend(keyset.params)
    return ListPlan(
        where=" AND ".join(conditions) or "TRUE",
        params=tuple(params),
        order_sql=order.sql,
        limit=size + 1,
        page_size=size,
        order=order,
        fingerprint=fingerprint,
    )
