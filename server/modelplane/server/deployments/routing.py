"""The deployment manager's routing: which endpoint serves a request, and the endpoint health it rests on.

Routes are read through a per-replica `RouteCache`; health reports are writes (they can move a rollout
waiting for its canary to be READY), bounded in the addresses no slot lists.
"""

from __future__ import annotations

import dataclasses
from typing import TypeAlias

from modelplane.server.deployments import rollout_machine as machine
from modelplane.server.deployments import store, validation
from modelplane.server.deployments.domain import (
    Deployment,
    EndpointHealth,
    HealthResult,
    Route,
    deployment_name,
)
from modelplane.server.deployments.traffic import RoutingTable
from modelplane.server.deployments.writer import DeploymentWriter, deployment_not_found
from modelplane.server.errors import FailedPrecondition, ResourceExhausted
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.v1.error_reason_pb2 import ErrorReason


@dataclasses.dataclass(frozen=True)
class Routes:
    """A deployment prepared for routing, cached per replica."""

    table: RoutingTable
    revision: int


RouteCache: TypeAlias = ReadCache[Routes]


def _no_ready_endpoint(deployment_id: str) -> FailedPrecondition:
    name = deployment_name(deployment_id)
    return FailedPrecondition(
        f"{name} has no endpoint that is not NOT_READY in any slot with traffic",
        reason=ErrorReason.ERROR_REASON_NO_READY_ENDPOINT,
        metadata={"resource": name},
    )


class RoutingService:
    """Route resolution and endpoint health, independent of gRPC and of SQL."""

    def __init__(self, database: Database, writer: DeploymentWriter, routes: RouteCache) -> None:
        self._db = database
        self._writer = writer
        # The writer empties it when this replica commits, so a caller routes by its own writes.
        self._routes = routes

    async def resolve_route(self, deployment: str, routing_key: str) -> Route:
        deployment_id = validation.check_resolve_route(deployment, routing_key)

        async def load() -> tuple[Routes, int] | None:
            async with self._db.connection() as conn:
                found, latest = await store.get_deployment_at(conn, deployment_id)
            return None if found is None else (Routes(RoutingTable(found.traffic), found.revision), latest)

        routes = await self._routes.read(deployment_id, load)
        if routes is None:
            raise deployment_not_found(deployment_id)
        choice = routes.table.route(routing_key)
        if choice is None:
            raise _no_ready_endpoint(deployment_id)
        slot, endpoint, version = choice
        return Route(endpoint, version, slot, routes.revision)

    async def report_health(
        self, deployment: str, address: str, ready: bool, write: WriteRequest
    ) -> HealthResult:
        deployment_id = validation.check_report_health(deployment, address, write.request_id)
        health = EndpointHealth.READY if ready else EndpointHealth.NOT_READY

        async def body(m: Mutation) -> HealthResult:
            current = await self._writer.locked(m, deployment_id)
            known = await store.health_of(m.conn, deployment_id, [address])
            if known.get(address) is health:
                return HealthResult(False, current)
            if address not in known:
                await self._check_room_for_unlisted(m, current, address)
            await store.set_health(m.conn, deployment_id, address, health)
            rollout = None
            if current.active_rollout is not None:
                rollout = await store.get_rollout(m.conn, deployment_id, current.active_rollout)
            now = await store.db_now(m.conn)
            outcome = machine.health(rollout, current.traffic, address=address, health=health, now=now)
            if outcome is None:
                return HealthResult(False, current)
            updated, _ = await self._writer.commit(
                m, current, entry=outcome.entry, table=outcome.table, now=now, rollout=outcome.rollout
            )
            return HealthResult(True, updated)

        return await self._writer.write(write, HealthResult, body)

    @staticmethod
    async def _check_room_for_unlisted(m: Mutation, current: Deployment, address: str) -> None:
        """ResourceExhausted when `address`, listed in no slot, would be one unlisted report too many."""
        slots = (current.traffic.stable, *((current.traffic.canary,) if current.traffic.canary else ()))
        listed = {e.address for slot in slots for e in slot.endpoints}
        if address in listed:
            return
        kept = await store.unlisted_health_reports(
            m.conn, current.id, listed, validation.UNLISTED_HEALTH_REPORT_SECONDS
        )
        if kept >= validation.MAX_UNLISTED_HEALTH_REPORTS:
            name = deployment_name(current.id)
            raise ResourceExhausted(
                f"{name} already keeps {kept} health reports for addresses no slot lists; report for an"
                " address of the deployment or of its rollout, or wait: such reports are kept for a day",
                reason=ErrorReason.ERROR_REASON_TOO_MANY_UNLISTED_ENDPOINTS,
                metadata={"resource": name, "limit": str(validation.MAX_UNLISTED_HEALTH_REPORTS)},
            )
