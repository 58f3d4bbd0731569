"""Refuses the NUL character in every text field of a request, which Postgres text cannot store, so no RPC
fails on it as INTERNAL.

Postgres text cannot hold the NUL character; protobuf strings can. One walk over the request, run by the
call's scope (calls.py) for every method, names each such field by its path instead of letting the store fail.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from modelplane.server.errors import FieldViolation, InvalidArgument

_NUL = "\x00"


def _walk(message: Message, prefix: str, found: list[FieldViolation]) -> None:
    # A NUL inside a string is a 0x00 byte on the wire. Most messages have none at all, and serializing is
    # done in C, so this skips the field-by-field walk (the costly part) for them; a 0x00 that is not a
    # NUL (an empty sub-message, a zero varint) only means the walk runs.
    if b"\x00" not in message.SerializeToString():
        return
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if isinstance(key, str) and _NUL in key:
                    found.append(
                        FieldViolation(path, "a key contains the NUL character, which cannot be stored")
                    )
                if value_field.type == FieldDescriptor.TYPE_STRING and _NUL in item:
                    found.append(
                        FieldViolation(
                            f"{path}[{key!r}]", "contains the NUL character, which cannot be stored"
                        )
                    )
                elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    _walk(item, f"{path}[{key!r}].", found)
        elif field.type == FieldDescriptor.TYPE_STRING:
            items = value if field.is_repeated else [value]
            for i, text in enumerate(items):
                if _NUL in text:
                    where = f"{path}[{i}]" if field.is_repeated else path
                    found.append(FieldViolation(where, "contains the NUL character, which cannot be stored"))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for i, item in enumerate(value):
                    _walk(item, f"{path}[{i}].", found)
            else:
                _walk(value, f"{path}.", found)


def refuse_nul_characters(request: object, prefix: str = "") -> None:
    """Raises InvalidArgument naming every text field of the request that holds a NUL character; `prefix`
    (such as "batch.") leads each path, for a message checked apart from the request holding it."""
    if not isinstance(request, Message):
        return
    found: list[FieldViolation] = []
    _walk(request, prefix, found)
    if found:
        raise InvalidArgument(found)
