"""A listed value with the row it was read from, so keyset pagination can read the key columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

T = TypeVar("T")


@dataclass(frozen=True)
class Keyed(Generic[T]):
    """A listed value with its selected row, from which pagination reads the keyset key columns."""

    value: T
    row: asyncpg.Record

    def __getitem__(self, key: str, /) -> Any:
        return self.row[key]
