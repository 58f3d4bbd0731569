"""The deployment manager wired from its parts: deployments, rollouts, routing and the watch, one writer."""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.server.deployments.rollouts import RolloutService
from modelplane.server.deployments.routing import RouteCache, RoutingService
from modelplane.server.deployments.service import DeploymentService
from modelplane.server.deployments.watch import DeploymentWatch
from modelplane.server.deployments.writer import DeploymentWriter
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
        *,
        progress_interval: float = 5.0,
    ) -> DeploymentManager:
        routes = RouteCache(feed)
        writer = DeploymentWriter(database, registry, read_caches=(routes,))
        return cls(
            deployments=DeploymentService(database, writer, registry),
            rollouts=RolloutService(database, writer),
            routing=RoutingService(database, writer, routes),
            watch=DeploymentWatch(database, feed, progress_interval=progress_interval),
        )
