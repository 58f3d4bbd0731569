"""The deployment manager wired from its parts: deployments, rollouts, routing and the watch, one writer;
and the reader its rollout gates use, over the log collector and the guardrails."""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.server.deployments.gates import GateReader
from modelplane.server.deployments.rollouts import RolloutService
from modelplane.server.deployments.routing import RouteCache, RoutingService
from modelplane.server.deployments.service import DeploymentService
from modelplane.server.deployments.watch import DeploymentWatch
from modelplane.server.deployments.writer import DeploymentWriter
from modelplane.server.errors import NotFound
from modelplane.server.guardrails.service import GuardrailService
from modelplane.server.logs.domain import SlotComparison, SlotWindowQuery
from modelplane.server.logs.service import LogService
from modelplane.server.registry.service import RegistryService
from modelplane.server.store.pool import Database
from modelplane.server.store.watch import ChangeFeed


@dataclass(frozen=True)
class DeploymentManager:
    """The deployment manager's services; the servicer serves them all, the rollout driver `rollouts`."""

    deployments: DeploymentService
    rollouts: RolloutService
    routing: RoutingService
    watch: DeploymentWatch

    @classmethod
    def build(
        cls,
        database: Database,
        feed: ChangeFeed,
        registry: RegistryService,
        gates: GateReader,
        *,
        progress_interval: float = 5.0,
    ) -> DeploymentManager:
        routes = RouteCache(feed)
        writer = DeploymentWriter(database, registry, read_caches=(routes,))
        return cls(
            deployments=DeploymentService(database, writer, registry),
            rollouts=RolloutService(database, writer, gates),
            routing=RoutingService(database, writer, routes),
            watch=DeploymentWatch(database, feed, progress_interval=progress_interval),
        )


@dataclass(frozen=True)
class LogGateReader:
    """The rollout gates' reader: windows from the log collector, policies from the guardrails."""

    logs: LogService
    guardrails: GuardrailService

    async def compare_slots(self, query: SlotWindowQuery) -> SlotComparison:
        return await self.logs.compare_slots(query)

    async def policy_exists(self, name: str) -> bool:
        try:
            await self.guardrails.get_policy(name, 0)
        except NotFound:
            return False
        return True
