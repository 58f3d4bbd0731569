"""Counts of clean checks: kept in this process per second, policy revision and links, written in batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from modelplane.server.guardrails import store
from modelplane.server.guardrails.domain import Links, Policy
from modelplane.server.store.pool import Database
from modelplane.server.tasks import cancel_and_wait

log = logging.getLogger(__name__)
# Seconds between writes of the clean-check counts.
COUNT_FLUSH_INTERVAL = 1.0


async def flush_periodically(
    pending: Callable[[], bool], interval: float, flush: Callable[[], Awaitable[None]], what: str
) -> None:
    """Calls `flush` every `interval` seconds while `pending()` says something waits to be written."""
    while pending():
        await asyncio.sleep(interval)
        try:
            await flush()
        except Exception as exc:
            # Postgres away: what waits stays in memory and goes with the next flush.
            log.warning("could not store %s (%s: %s); retrying", what, type(exc).__name__, exc)


class CleanCounts:
    """The counts of clean checks not yet written, and the task that writes them."""

    def __init__(self, database: Database, interval: float = COUNT_FLUSH_INTERVAL) -> None:
        self._db = database
        self._interval = interval
        self._counts: dict[store.CountKey, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def count(self, policy: Policy, links: Links, now: datetime) -> None:
        """Counts one clean check; a task writes the counts every flush interval while there are any."""
        key = store.CountKey(
            bucket_time=now.replace(microsecond=0),
            policy_id=policy.id,
            policy_revision=policy.revision,
            model_version=links.model_version,
            deployment=links.deployment,
            traffic_slot=links.traffic_slot.value,
        )
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_periodically(), name="modelplane-check-counts")

    async def _flush_periodically(self) -> None:
        await flush_periodically(lambda: bool(self._counts), self._interval, self.flush, "check counts")

    async def flush(self) -> None:
        """Writes the counts of clean checks made in this process so far."""
        async with self._flush_lock:
            if not self._counts:
                return
            counts, self._counts = self._counts, {}
            try:
                async with self._db.transaction() as conn:
                    await store.add_check_counts(conn, counts)
            except BaseException:
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
                raise

    async def close(self) -> None:
        """Stops the periodic flush and writes what is left, if Postgres is there to take it."""
        await cancel_and_wait(self._flusher)
        try:
            await self.flush()
        except Exception as exc:
            log.warning("dropped the counts of %d clean checks (%s)", sum(self._counts.values()), exc)
