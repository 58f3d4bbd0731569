"""The log ingestion's hot path (rows.batch_rows) agrees with the long way (full conversion, then
validation): every event the hot path takes, the long way takes too and stores the same row; every NUL
character is refused by the path of its field, as the interceptor refuses it in any other request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.logs import convert, rows, validation
from modelplane.server.logs.columns import domain_row
from modelplane.server.logs.domain import RowBatch
from modelplane.server.nul_characters import refuse_nul_characters
from modelplane.server.proto_time import MAX_DURATION_SECONDS, MAX_SECONDS, MIN_SECONDS
from modelplane.v1 import common_pb2, guardrails_pb2
from modelplane.v1 import logs_pb2 as pb

INT64_MAX = 2**63 - 1
NOW = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())


def _valid(kind: str) -> pb.LogEvent:
    event = pb.LogEvent(
        event_id="e-1",
        service="llm-client",
        instance="pod-1",
        level=pb.LOG_LEVEL_INFO,
        message="hello",
        links=common_pb2.EventLinks(trace_id="t1", request_id="r1"),
    )
    event.event_time.FromSeconds(NOW)
    event.attributes["region"] = "eu"
    if kind == "inference":
        event.inference.provider = "local"
        event.inference.model_version = "models/chat/versions/1"
        event.inference.input_tokens = 10
        event.inference.output_tokens = 5
        event.inference.latency.FromMilliseconds(120)
        event.inference.cost.currency_code = "USD"
        event.inference.cost.micros = 42
        event.inference.status = pb.INFERENCE_STATUS_OK
    elif kind == "routing":
        event.routing.deployment = "deployments/chat"
        event.routing.rollout = "r-1"
        event.routing.slot = common_pb2.TRAFFIC_SLOT_CANARY
        event.routing.endpoint = "http://10.0.0.1:8000"
        event.routing.outcome = pb.ROUTING_OUTCOME_OK
        event.routing.latency.FromMilliseconds(3)
    elif kind == "guardrail":
        event.guardrail.policy = "policies/default"
        event.guardrail.revision = 2
        event.guardrail.decision = guardrails_pb2.DECISION_BLOCK
        event.guardrail.violation_count = 1
        event.guardrail.highest_severity = guardrails_pb2.SEVERITY_CRITICAL
    elif kind == "control_plane_change":
        event.control_plane_change.resource = "models/chat/aliases/production"
        event.control_plane_change.action = "move"
        event.control_plane_change.actor = "deployer"
        event.control_plane_change.revision = 7
    return event


# Kinds a client may send; control_plane_change is the server's own, and near-valid events include it.
CLIENT_KINDS = ["message", "inference", "routing", "guardrail"]
KINDS = [*CLIENT_KINDS, "control_plane_change"]


def _paths(descriptor: Descriptor, prefix: str = "") -> list[tuple[str, FieldDescriptor]]:
    """Every scalar field under `descriptor` (maps and Timestamp/Duration parts included) with its path."""
    found: list[tuple[str, FieldDescriptor]] = []
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            found += _paths(field.message_type, f"{path}.")
        else:
            found.append((path, field))
    return found


EVENT_FIELDS = _paths(pb.LogEvent.DESCRIPTOR)
STRING_PATHS = [path for path, field in EVENT_FIELDS if field.type == FieldDescriptor.TYPE_STRING]

TEXTS = st.one_of(
    st.sampled_from(["", "a", "A", "ok-name", "é", "Ä", "a b", "\x00", "x\x00y", "models/chat/versions/1"]),
    st.sampled_from([62, 63, 64, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025]).map(lambda n: "a" * n),
    st.text(max_size=8),
)
INTEGERS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 999_999, 1_000_000, 999_999_999, 1_000_000_000, INT64_MAX, -(2**63)]),
    st.sampled_from([MIN_SECONDS, MIN_SECONDS - 1, MAX_SECONDS, MAX_SECONDS + 1]),
    st.sampled_from([MAX_DURATION_SECONDS, MAX_DURATION_SECONDS + 1, NOW, NOW + 1]),
    st.integers(-(2**63), INT64_MAX),
)
ENUMS = st.integers(0, 9)


def _value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.message_type is not None:  # a map<string, string>
        return st.dictionaries(TEXTS, TEXTS, max_size=3)
    if field.type == FieldDescriptor.TYPE_STRING:
        return TEXTS
    if field.type == FieldDescriptor.TYPE_ENUM:
        return ENUMS
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32):
        return (
            st.integers(-(2**31), 2**31 - 1)
            if field.cpp_type == FieldDescriptor.CPPTYPE_INT32
            else (st.integers(0, 2**32 - 1))
        )
    return INTEGERS


def _set(message: Any, path: str, value: Any) -> bool:
    """Sets the field at `path`; False when the value does not fit its type (nothing set)."""
    *parents, name = path.split(".")
    for part in parents:
        message = getattr(message, part)
    try:
        if isinstance(value, dict):
            target = getattr(message, name)
            target.clear()
            target.update(value)
        else:
            setattr(message, name, value)
    except (ValueError, TypeError):
        return False
    return True


@st.composite
def near_valid_events(draw: st.DrawFn) -> pb.LogEvent:
    event = _valid(draw(st.sampled_from(KINDS)))
    for path, field in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=3)):
        _set(event, path, draw(_value(field)))
    return event


def _long_way_row(message: pb.LogEvent) -> tuple[object, ...] | None:
    """The row the long way stores for the event, or None when it refuses it (the time window aside)."""
    try:
        refuse_nul_characters(message)
    except InvalidArgument:
        return None
    found: list[FieldViolation] = []
    domain = convert.event(message, "e", found)
    if found:
        return None
    # A clock that puts the event inside the window (the hot path leaves the window to the service), and
    # stays within datetime's range at both ends of time.
    moment = domain.event_time
    now = moment - validation.MAX_FUTURE_SKEW if moment.year > 1 else moment
    checked = validation.checked_event(domain, "e", now=now, oldest=None, found=found)
    if found:
        return None
    return domain_row(checked)


def _hot_row(message: pb.LogEvent) -> tuple[object, ...] | None:
    """The row the hot path makes of the event; None when it leaves the event to the long way."""
    try:
        converted = rows.batch_rows(pb.LogBatch(events=[message]), "batch", client_required=False)
    except InvalidArgument:
        return None
    return converted.rows[0] if isinstance(converted, RowBatch) else None


@settings(max_examples=3000, deadline=None)
@given(event=near_valid_events())
def test_what_the_hot_path_takes_the_long_way_takes_and_stores_alike(event: pb.LogEvent) -> None:
    hot = _hot_row(event)
    if hot is not None:
        assert _long_way_row(event) == hot


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_the_hot_path_takes_every_kind_of_valid_event(kind: str) -> None:
    event = _valid(kind)
    assert _hot_row(event) is not None
    assert _hot_row(event) == _long_way_row(event)


def _kind_of(path: str) -> str:
    head = path.split(".")[0]
    return head if head in KINDS else "inference"


@pytest.mark.parametrize("path", STRING_PATHS)
def test_a_nul_character_in_any_text_is_refused_by_its_path(path: str) -> None:
    event = _valid(_kind_of(path))
    assert _set(event, path, "be\x00fore")
    with pytest.raises(InvalidArgument) as raised:
        rows.batch_rows(pb.LogBatch(events=[event]), "batch", client_required=False)
    assert [v.field for v in raised.value.violations] == [f"batch.events[0].{path}"]


def test_a_nul_character_in_an_attribute_is_refused_by_its_path() -> None:
    for key, value, where in [("region", "e\x00u", "['region']"), ("re\x00gion", "eu", "")]:
        event = _valid("message")
        event.attributes.clear()
        event.attributes[key] = value
        with pytest.raises(InvalidArgument) as raised:
            rows.batch_rows(pb.LogBatch(events=[event]), "batch", client_required=False)
        assert [v.field for v in raised.value.violations] == [f"batch.events[0].attributes{where}"]


def _server_id(event: pb.LogEvent) -> None:
    event.event_id = "revision-999-0"


def _server_service(event: pb.LogEvent) -> None:
    event.service = "modelplane"


@pytest.mark.parametrize(
    ("kind", "forge", "field"),
    [
        ("control_plane_change", lambda e: None, "control_plane_change"),
        ("message", _server_id, "event_id"),
        ("message", _server_service, "service"),
    ],
)
def test_what_passes_for_a_control_plane_event_takes_neither_path(kind: str, forge: Any, field: str) -> None:
    event = _valid(kind)
    forge(event)
    assert _hot_row(event) is None
    converted = rows.batch_rows(
        pb.LogBatch(events=[_valid("message"), event]), "batch", client_required=False
    )
    assert not isinstance(converted, RowBatch)
    found: list[FieldViolation] = []
    for i, item in enumerate(converted.events):
        validation.checked_event(item, f"batch.events[{i}]", now=item.event_time, oldest=None, found=found)
    assert [v.field for v in found] == [f"batch.events[1].{field}"]


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("inference", "inference.model_version"),
        ("routing", "routing.deployment"),
        ("guardrail", "guardrail.policy"),
    ],
)
def test_a_payload_field_that_fills_a_link_follows_the_link_rule(kind: str, path: str) -> None:
    # Stored in the link's column, so held to the link's length on both paths.
    event = _valid(kind)
    assert _set(event, path, "x" * 257)
    assert _hot_row(event) is None
    assert _long_way_row(event) is None
