"""The background task that advances timed rollout steps; one runs in every server replica.

Nothing about a timed step lives in a replica's memory: the due time is the rollout row's next_step_time,
so a step survives a restart, and replicas find due rollouts with SKIP LOCKED row locks and advance each
only if it still waits on the step it was found on, so a step happens exactly once.
"""

from __future__ import annotations

import asyncio
import logging

from modelplane.server.deployments.rollouts import RolloutService
from modelplane.server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Seconds between scans for due rollouts: a timed step happens at most this late.
DRIVER_INTERVAL = 0.5


class RolloutDriver:
    def __init__(self, service: RolloutService, *, interval: float = DRIVER_INTERVAL) -> None:
        self._service = service
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="modelplane-rollout-driver")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            try:
                await self._service.advance_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Postgres away or restarting: the next round tries again; the rows keep the schedule.
                log.warning("rollout driver round failed (%s: %s); retrying", type(exc).__name__, exc)
            await asyncio.sleep(self._interval)
