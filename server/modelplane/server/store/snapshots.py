"""JSON forms of frozen domain dataclasses, for change snapshots and the stored results of request ids."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, TypeVar, cast

T = TypeVar("T")


# Leaves that are their own JSON form: checked first, by exact type, since most of a tree is made of them.
_PLAIN = frozenset({str, int, float, bool, type(None)})


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def to_json(value: Any) -> Any:
    """A JSON-ready form of a dataclass tree (datetimes as ISO 8601, enums by value, tuples as lists)."""
    if type(value) in _PLAIN:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: to_json(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _or_none(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def decode_or_none(data: Any) -> Any:
        return None if data is None else decode(data)

    return decode_or_none


def _decoder(hint: Any) -> Callable[[Any], Any]:
    """How to read back a field of type `hint` from its JSON form (None stays None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _decoder(options[0])
    if origin is tuple:
        item = _decoder(typing.get_args(hint)[0])
        return _or_none(lambda data: tuple(item(x) for x in data))
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        return _or_none(dict)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            nested = hint
            return _or_none(lambda data: from_json(nested, data))
        if issubclass(hint, datetime):
            return _or_none(datetime.fromisoformat)
        if issubclass(hint, Enum):
            return _or_none(hint)
    return _or_none(lambda data: data)


@cache
def _decoders(cls: Any) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    # Worked out once per class: reading the type hints on every call cost more than the decoding.
    hints = _hints(cls)
    return tuple((f.name, _decoder(hints[f.name])) for f in dataclasses.fields(cls) if f.init)


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuilds a dataclass written by to_json. A field missing from `data` (one added to the class, with
    a default, after `data` was written) takes its default."""
    return cls(**{name: decode(data[name]) for name, decode in _decoders(cast(Any, cls)) if name in data})
