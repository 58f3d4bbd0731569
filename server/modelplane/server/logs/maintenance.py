"""The log store's background upkeep: daily partitions created ahead, expired partitions dropped.

Every replica runs the loop; each round takes a transaction-level advisory try-lock, so one replica does
the work and the others skip that round. Retention drops whole partitions (a DROP TABLE, not a DELETE):
no row-by-row vacuum work, and a day goes only once all of it is older than the retention window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from modelplane.server.logs import store
from modelplane.server.logs.service import LogSettings
from modelplane.server.store.pool import Database
from modelplane.server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Seconds between rounds; a day is long, so a few rounds an hour keep partitions days ahead.
DEFAULT_INTERVAL = 600.0
# Seconds before a failed round (database away at start, say) is tried again.
RETRY_INTERVAL = 5.0


class LogMaintenance:
    """The upkeep loop of one server; started once the database is connected and migrated, so that its
    first round does not fail (and warn) on a pool that is not there yet."""

    def __init__(
        self,
        database: Database,
        settings: LogSettings,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = database
        self._settings = settings
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> store.MaintenanceReport | None:
        """One round; None when another replica holds the lock."""
        report = await store.maintain(
            self._db,
            now=self._clock(),
            retention_days=self._settings.retention_days,
            lead_days=self._settings.partition_lead_days,
        )
        if report is None:
            log.debug("log maintenance: another replica holds the lock this round")
        elif report.created or report.dropped:
            log.info(
                "log partitions: created %s, dropped %s",
                [d.isoformat() for d in report.created] or "none",
                [d.isoformat() for d in report.dropped] or "none",
            )
        else:
            log.debug("log maintenance: partitions up to date")
        return report

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                delay = self._interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("log maintenance failed (%s: %s); retrying", type(exc).__name__, exc)
                delay = RETRY_INTERVAL
            await asyncio.sleep(delay)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="modelplane-log-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)
