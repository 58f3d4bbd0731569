"""The SQL that registry filters, orders and page tokens compile to, run against the real registry schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from modelplane.server.pagination import ListPlan
from modelplane.server.registry.search import plan_model_list, plan_model_version_list
from modelplane.server.store.pool import Connection, Database


def _at(day: int, micros: int = 0) -> datetime:
    return datetime(2025, 1, day, tzinfo=UTC) + timedelta(microseconds=micros)


# id, display_name, description, provider, labels, create_time, update_time
MODELS = [
    ("gpt-4o", "GPT-4o", "Flagship omni model", "openai", {"team": "ml", "tier": "1"}, _at(1, 5), _at(20)),
    ("gpt-4o-mini", "GPT-4o mini", "Small and 50% cheaper", "openai", {"team": "apps"}, _at(2), _at(5)),
    ("claude", "Claude", "Careful_writer", "anthropic", {}, _at(3, 123456), _at(25)),
    ("llama_3", "", "", "meta", {"app.kubernetes.io/name": "llama"}, _at(3, 123456), _at(4)),
]

# model_id, version_id, capabilities, context_window, max_output_tokens, input, output, state, labels, created
VERSIONS = [
    ("gpt-4o", 1, ["chat", "tool_use"], 128000, 16384, 2500000, 10000000, "ready", {"stage": "ga"}, _at(10)),
    ("gpt-4o", 2, ["chat", "tool_use", "vision"], 128000, 16384, 2000000, 8000000, "deprecated", {}, _at(11)),
    ("gpt-4o-mini", 1, ["chat"], 128000, 16384, 150000, 600000, "ready", {"stage": "beta"}, _at(11)),
    ("claude", 1, ["chat", "tool_use", "reasoning"], 200000, 64000, 3000000, 15000000, "ready", {}, _at(12)),
    ("claude", 2, [], 100000, 4096, 1000, 1000, "archived", {}, _at(13, 999999)),
    ("llama_3", 1, ["completion"], 8192, 2048, 0, 0, "ready", {"stage": "ga"}, _at(14)),
    ("llama_3", 10, ["completion", "streaming"], 8192, 2048, 0, 0, "ready", {}, _at(14)),
]

# model_id, alias, version_id
ALIASES = [("gpt-4o", "prod", 2), ("gpt-4o", "canary", 1), ("claude", "prod", 1)]

ALL_MODELS = {m[0] for m in MODELS}
ALL_VERSIONS = {f"{v[0]}/{v[1]}" for v in VERSIONS}


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...
    def get(self, key: str, /) -> Any: ...


VERSION_SELECT = "SELECT v.*, m.provider FROM model_versions v JOIN models m ON m.id = v.model_id"


async def _seed(conn: Connection) -> None:
    await conn.executemany(
        "INSERT INTO models (id, display_name, description, provider, labels, create_time, update_time, etag)"
        " VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, 'e')",
        [(i, d, desc, p, json.dumps(lab), c, u) for i, d, desc, p, lab, c, u in MODELS],
    )
    await conn.executemany(
        "INSERT INTO model_versions (model_id, version_id, source_uri, capabilities, context_window,"
        " max_output_tokens, currency_code, input_price, output_price, state, labels, create_time,"
        " update_time, etag) VALUES ($1, $2, 's3://b/m', $3, $4, $5, 'USD', $6, $7, $8, $9::text::jsonb,"
        " $10, $10, 'e')",
        [(*v[:8], json.dumps(v[8]), v[9]) for v in VERSIONS],
    )
    await conn.executemany(
        "INSERT INTO model_aliases (model_id, alias, version_id, update_time, updated_by)"
        " VALUES ($1, $2, $3, now(), 'test')",
        ALIASES,
    )


@pytest.fixture
async def seeded(database: Database) -> Database:
    async with database.transaction() as conn:
        await _seed(conn)
    return database


async def _models(db: Database, plan: ListPlan) -> list[str]:
    sql = f"SELECT m.* FROM models m WHERE {plan.where} ORDER BY {plan.order_sql} LIMIT {plan.limit}"
    async with db.connection() as conn:
        return [row["id"] for row in await conn.fetch(sql, *plan.params)]


async def _versions(db: Database, plan: ListPlan) -> list[str]:
    sql = f"{VERSION_SELECT} WHERE {plan.where} ORDER BY {plan.order_sql} LIMIT {plan.limit}"
    async with db.connection() as conn:
        return [f"{row['model_id']}/{row['version_id']}" for row in await conn.fetch(sql, *plan.params)]


MODEL_CASES = [
    ("", ALL_MODELS),
    ('name = "models/gpt-4o"', {"gpt-4o"}),
    ("name != models/gpt-4o", ALL_MODELS - {"gpt-4o"}),
    ('name = "models/gpt*"', {"gpt-4o", "gpt-4o-mini"}),
    ("name = models/llama_*", {"llama_3"}),
    # "_" in a prefix is literal, not LIKE's any-character.
    ("name = models/gpt_*", set()),
    ("display_name:mini", {"gpt-4o-mini"}),
    ("display_name:GPT", {"gpt-4o", "gpt-4o-mini"}),
    ('display_name = "GPT-4o"', {"gpt-4o"}),
    ("display_name:*", ALL_MODELS - {"llama_3"}),
    ("description:FLAGSHIP", {"gpt-4o"}),
    ('description:"50%"', {"gpt-4o-mini"}),
    ("description:_", {"claude"}),
    ("provider = openai", {"gpt-4o", "gpt-4o-mini"}),
    ("provider != openai", {"claude", "llama_3"}),
    ("labels.team = ml", {"gpt-4o"}),
    ("labels.team != ml", ALL_MODELS - {"gpt-4o"}),
    ("NOT labels.team = ml", ALL_MODELS - {"gpt-4o"}),
    ("labels.team:*", {"gpt-4o", "gpt-4o-mini"}),
    ("labels:team", {"gpt-4o", "gpt-4o-mini"}),
    ("-labels:team", {"claude", "llama_3"}),
    ("labels:*", ALL_MODELS - {"claude"}),
    ("labels.tier = 1", {"gpt-4o"}),
    ("labels.app.kubernetes.io/name = llama", {"llama_3"}),
    ('create_time >= "2025-01-03T00:00:00Z"', {"claude", "llama_3"}),
    ('create_time = "2025-01-03T00:00:00.123456Z"', {"claude", "llama_3"}),
    ('create_time < "2025-01-01T01:00:01+01:00"', {"gpt-4o"}),
    ('update_time > "2025-01-10T00:00:00Z" provider = openai', {"gpt-4o"}),
    ("provider = openai OR provider = meta labels:team", {"gpt-4o", "gpt-4o-mini"}),
    ("provider = anthropic AND labels:team OR provider = meta", set()),
    ("(provider = anthropic AND -labels:team) OR provider = meta", {"claude", "llama_3"}),
    ("provider = meta OR (display_name:gpt AND NOT labels.team = apps)", {"llama_3", "gpt-4o"}),
    ('display_name = "x\' OR 1=1 --"', set()),
]


async def test_model_filters_select_the_right_rows(seeded: Database) -> None:
    # One seeded database for the whole table; every mismatch is reported at once.
    wrong: dict[str, set[str]] = {}
    for text, expected in MODEL_CASES:
        plan = plan_model_list(filter_text=text, order_by="", page_size=100, page_token="")
        selected = set(await _models(seeded, plan))
        if selected != expected:
            wrong[text] = selected
    assert wrong == {}


VERSION_CASES = [
    ("", ALL_VERSIONS),
    ("model = models/claude", {"claude/1", "claude/2"}),
    ("model = models/gpt-4o*", {"gpt-4o/1", "gpt-4o/2", "gpt-4o-mini/1"}),
    ("model != models/claude", ALL_VERSIONS - {"claude/1", "claude/2"}),
    ("provider = openai", {"gpt-4o/1", "gpt-4o/2", "gpt-4o-mini/1"}),
    ("state = READY", ALL_VERSIONS - {"gpt-4o/2", "claude/2"}),
    ("state = model_version_state_archived", {"claude/2"}),
    ("state != ready", {"gpt-4o/2", "claude/2"}),
    ("capabilities:tool_use", {"gpt-4o/1", "gpt-4o/2", "claude/1"}),
    ("capabilities:CAPABILITY_VISION", {"gpt-4o/2"}),
    ("capabilities:chat -capabilities:tool_use", {"gpt-4o-mini/1"}),
    ("capabilities:*", ALL_VERSIONS - {"claude/2"}),
    ("alias:prod", {"gpt-4o/2", "claude/1"}),
    ('alias = "canary"', {"gpt-4o/1"}),
    ("alias != prod", ALL_VERSIONS - {"gpt-4o/2", "claude/1"}),
    ("alias:*", {"gpt-4o/1", "gpt-4o/2", "claude/1"}),
    ("-alias:*", ALL_VERSIONS - {"gpt-4o/1", "gpt-4o/2", "claude/1"}),
    ("labels.stage = ga", {"gpt-4o/1", "llama_3/1"}),
    ("labels.stage:*", {"gpt-4o/1", "gpt-4o-mini/1", "llama_3/1"}),
    ("context_window >= 128000", {"gpt-4o/1", "gpt-4o/2", "gpt-4o-mini/1", "claude/1"}),
    ("context_window = 8192", {"llama_3/1", "llama_3/10"}),
    ("max_output_tokens < 4096", {"llama_3/1", "llama_3/10"}),
    ("input_price > 2000000", {"gpt-4o/1", "claude/1"}),
    ("output_price <= 600000 output_price != 0", {"gpt-4o-mini/1", "claude/2"}),
    ('create_time > "2025-01-13T00:00:00Z"', {"claude/2", "llama_3/1", "llama_3/10"}),
    (
        "capabilities:chat AND context_window >= 128000 AND (output_price < 9000000 OR alias:prod)",
        {"gpt-4o/2", "gpt-4o-mini/1", "claude/1"},
    ),
]


async def test_version_filters_select_the_right_rows(seeded: Database) -> None:
    wrong: dict[str, set[str]] = {}
    for text, expected in VERSION_CASES:
        plan = plan_model_version_list(
            model_id=None, filter_text=text, order_by="", page_size=100, page_token=""
        )
        selected = set(await _versions(seeded, plan))
        if selected != expected:
            wrong[text] = selected
    assert wrong == {}


async def test_version_filters_stay_under_their_parent(seeded: Database) -> None:
    plan = plan_model_version_list(
        model_id="gpt-4o", filter_text="capabilities:chat", order_by="version_id", page_size=10, page_token=""
    )
    assert await _versions(seeded, plan) == ["gpt-4o/1", "gpt-4o/2"]


def _row_id(row: Row) -> str:
    """A model's id, or "model/n" for a version row."""
    if row.get("version_id") is not None:
        return f"{row['model_id']}/{row['version_id']}"
    return str(row["id"])


async def _walk(
    db: Database, make_plan: Callable[[int, str], ListPlan], page_size: int, select: str
) -> list[str]:
    """Follows next_page_token to the end and returns every row in the order served."""
    served: list[str] = []
    token = ""
    for _ in range(50):
        plan = make_plan(page_size, token)
        async with db.connection() as conn:
            rows = await conn.fetch(
                f"{select} WHERE {plan.where} ORDER BY {plan.order_sql} LIMIT {plan.limit}", *plan.params
            )
        page, token = plan.page(rows)
        assert len(page) <= page_size
        served.extend(_row_id(row) for row in page)
        if not token:
            return served
    raise AssertionError("pagination did not end")


async def test_model_pages_cover_every_row_once_in_order(seeded: Database) -> None:
    for order_by in ("", "name", "name desc", "create_time", "create_time desc", "update_time"):

        def make_plan(size: int, token: str, order_by: str = order_by) -> ListPlan:
            return plan_model_list(filter_text="", order_by=order_by, page_size=size, page_token=token)

        whole = await _models(seeded, make_plan(1000, ""))
        assert set(whole) == ALL_MODELS
        for page_size in (1, 2, 3):
            assert await _walk(seeded, make_plan, page_size, "SELECT m.* FROM models m") == whole, order_by


async def test_version_pages_cover_every_row_once_in_order(seeded: Database) -> None:
    orders = ("", "create_time desc", "version_id", "version_id desc", "context_window", "output_price desc")
    for order_by in orders:

        def make_plan(size: int, token: str, order_by: str = order_by) -> ListPlan:
            return plan_model_version_list(
                model_id=None,
                filter_text="-state = archived",
                order_by=order_by,
                page_size=size,
                page_token=token,
            )

        whole = await _versions(seeded, make_plan(1000, ""))
        assert set(whole) == ALL_VERSIONS - {"claude/2"}
        for page_size in (1, 2, 4):
            assert await _walk(seeded, make_plan, page_size, VERSION_SELECT) == whole, order_by


async def test_ties_on_the_sort_field_are_broken_by_the_unique_key(seeded: Database) -> None:
    # claude and llama_3 share a create_time to the microsecond; paging one row at a time must not
    # skip or repeat either of them.
    def make_plan(size: int, token: str) -> ListPlan:
        return plan_model_list(
            filter_text='create_time >= "2025-01-03T00:00:00Z"',
            order_by="create_time desc",
            page_size=size,
            page_token=token,
        )

    assert await _walk(seeded, make_plan, 1, "SELECT m.* FROM models m") == ["llama_3", "claude"]


async def test_version_order_sorts_by_its_field_then_sort_key(seeded: Database) -> None:
    plan = plan_model_version_list(
        model_id=None, filter_text="", order_by="version_id", page_size=100, page_token=""
    )
    served = await _versions(seeded, plan)
    numbers = [int(name.rpartition("/")[2]) for name in served]
    assert numbers == sorted(numbers)
    assert served[-1] == "llama_3/10"
