"""HTTP request -> request message, and response message -> JSON, by the proto3 JSON mapping.

Path variables, query parameters and the body fill one JSON object that `json_format` parses, so every
value is read the way any proto JSON client writes it (lowerCamelCase or proto names, int64 as strings,
Timestamps as RFC 3339, enums by name). A value that does not parse is an InvalidArgument naming the
field's path in proto names ("model.labels", "batch.events[3].level"), never an internal error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from modelplane.server.errors import InvalidArgument
from modelplane.server.http.routes import Route
from modelplane.v1.error_reason_pb2 import ErrorReason

MALFORMED = ErrorReason.ERROR_REASON_MALFORMED_REQUEST
# The pseudo field path of the body itself, when it is not JSON or not an object.
BODY = "body"
# Most query parameters one request may carry, and the deepest JSON nesting parsed: a bound on work.
MAX_QUERY_PARAMETERS = 100
MAX_DEPTH = 32
# Messages read as one JSON value (a string, mostly) rather than as an object of fields.
_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        *(
            f"google.protobuf.{kind}Value"
            for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
        ),
    }
)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")


def _joined(path: str, name: str) -> str:
    """`name` (a client's, not a field's) under `path`, quoted unless it looks like a field name, so that a
    path is never blank or made of control characters."""
    if _NAME.fullmatch(name):
        return f"{path}.{name}" if path else name
    return f"{path}[{json.dumps(name[:100])}]" if path else json.dumps(name[:100])


def _malformed(path: str, description: str) -> InvalidArgument:
    return InvalidArgument.field(path, description, reason=MALFORMED)


def parse_body(raw: bytes) -> Any:
    """The body's JSON value; InvalidArgument on anything that is not JSON."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and bad JSON alike; the position helps find the mistake.
        raise _malformed(BODY, f"the body is not valid JSON ({exc}); send a JSON object") from None


def build_request(
    route: Route,
    path_values: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: Any,
) -> Message:
    """The request message of `route` from its path variables, query parameters and parsed body."""
    descriptor: Descriptor = route.method.input_type
    if route.body == "*":
        if not isinstance(body, dict):
            raise _malformed(BODY, "the body must be a JSON object of the request's fields")
        document: dict[str, Any] = body
        if query:
            name = _joined("", query[0][0])
            raise _malformed(name, "this method takes its fields in the JSON body, not in the query string")
    else:
        document = {}
        if route.body:
            _place(document, descriptor, route.body, body, from_query=False)
        elif body not in ({}, None):
            raise _malformed(BODY, f"{route.http_method} {route.template.text} takes no body")
        if len(query) > MAX_QUERY_PARAMETERS:
            raise _malformed(
                query[MAX_QUERY_PARAMETERS][0], f"at most {MAX_QUERY_PARAMETERS} query parameters"
            )
        _place_query(document, descriptor, query, set(path_values))
    for path, value in path_values.items():
        _place(document, descriptor, path, value, from_query=True)
    message: Message = GetMessageClass(descriptor)()
    try:
        json_format.ParseDict(document, message, max_recursion_depth=MAX_DEPTH)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        where = locate_error(document, descriptor) or BODY
        raise _malformed(where, _describe(exc)) from None
    return message


_NESTING = re.compile(r"Failed to parse \w+ field: ")


def _describe(exc: Exception) -> str:
    """json_format's reason without the chain of fields it was found in (the field path says that)."""
    text = _NESTING.sub("", str(exc).split("\n", 1)[0]).rstrip(".")
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{text}; the request's fields and their JSON types are in /openapi.json"


def _place_query(
    document: dict[str, Any], descriptor: Descriptor, query: Sequence[tuple[str, str]], taken: set[str]
) -> None:
    repeated: dict[str, list[str]] = {}
    for name, value in query:
        fields = _field_path(descriptor, name)
        if fields is None:
            raise _malformed(_joined("", name), f"{descriptor.name} has no field {name[:100]!r}")
        path = ".".join(f.name for f in fields)
        if path in taken:
            raise _malformed(path, "this field is set by the URL path; leave it out of the query")
        last = fields[-1]
        if last.message_type is not None and last.message_type.full_name not in _WELL_KNOWN:
            raise _malformed(path, "set this message's fields one by one, e.g. ?field.subfield=value")
        if last.is_repeated:
            repeated.setdefault(path, []).append(value)
        else:
            _place(document, descriptor, path, _query_value(last, value), from_query=True)
    for path, values in repeated.items():
        along = _field_path(descriptor, path)
        assert along is not None
        _place(document, descriptor, path, [_query_value(along[-1], v) for v in values], from_query=True)


def _query_value(field: FieldDescriptor, value: str) -> Any:
    """A query string's text as the JSON value its field takes: JSON wants true/false for a bool, and
    accepts strings for every number, enum and well-known message."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = value.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    return value


def _field_path(descriptor: Descriptor, dotted: str) -> list[FieldDescriptor] | None:
    """The fields along a dotted path whose parts are proto or JSON names; None when one is unknown."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in dotted.split("."):
        if current is None:
            return None
        found = _field_named(current, part)
        if found is None:
            return None
        fields.append(found)
        current = found.message_type if not _is_map(found) else None
    return fields


def _field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    found: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == name), None)
    return found


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def _place(
    document: dict[str, Any], descriptor: Descriptor, dotted: str, value: Any, *, from_query: bool
) -> None:
    """Sets document[...dotted path...] = value, reusing the key a client already used for a field (its
    proto or its JSON name), so a path variable and a body never name one field twice."""
    fields = _field_path(descriptor, dotted)
    if fields is None:
        raise _malformed(dotted, f"{descriptor.name} has no field {dotted!r}")
    node = document
    for i, f in enumerate(fields):
        key = next((k for k in (f.name, f.json_name) if k in node), f.name)
        if i == len(fields) - 1:
            node[key] = value
            return
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            path = ".".join(x.name for x in fields[: i + 1])
            raise _malformed(path, "must be a JSON object")
        node = child


def locate_error(value: Any, descriptor: Descriptor, path: str = "") -> str | None:
    """The proto path of the first value in `value` that `descriptor` cannot take, or None.

    json_format's messages name a field but not always its whole path; this walk finds the path by
    parsing each leaf alone into its parent message, the same parser deciding."""
    if not isinstance(value, dict):
        return path or BODY
    seen_oneofs: set[str] = set()
    seen_fields: set[str] = set()
    for key, item in value.items():
        field = _field_named(descriptor, key)
        if field is None:
            return _joined(path, key)
        here = f"{path}.{field.name}" if path else field.name
        if field.name in seen_fields:
            return here
        seen_fields.add(field.name)
        if field.containing_oneof is not None and item is not None:
            if field.containing_oneof.name in seen_oneofs:
                return here
            seen_oneofs.add(field.containing_oneof.name)
        if item is None:
            continue
        found = _locate_field(field, item, here, descriptor, key)
        if found is not None:
            return found
    return None


def _locate_field(field: FieldDescriptor, item: Any, here: str, parent: Descriptor, key: str) -> str | None:
    nested = field.message_type
    if _is_map(field):
        assert nested is not None
        if not isinstance(item, dict):
            return here
        map_value = nested.fields_by_name["value"]
        for map_key, map_item in item.items():
            at = f"{here}[{map_key!r}]"
            if map_value.message_type is not None and map_value.message_type.full_name not in _WELL_KNOWN:
                found = locate_error(map_item, map_value.message_type, at)
                if found is not None:
                    return found
            elif not _parses(parent, {key: {map_key: map_item}}):
                return at
        return None
    if field.is_repeated:
        if not isinstance(item, list):
            return here
        for index, element in enumerate(item):
            at = f"{here}[{index}]"
            if nested is not None and nested.full_name not in _WELL_KNOWN:
                found = locate_error(element, nested, at)
                if found is not None:
                    return found
            elif element is None or not _parses(parent, {key: [element]}):
                return at
        return None
    if nested is not None and nested.full_name not in _WELL_KNOWN:
        return locate_error(item, nested, here)
    return None if _parses(parent, {key: item}) else here


def _parses(descriptor: Descriptor, document: dict[str, Any]) -> bool:
    try:
        json_format.ParseDict(document, GetMessageClass(descriptor)(), max_recursion_depth=MAX_DEPTH)
    except (json_format.ParseError, RecursionError, ValueError, TypeError):
        return False
    return True


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON of a message as grpc-gateway writes it: lowerCamelCase names, every field present
    (zero values included, so a client never tells "absent" from "empty"), int64 as strings."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=False
    )
    return result


def response_json(route: Route, message: Message) -> dict[str, Any] | Any:
    """The body of a response: the whole message, or the field the rule's response_body names."""
    if not route.response_body:
        return to_json(message)
    whole = to_json(message)
    field = message.DESCRIPTOR.fields_by_name[route.response_body]
    return whole.get(field.json_name)
