"""JSON forms of frozen domain dataclasses, for change snapshots and the stored results of request ids."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
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


def _decode(hint: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _decode(options[0], data)
    if origin is tuple:
        (item, *_rest) = typing.get_args(hint)
        return tuple(_decode(item, x) for x in data)
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        return dict(data)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return from_json(hint, data)
        if issubclass(hint, datetime):
            return datetime.fromisoformat(data)
        if issubclass(hint, Enum):
            return hint(data)
    return data


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuilds a dataclass written by to_json. A field missing from `data` (one added to the class, with
    a default, after `data` was written) takes its default."""
    hints = _hints(cast(Any, cls))
    kwargs = {
        f.name: _decode(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name in data
    }
    return cls(**kwargs)
