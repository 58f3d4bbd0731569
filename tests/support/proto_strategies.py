"""Hypothesis strategies that draw any protobuf message from its descriptor, to fuzz a service's RPCs.

`ProtoStrategies` draws the messages: strings by field name, integers up to their type's extremes, enums with
numbers no version of the contract knows, maps, repeated fields, well-known types and field masks. A module
configures it with what differs between services; the text, filter and page-token strategies here are the
pieces its per-field strings are made of.
"""

from __future__ import annotations

import base64
import dataclasses
import string
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

# The values each integer type of protobuf holds, by FieldDescriptor type.
INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SINT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SFIXED64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_INT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SINT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SFIXED32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_UINT32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_FIXED32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_UINT64: (0, UINT64_MAX),
    FieldDescriptor.TYPE_FIXED64: (0, UINT64_MAX),
}


# ---------------------------------------------------------------------------------------------------------
# Text

# Everything but lone surrogates, which a protobuf string cannot hold. NUL is in: Postgres text cannot hold
# it, so it must be refused by field path before it gets there.
UNICODE = st.characters(exclude_categories=["Cs"])

small_text = st.text(UNICODE, max_size=40)
ascii_text = st.text(string.printable, max_size=40)
huge_text = st.builds(lambda char, count: char * count, UNICODE, st.integers(1_000, 120_000))
# Blanks, NUL, wildcards, separators, quotes, a backslash, two- and four-byte characters, a right-to-left
# override and a byte-order mark.
SPECIAL_TEXTS = (
    "",
    " ",
    "\t",
    "\x00",
    "*",
    "-",
    "/",
    "%",
    "_",
    "'",
    '"',
    "\\",
    "é",
    "\U0001d54f",
    "\u202e",
    "\ufeff",
)


def any_texts(special: Sequence[str] = SPECIAL_TEXTS) -> st.SearchStrategy[str]:
    """Short unicode and printable text, one of `special`, or one character repeated up to 120,000 times."""
    return st.one_of(small_text, ascii_text, st.sampled_from(special), huge_text)


any_text = any_texts()


# ---------------------------------------------------------------------------------------------------------
# Filters and page tokens

FILTER_OPERATORS = ["=", "!=", "<", "<=", ">", ">=", ":", "==", "~"]


def quoted(text: str) -> str:
    """`text` as a string literal of a filter."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filters_over(
    fields: Sequence[str],
    values: Sequence[str],
    *,
    nested: str,
    malformed: Sequence[str],
    any_text: st.SearchStrategy[str] = any_text,
) -> st.SearchStrategy[str]:
    """Filter expressions over `fields`, and text that only looks like one.

    Comparisons with each operator of `values`, quoted text or integers just beyond int64 are joined by AND,
    OR, juxtaposition, NOT, "-" and parentheses; the valid comparison `nested` sits in up to 60 parentheses;
    then the `malformed` expressions, and any text.
    """
    literals = st.one_of(
        st.sampled_from(values),
        st.builds(quoted, small_text),
        st.integers(INT64_MIN - 10, INT64_MAX + 10).map(str),
    )
    comparisons = st.builds(
        "{}{}{}{}{}".format,
        st.sampled_from(fields),
        st.sampled_from(["", " "]),
        st.sampled_from(FILTER_OPERATORS),
        st.sampled_from(["", " "]),
        literals,
    )
    return st.one_of(
        st.recursive(
            comparisons,
            lambda inner: st.one_of(
                st.builds("({})".format, inner),
                st.builds("{} AND {}".format, inner, inner),
                st.builds("{} OR {}".format, inner, inner),
                st.builds("{} {}".format, inner, inner),
                st.builds("NOT {}".format, inner),
                st.builds("-{}".format, inner),
            ),
            max_leaves=8,
        ),
        st.integers(1, 60).map(lambda depth: "(" * depth + nested + ")" * depth),
        st.sampled_from(malformed),
        any_text,
    )


def mutated(token: str, position: int, char: str) -> str:
    """`token` with its character at `position` (modulo its length) replaced by `char`."""
    if not token:
        return char
    index = position % len(token)
    return token[:index] + char + token[index + 1 :]


def page_tokens_from(
    real: Sequence[str], *, any_text: st.SearchStrategy[str] = any_text, unpadded: bool = False
) -> st.SearchStrategy[str]:
    """Tokens the server made, the same with one character changed, and forged ones.

    `real` is read at the first draw, so a module can fill it once its server has been seeded. The forged
    tokens are base64 of random bytes (also without its padding, when `unpadded`), base64 of JSON of the
    wrong shape, and any text.
    """
    encoded = [st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode())]
    if unpadded:
        encoded.append(
            st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="))
        )
    return st.one_of(
        st.deferred(lambda: st.sampled_from(real or [""])),
        st.builds(
            mutated,
            st.deferred(lambda: st.sampled_from(real or ["x"])),
            st.integers(0, 500),
            st.sampled_from(list("AZaz09-_=+/.")),
        ),
        *encoded,
        st.sampled_from(["e30", "bnVsbA", "W10", "MQ", "eyJ2IjogOTl9"]),  # {}, null, [], 1, {"v": 99}
        any_text,
    )


# ---------------------------------------------------------------------------------------------------------
# Messages


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_type(field).GetOptions().map_entry


def build(descriptor: Descriptor, values: dict[str, Any]) -> Message:
    """A message of `descriptor` with `values` by field name."""
    message = message_class(descriptor)()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if is_map(field):
            if message_type(field).fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    target[key].CopyFrom(item)
            else:
                target.update(value)
        elif field.is_repeated:
            target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            # Setting one member of a oneof clears the others: the last one drawn wins.
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def merged(base: Message, change: Message) -> Message:
    """A copy of `base` with the fields set in `change` merged in."""
    result = type(base)()
    result.CopyFrom(base)
    result.MergeFrom(change)
    return result


@dataclasses.dataclass(frozen=True)
class ProtoStrategies:
    """How one service's messages are drawn.

    text_by_field: the strings of a field by its name, mixed by the module with anything at all; any other
        string field draws `any_text`.
    int_edges: integers drawn more often than others, besides each type's extremes and their neighbours;
        `near_zero_max` bounds a small range from -10 that is drawn as often as the type's whole range.
    map_keys: the keys of a map with string keys; `map_values` its string values, by default drawn as a
        string field named "value" would be.
    mask_paths: paths a FieldMask names besides the fields of the message it updates (the message-typed
        field beside it) and random text.
    well_known: whole messages by type name, for types whose fields alone would not reach their edges.
    max_depth: messages nested deeper are left empty.
    """

    text_by_field: Mapping[str, st.SearchStrategy[str]]
    int_edges: Sequence[int]
    near_zero_max: int
    map_keys: st.SearchStrategy[str]
    any_text: st.SearchStrategy[str] = any_text
    map_values: st.SearchStrategy[str] | None = None
    max_map_size: int = 4
    mask_paths: Sequence[str] = ()
    well_known: Mapping[str, st.SearchStrategy[Message]] = dataclasses.field(default_factory=dict)
    max_depth: int = 3

    def messages(self, descriptor: Descriptor, *, sparse: bool = False) -> st.SearchStrategy[Message]:
        """Messages of `descriptor` with random values in any subset of their fields, or (sparse) in at most
        two at each nesting level."""
        return self._messages(descriptor, 0, sparse)

    def integers(self, low: int, high: int) -> st.SearchStrategy[int]:
        """Integers from `low` to `high`: the edges, any, or small ones."""
        edges = [value for value in (*self.int_edges, low, high, low + 1, high - 1) if low <= value <= high]
        return st.one_of(
            st.sampled_from(edges),
            st.integers(low, high),
            st.integers(max(low, -10), min(high, self.near_zero_max)),
        )

    def _messages(self, descriptor: Descriptor, depth: int, sparse: bool) -> st.SearchStrategy[Message]:
        if depth > self.max_depth:
            return st.just(message_class(descriptor)())
        if sparse:
            return (
                st.lists(st.sampled_from([f.name for f in descriptor.fields]), unique=True, max_size=2)
                .flatmap(
                    lambda names: st.fixed_dictionaries(
                        {
                            name: self._field_value(
                                descriptor.fields_by_name[name], descriptor, depth, sparse
                            )
                            for name in names
                        }
                    )
                )
                .map(lambda values: build(descriptor, values))
            )
        fields = {f.name: self._field_value(f, descriptor, depth, sparse) for f in descriptor.fields}
        return st.fixed_dictionaries({}, optional=fields).map(lambda values: build(descriptor, values))

    def _field_value(
        self, field: FieldDescriptor, owner: Descriptor, depth: int, sparse: bool
    ) -> st.SearchStrategy[Any]:
        if is_map(field):
            key_field = message_type(field).fields_by_name["key"]
            value_field = message_type(field).fields_by_name["value"]
            keys = self.map_keys if key_field.type == FieldDescriptor.TYPE_STRING else self._scalar(key_field)
            values = (
                self.map_values
                if self.map_values is not None and value_field.type == FieldDescriptor.TYPE_STRING
                else self._single_value(value_field, owner, depth, sparse)
            )
            return st.dictionaries(keys, values, max_size=self.max_map_size)
        if field.is_repeated:
            return st.lists(self._single_value(field, owner, depth, sparse), max_size=4)
        return self._single_value(field, owner, depth, sparse)

    def _single_value(
        self, field: FieldDescriptor, owner: Descriptor, depth: int, sparse: bool
    ) -> st.SearchStrategy[Any]:
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            return self._scalar(field)
        target = message_type(field)
        if target.full_name in self.well_known:
            return self.well_known[target.full_name]
        if target.full_name == field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
            # A mask names fields of the resource it updates: the message-typed field beside it.
            targets = [
                message_type(f)
                for f in owner.fields
                if f.type == FieldDescriptor.TYPE_MESSAGE and f is not field
            ]
            return self._mask_paths(targets[0] if targets else None).map(
                lambda paths: field_mask_pb2.FieldMask(paths=paths)
            )
        return self._messages(target, depth + 1, sparse)

    def _mask_paths(self, target: Descriptor | None) -> st.SearchStrategy[list[str]]:
        known = list(self.mask_paths)
        if target is not None:
            known += [f.name for f in target.fields]
        return st.lists(st.one_of(st.sampled_from(known), small_text), max_size=5)

    def _scalar(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        if field.type == FieldDescriptor.TYPE_STRING:
            return self.text_by_field.get(field.name, self.any_text)
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=100)
        if field.type == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if field.type == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None, field.full_name
            known = [value.number for value in field.enum_type.values]
            # Open enums carry any int32 on the wire; a number no version of the contract knows must be
            # refused.
            return st.one_of(st.sampled_from(known), st.integers(INT32_MIN, INT32_MAX))
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
        low, high = INT_RANGES[field.type]
        return self.integers(low, high)
