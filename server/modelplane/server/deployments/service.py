"""The deployment manager's deployment use cases: create, read, list, update and delete, and the history.

Rollouts are in `rollouts`, routes and endpoint health in `routing`, the watch in `watch`; every write
goes through the `DeploymentWriter` they share.
"""

from __future__ import annotations

import dataclasses

from modelplane.server import field_rules, pagination
from modelplane.server.deployments import store, validation
from modelplane.server.deployments.domain import (
    FULL_WEIGHT_BP,
    Deployment,
    DeploymentFields,
    HistoryEntry,
    HistoryRecord,
    Page,
    SlotTraffic,
    TrafficTable,
    Transition,
    rollout_name,
)
from modelplane.server.deployments.records import records_page
from modelplane.server.deployments.writer import DeploymentWriter, deployment_not_found, with_health
from modelplane.server.errors import FailedPrecondition
from modelplane.server.registry.service import RegistryService
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.writes import etag_mismatch
from modelplane.v1.error_reason_pb2 import ErrorReason


class DeploymentService:
    """The deployment use cases, independent of gRPC and of SQL."""

    def __init__(self, database: Database, writer: DeploymentWriter, registry: RegistryService) -> None:
        self._db = database
        self._writer = writer
        self._registry = registry

    async def create_deployment(
        self, deployment_id: str, fields: DeploymentFields, write: WriteRequest
    ) -> Deployment:
        model_id, number = validation.check_deployment(deployment_id, fields, write.request_id)

        async def body(m: Mutation) -> Deployment:
            await self._writer.check_version(m, model_id, number, "deployment.traffic.stable.model_version")
            now = await store.db_now(m.conn)
            table = TrafficTable(
                stable=SlotTraffic(fields.stable_version, fields.stable_endpoints, FULL_WEIGHT_BP)
            )
            draft = Deployment(
                id=deployment_id,
                environment=fields.environment,
                model_id=model_id,
                traffic=table,
                description=fields.description,
                labels=dict(fields.labels),
                active_rollout=None,
                revision=0,
                create_time=now,
                update_time=now,
                etag="",
            )
            entry = HistoryEntry(Transition.CREATED, "created", None, table)
            created, _ = await self._writer.commit(
                m, draft, entry=entry, table=table, now=now, kind="created"
            )
            await self._registry.move_alias_in(
                m, model_id, fields.environment, number, f"{created.name} created"
            )
            return created

        return await self._writer.write(write, Deployment, body)

    async def get_deployment(self, name: str) -> Deployment:
        deployment_id = validation.parse_deployment(name, "name")
        async with self._db.connection() as conn:
            found = await store.get_deployment(conn, deployment_id)
        if found is None:
            raise deployment_not_found(deployment_id)
        return found

    async def list_deployments(self, *, page_size: int, page_token: str, model: str) -> Page[Deployment]:
        v = field_rules.Violations()
        model_id = v.collect(lambda: validation.parse_model_filter(model), "")
        request = pagination.keyset_page(v, page_size, page_token, str, "ListDeployments", model)
        v.raise_if_any()
        async with self._db.connection() as conn:
            rows = await store.list_deployments(
                conn, model_id=model_id, after=request.after or "", limit=request.fetch
            )
        return Page(*request.page(rows, lambda d: d.id))

    async def update_deployment(
        self, name: str, fields: DeploymentFields, paths: frozenset[str], etag: str, write: WriteRequest
    ) -> Deployment:
        deployment_id, paths = validation.check_update(name, fields, paths, write.request_id)

        async def body(m: Mutation) -> Deployment:
            current = await self._writer.locked(m, deployment_id)
            if etag and etag != current.etag:
                raise etag_mismatch(current.name, current.etag)
            now = await store.db_now(m.conn)
            table = current.traffic
            if "traffic.stable.endpoints" in paths:
                known = await store.health_of(
                    m.conn, deployment_id, [e.address for e in fields.stable_endpoints]
                )
                endpoints = with_health(fields.stable_endpoints, known)
                table = dataclasses.replace(
                    table, stable=dataclasses.replace(table.stable, endpoints=endpoints)
                )
            entry = HistoryEntry(
                Transition.UPDATED, f"updated {', '.join(sorted(paths))}", current.traffic, table
            )
            updated, _ = await self._writer.commit(
                m,
                current,
                entry=entry,
                table=table,
                now=now,
                description=fields.description if "description" in paths else None,
                labels=dict(fields.labels) if "labels" in paths else None,
            )
            return updated

        return await self._writer.write(write, Deployment, body)

    async def delete_deployment(self, name: str, etag: str, write: WriteRequest) -> None:
        deployment_id = field_rules.parse_with_request_id(
            lambda: validation.parse_deployment(name, "name"), write.request_id
        )

        async def body(m: Mutation) -> None:
            current = await self._writer.locked(m, deployment_id)
            if etag and etag != current.etag:
                raise etag_mismatch(current.name, current.etag)
            if current.active_rollout is not None:
                active = rollout_name(deployment_id, current.active_rollout)
                raise FailedPrecondition(
                    f"{current.name} has an active rollout, {active}; finish, roll back or abort it first",
                    reason=ErrorReason.ERROR_REASON_ROLLOUT_IN_PROGRESS,
                    metadata={"resource": current.name, "active_rollout": active},
                )
            await store.delete_deployment(m.conn, deployment_id)
            await m.record(resource_type="deployment", resource=current.name, kind="deleted", snapshot=None)

        await self._writer.write(write, None, body)

    async def list_history(self, parent: str, page_size: int, page_token: str) -> Page[HistoryRecord]:
        return await records_page(
            self._db,
            "ListDeploymentHistory",
            parent,
            page_size,
            page_token,
            store.list_history,
            lambda h: h.id,
        )
