"""How the deployment manager writes: one transaction a use case, one commit a transition, shared errors.

Every write runs in one `Mutation` with the deployment's row locked: the new traffic table, the rollout,
the history entry, the change rows, the audit row and (on success) the registry alias move commit
together, or none of them do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from modelplane.server.deployments import store, validation
from modelplane.server.deployments.domain import (
    Deployment,
    Endpoint,
    EndpointHealth,
    HistoryEntry,
    Rollout,
    RolloutState,
    TrafficTable,
    deployment_name,
    rollout_name,
)
from modelplane.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from modelplane.server.registry.domain import version_name
from modelplane.server.registry.service import RegistryService
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.server.store.snapshots import to_json
from modelplane.server.store.writes import new_etag, write_once
from modelplane.v1.error_reason_pb2 import ErrorReason

T = TypeVar("T")


def deployment_not_found(deployment_id: str) -> NotFound:
    name = deployment_name(deployment_id)
    return NotFound.resource("deployment", name, ErrorReason.ERROR_REASON_DEPLOYMENT_NOT_FOUND)


def rollout_not_found(deployment_id: str, number: int) -> NotFound:
    name = rollout_name(deployment_id, number)
    return NotFound.resource("rollout", name, ErrorReason.ERROR_REASON_ROLLOUT_NOT_FOUND)


def version_not_found(version: str) -> NotFound:
    return NotFound.resource("version", version, ErrorReason.ERROR_REASON_MODEL_VERSION_NOT_FOUND)


def with_health(endpoints: tuple[Endpoint, ...], known: dict[str, EndpointHealth]) -> tuple[Endpoint, ...]:
    """The endpoints with their last reported health (UNKNOWN for an address never reported)."""
    return tuple(
        dataclasses.replace(e, health=known.get(e.address, EndpointHealth.UNKNOWN)) for e in endpoints
    )


class DeploymentWriter:
    """Runs the deployment manager's writes and commits their transitions; shared by its services."""

    def __init__(
        self, database: Database, registry: RegistryService, *, read_caches: Sequence[ReadCache[Any]] = ()
    ) -> None:
        self._db = database
        self._registry = registry
        # This replica's caches of deployment reads, emptied as soon as one of its writes commits.
        self._read_caches = tuple(read_caches)

    async def write(
        self, write: WriteRequest, result_type: type[T] | None, body: Callable[[Mutation], Awaitable[T]]
    ) -> T:
        return await write_once(self._db, write, body, result_type=result_type, committed=self._written)

    def _written(self, revision: int) -> None:
        for cache in self._read_caches:
            cache.written(revision)
        self._registry.written(revision)

    async def locked(self, m: Mutation, deployment_id: str) -> Deployment:
        found = await store.get_deployment(m.conn, deployment_id, for_update=True)
        if found is None:
            raise deployment_not_found(deployment_id)
        return found

    async def commit(
        self,
        m: Mutation,
        deployment: Deployment,
        *,
        entry: HistoryEntry,
        table: TrafficTable,
        now: datetime,
        rollout: Rollout | None = None,
        kind: str = "updated",
        description: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> tuple[Deployment, Rollout | None]:
        """Writes one transition: deployment, rollout, history, changes (and the alias move on success)."""
        revision = await m.revision()
        active = deployment.active_rollout
        if rollout is not None:
            rollout = dataclasses.replace(rollout, etag=new_etag())
            active = rollout.number if rollout.state.active else None
            if rollout.state is RolloutState.SUCCEEDED:
                await self._move_alias(m, deployment, rollout)
            await store.save_rollout(m.conn, rollout)
            await m.record(
                resource_type="rollout", resource=rollout.name, kind="updated", snapshot=to_json(rollout)
            )
        updated = dataclasses.replace(
            deployment,
            traffic=table,
            active_rollout=active,
            revision=revision,
            update_time=now,
            etag=new_etag(),
            description=deployment.description if description is None else description,
            labels=deployment.labels if labels is None else labels,
        )
        if kind == "created":
            if not await store.insert_deployment(m.conn, updated):
                await self._already_exists(m, updated)
        else:
            await store.save_deployment(m.conn, updated)
        await store.append_history(
            m.conn,
            deployment_id=deployment.id,
            entry=entry,
            rollout=None if rollout is None else rollout.number,
            actor=m.write.actor,
            revision=revision,
        )
        await m.record(
            resource_type="deployment", resource=updated.name, kind=kind, snapshot=to_json(updated)
        )
        return updated, rollout

    async def _already_exists(self, m: Mutation, d: Deployment) -> None:
        other = await store.deployment_of_environment(m.conn, d.model_id, d.environment)
        if other is not None and other != d.id:
            raise AlreadyExists(
                f"{deployment_name(other)} already serves environment {d.environment!r}"
                f" of models/{d.model_id}",
                reason=ErrorReason.ERROR_REASON_DEPLOYMENT_ALREADY_EXISTS,
                metadata={"resource": deployment_name(other)},
            )
        raise AlreadyExists(
            f"deployment {d.name} already exists; choose another deployment_id",
            reason=ErrorReason.ERROR_REASON_DEPLOYMENT_ALREADY_EXISTS,
            metadata={"resource": d.name},
        )

    async def check_version(self, m: Mutation, model_id: str, number: int, path: str) -> None:
        """The version exists and is not ARCHIVED (INVALID_ARGUMENT at `path`); locked until commit."""
        state = await store.lock_version_state(m.conn, model_id, number)
        if state is None:
            if not await store.model_exists(m.conn, model_id):
                raise NotFound.resource(
                    "model", f"models/{model_id}", ErrorReason.ERROR_REASON_MODEL_NOT_FOUND
                )
            raise version_not_found(version_name(model_id, number))
        if state == "archived":
            raise InvalidArgument.field(
                path, f"{version_name(model_id, number)} is ARCHIVED; deploy a READY or DEPRECATED version"
            )

    async def _move_alias(self, m: Mutation, deployment: Deployment, rollout: Rollout) -> None:
        """The environment's alias follows a successful rollout, in the same transaction."""
        _, number = validation.parse_rollout_target(rollout.target_version)
        state = await store.lock_version_state(m.conn, deployment.model_id, number)
        if state is None:
            raise version_not_found(rollout.target_version)
        if state == "archived":
            raise FailedPrecondition(
                f"{rollout.target_version} was ARCHIVED during {rollout.name}; it cannot become stable."
                " Roll the rollout back, or restore the version's state",
                reason=ErrorReason.ERROR_REASON_VERSION_ARCHIVED,
                metadata={"resource": rollout.target_version},
            )
        await self._registry.move_alias_in(
            m, deployment.model_id, deployment.environment, number, f"{rollout.name} succeeded"
        )
