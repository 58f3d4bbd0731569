"""grpc.health.v1 status of the server, kept true by probing the database on a fixed interval.

SERVING means: the pool is connected and the schema is one this build can serve: its own, or a newer one
whose migrations since were all declared expand-only (store/migrations.py), so a rolling upgrade never
takes the old replicas out. A load
balancer or orchestrator that watches health therefore stops sending traffic to a replica whose
Postgres is gone, and sends it again once the replica has recovered by itself.

Postgres out of connection slots is not such a state: a replica that still holds open connections keeps
serving the calls that find one free (the others answer STORAGE_UNAVAILABLE, which clients retry), and
health stays SERVING. Every replica shares the one Postgres and its max_connections, so taking this one out
would move its traffic onto replicas short of the same slots while freeing none (a NOT_SERVING replica
keeps its pool); it would only turn a partial outage into a whole one. A replica that holds no connection
at all serves nothing, and turns NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2

# grpc-stubs types the sync servicer only; health.aio is grpcio-health-checking's public asyncio one.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from modelplane.server.errors import StorageUnavailable
from modelplane.server.store.migrations import latest_version, unservable
from modelplane.server.store.pool import Database

if TYPE_CHECKING:
    from modelplane.server.store.migrations import Migration

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# The empty name is the server as a whole (what `grpc_health_probe` asks by default).
OVERALL = ""
# The process answers at all: SERVING from start to stop whatever the database does, for liveness probes
# (Kubernetes restarts a container whose liveness fails; restarting never brings Postgres back, and a
# replica that cannot serve a newer schema is waiting to be upgraded, not stuck).
LIVENESS = "liveness"


class HealthReporter:
    """Owns the health servicer's statuses: one for the whole server and one per modelplane service."""

    def __init__(
        self,
        database: Database,
        services: Sequence[str],
        *,
        probe_interval: float,
        probe_timeout: float = 1.0,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        """`migrations`: the ones this code knows (the package's by default)."""
        self.servicer = health_aio.HealthServicer()
        self._database = database
        self._names = (OVERALL, *services)
        self._interval = probe_interval
        self._timeout = probe_timeout
        self._code_latest = latest_version(migrations)
        # Why the schema cannot be served, as last logged: said once when it changes, not every probe.
        self._schema_problem: str | None = None
        self._serving = False
        self._became_serving = asyncio.Event()

    @property
    def serving(self) -> bool:
        return self._serving

    async def set_serving(self, serving: bool) -> None:
        if serving != self._serving:
            log.info("health: %s", "SERVING" if serving else "NOT_SERVING")
        self._serving = serving
        for name in self._names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        if serving:
            self._became_serving.set()
        else:
            self._became_serving.clear()

    async def set_alive(self) -> None:
        """LIVENESS turns SERVING; only shut_down() takes it back."""
        await self.servicer.set(LIVENESS, SERVING)

    async def probe_once(self) -> bool:
        """One probe: True when the database answers and its schema is one this code can serve."""
        try:
            version, serves_from = await asyncio.wait_for(
                self._database.ping(self._timeout), self._timeout * 2
            )
        except (StorageUnavailable, TimeoutError) as exc:
            if self._short_of_slots():
                log.debug("health probe found no free connection, Postgres refusing more: %s", exc)
                return True
            log.debug("health probe failed: %s", exc)
            return False
        problem = unservable(version, serves_from, self._code_latest)
        if problem != self._schema_problem:
            if problem is not None:
                log.error("health: NOT_SERVING: %s", problem)
            else:
                log.info("health: this server serves the database's schema (version %d)", version)
            self._schema_problem = problem
        return problem is None

    def _short_of_slots(self) -> bool:
        """Whether the probe found no connection only because Postgres refused new ones while this replica
        still holds some: busy serving, not cut off (see the module's docstring)."""
        window = self._interval + self._timeout * 2
        return self._database.refusals.within(window) and self._database.open_connections() > 0

    async def run(self) -> None:
        """Probes until cancelled; a failure of any kind only turns health NOT_SERVING."""
        while True:
            try:
                healthy = await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health probe raised")
                healthy = False
            await self.set_serving(healthy)
            await asyncio.sleep(self._interval)

    async def wait_serving(self) -> None:
        """Returns once health is SERVING (callers bound the wait with asyncio.timeout)."""
        await self._became_serving.wait()

    async def shut_down(self) -> None:
        """NOT_SERVING for good: later probes cannot flip it back while the server drains."""
        self._serving = False
        self._became_serving.clear()
        await self.servicer.enter_graceful_shutdown()
