"""A per-replica cache of reads, valid until the change feed hears of any newer commit.

Every entry was read at the revision the change feed reports as the latest, so it is exactly what
Postgres holds until the next commit; the first notification of a newer revision empties the cache.
Writes made through this replica empty it at once, so a caller reads its own writes here; a write made
through another replica is seen once its notification arrives (milliseconds). Without a live LISTEN
connection nothing is cached and every read goes to Postgres.

Reads of one key that miss together share one load (a burst on a cold or just emptied cache would otherwise
send every one of them to Postgres at once, each borrowing a connection): a read joins a load that began
while the cache knew the same newest revision and this replica's same last write, so what it gets is as new
as what it would have loaded itself. It takes only a load that succeeded: when the first reader's load fails
or is cancelled (its own deadline, its caller gone), each joined read loads for itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from modelplane.server.store.watch import ChangeFeed

V = TypeVar("V")

# What a shared load hands the reads that joined it when it did not succeed.
_FAILED = object()


@dataclass(frozen=True)
class _Load:
    """A load under way: its outcome, and the (newest revision, last own write) it began under."""

    outcome: asyncio.Future[object]
    began_under: tuple[int, int]


class ReadCache(Generic[V]):
    def __init__(self, feed: ChangeFeed, *, max_entries: int = 10_000) -> None:
        self._feed = feed
        self._max_entries = max_entries
        self._entries: dict[Hashable, V] = {}
        # The revision every entry was read at.
        self._revision = -1
        # No read older than this may be cached or served: this replica wrote it.
        self._floor = 0
        self._loads: dict[Hashable, _Load] = {}

    def get(self, key: Hashable) -> V | None:
        latest = self._feed.latest
        if not self._feed.live or latest < self._floor:
            return None
        if latest != self._revision:
            self._entries.clear()
            self._revision = latest
            return None
        return self._entries.get(key)

    def put(self, key: Hashable, value: V, read_revision: int) -> None:
        """Keeps a value read at read_revision, if that is still the newest revision known."""
        if not self._feed.live or read_revision != self._feed.latest or read_revision < self._floor:
            return
        if read_revision != self._revision or len(self._entries) >= self._max_entries:
            self._entries.clear()
            self._revision = read_revision
        self._entries[key] = value

    def written(self, revision: int) -> None:
        """This replica committed `revision`: forget everything older at once."""
        self._floor = max(self._floor, revision)
        self._entries.clear()

    async def read(self, key: Hashable, load: Callable[[], Awaitable[tuple[V, int] | None]]) -> V | None:
        """The cached value, or what `load` returns (the value and its read revision), kept if it may be."""
        cached = self.get(key)
        if cached is not None:
            return cached
        under = (self._feed.latest, self._floor)
        running = self._loads.get(key)
        if running is not None and running.began_under == under:
            # Shielded: a joined read that is cancelled leaves the load to the others.
            shared = await asyncio.shield(running.outcome)
            if shared is not _FAILED:
                return cast("V | None", shared)
            return await self._load(key, load)
        entry = _Load(asyncio.get_running_loop().create_future(), under)
        self._loads[key] = entry
        outcome: object = _FAILED
        try:
            value = await self._load(key, load)
            outcome = value
            return value
        finally:
            if self._loads.get(key) is entry:
                del self._loads[key]
            entry.outcome.set_result(outcome)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[tuple[V, int] | None]]) -> V | None:
        loaded = await load()
        if loaded is None:
            return None
        value, revision = loaded
        self.put(key, value, revision)
        return value
