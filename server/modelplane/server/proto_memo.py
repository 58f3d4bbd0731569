"""A memo of response messages built from immutable domain values, so a value served again and again from a
read cache is converted to protobuf once.

The key is the domain value's identity: a read cache hands out the same frozen object until its entry is
dropped, and a new read makes a new object, so a memo entry is valid exactly as long as the object it was
built from is the one being served. The memo holds that object, so its id cannot be reused while the entry
lives. Messages handed out are shared between calls: callers must not change them (gRPC only serializes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
M = TypeVar("M")


class ProtoMemo(Generic[V, M]):
    """The message `build(value)` returned for the same value object, up to `max_entries` of them (the
    oldest is dropped first)."""

    def __init__(self, build: Callable[[V], M], *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be 1 or more")
        self._build = build
        self._max_entries = max_entries
        # id(value) -> (value, message); the value is kept so that its id stays its own.
        self._entries: dict[int, tuple[V, M]] = {}

    def __call__(self, value: V) -> M:
        entry = self._entries.get(id(value))
        if entry is not None and entry[0] is value:
            return entry[1]
        message = self._build(value)
        if len(self._entries) >= self._max_entries:
            # Dicts keep insertion order: the first key is the oldest entry.
            del self._entries[next(iter(self._entries))]
        self._entries[id(value)] = (value, message)
        return message

    def __len__(self) -> int:
        return len(self._entries)
