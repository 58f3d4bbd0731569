"""The model registry's rules: validation, compare-and-set, resolution and the change stream."""

from __future__ import annotations

from modelplane.server.store.pool import Database
from modelplane.server.store.watch import ChangeFeed


class RegistryService:
    def __init__(self, database: Database, feed: ChangeFeed, *, progress_interval: float = 5.0) -> None:
        self._db = database
        self._feed = feed
        self._progress_interval = progress_interval
