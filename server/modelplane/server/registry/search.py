"""What ListModels and ListModelVersions may filter and sort on, and how each becomes SQL.

ListModels selects FROM models m; ListModelVersions selects FROM model_versions v JOIN models m ON
m.id = v.model_id. The filter language itself is described in modelplane.server.filters.
"""

from __future__ import annotations

from datetime import datetime

from modelplane.server.filters import (
    FilterSchema,
    SqlFragment,
    enum_field,
    integer_field,
    linked_text_field,
    map_field,
    resource_name_field,
    text_field,
    timestamp_field,
)
from modelplane.server.pagination import ListPlan, OrderField, OrderSchema, plan_list
from modelplane.server.registry.domain import CAPABILITIES, VersionState

MODEL_NAME_PREFIX = "models/"

# A filter names an enum value as the contract spells it without its prefix (`capabilities:TOOL_USE`);
# the SQL compares the stored form. tests/unit/test_registry_vocabulary.py holds both to the contract.
CAPABILITY_FILTER_VALUES = {capability.upper(): capability for capability in CAPABILITIES}
VERSION_STATE_FILTER_VALUES = {state.name: state.value for state in VersionState}

MODEL_FILTER = FilterSchema(
    [
        resource_name_field("name", "m.id", prefix=MODEL_NAME_PREFIX),
        text_field("display_name", "m.display_name"),
        text_field("description", "m.description"),
        text_field("provider", "m.provider", operators={"=", "!="}),
        map_field("labels", "m.labels"),
        timestamp_field("create_time", "m.create_time"),
        timestamp_field("update_time", "m.update_time"),
    ]
)

VERSION_FILTER = FilterSchema(
    [
        resource_name_field("model", "v.model_id", prefix=MODEL_NAME_PREFIX),
        text_field("provider", "m.provider", operators={"=", "!="}),
        enum_field("state", "v.state", VERSION_STATE_FILTER_VALUES, prefix="MODEL_VERSION_STATE_"),
        enum_field(
            "capabilities", "v.capabilities", CAPABILITY_FILTER_VALUES, prefix="CAPABILITY_", list_column=True
        ),
        linked_text_field(
            "alias",
            "EXISTS (SELECT 1 FROM model_aliases a WHERE a.model_id = v.model_id"
            " AND a.version_id = v.version_id AND a.alias = {value})",
            any_sql="EXISTS (SELECT 1 FROM model_aliases a WHERE a.model_id = v.model_id"
            " AND a.version_id = v.version_id)",
        ),
        map_field("labels", "v.labels"),
        integer_field("context_window", "v.context_window"),
        integer_field("max_output_tokens", "v.max_output_tokens"),
        integer_field("input_price", "v.input_price"),
        integer_field("output_price", "v.output_price"),
        timestamp_field("create_time", "v.create_time"),
    ]
)

MODEL_ORDER = OrderSchema(
    fields={
        "name": OrderField("m.id", str),
        "create_time": OrderField("m.create_time", datetime),
        "update_time": OrderField("m.update_time", datetime),
    },
    default="name",
    tiebreak=OrderField("m.id", str),
)

VERSION_ORDER = OrderSchema(
    fields={
        "create_time": OrderField("v.create_time", datetime),
        "version_id": OrderField("v.version_id", int),
        "context_window": OrderField("v.context_window", int),
        "output_price": OrderField("v.output_price", int),
    },
    default="create_time",
    # sort_key is "model/0000000000000000042": unique, so every order is total.
    tiebreak=OrderField("v.sort_key", str),
)


def plan_model_list(*, filter_text: str, order_by: str, page_size: int, page_token: str) -> ListPlan:
    """One page of ListModels: `SELECT m.* FROM models m WHERE {where} ORDER BY {order_sql} LIMIT {limit}`."""
    return plan_list(
        filter_text=filter_text,
        filter_schema=MODEL_FILTER,
        order_by=order_by,
        order_schema=MODEL_ORDER,
        page_size=page_size,
        page_token=page_token,
        scope_parts=("ListModels",),
    )


def plan_model_version_list(
    *, model_id: str | None, filter_text: str, order_by: str, page_size: int, page_token: str
) -> ListPlan:
    """One page of ListModelVersions under one model, or under every model when `model_id` is None
    (parent "models/-"): `SELECT v.*, m.provider FROM model_versions v JOIN models m ON m.id = v.model_id
    WHERE {where} ORDER BY {order_sql} LIMIT {limit}`."""
    scope = None if model_id is None else SqlFragment("v.model_id = $1", (model_id,))
    parent = "models/-" if model_id is None else MODEL_NAME_PREFIX + model_id
    return plan_list(
        filter_text=filter_text,
        filter_schema=VERSION_FILTER,
        order_by=order_by,
        order_schema=VERSION_ORDER,
        page_size=page_size,
        page_token=page_token,
        scope=scope,
        scope_parts=("ListModelVersions", parent),
    )
