"""The deployment manager's rules: deployments, rollouts through the state machine, health, routes, changes.

Every write runs in one `Mutation` with the deployment's row locked: the new traffic table, the rollout,
the history entry, the change rows, the audit row and (on success) the registry alias move commit
together, or none of them do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from modelplane.server import field_rules, pagination
from modelplane.server.deployments import rollout_machine as machine
from modelplane.server.deployments import store, validation
from modelplane.server.deployments.domain import (
    DRIVER_ACTOR,
    FULL_WEIGHT_BP,
    Deployment,
    DeploymentChange,
    DeploymentFields,
    Endpoint,
    EndpointHealth,
    HealthResult,
    HistoryEntry,
    HistoryRecord,
    Page,
    Plan,
    PlannedStage,
    RollbackSpec,
    Rollout,
    RolloutResult,
    RolloutSpec,
    RolloutState,
    RolloutStrategy,
    Route,
    SlotTraffic,
    TrafficTable,
    Transition,
    deployment_name,
    rollout_name,
)
from modelplane.server.deployments.traffic import RoutingTable
from modelplane.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ModelplaneError,
    NotFound,
    ResourceExhausted,
)
from modelplane.server.registry.domain import version_name
from modelplane.server.registry.service import RegistryService
from modelplane.server.store import changes
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.server.store.snapshots import from_json, to_json
from modelplane.server.store.watch import ChangeFeed
from modelplane.server.store.writes import etag_mismatch, new_etag, write_once
from modelplane.v1.error_reason_pb2 import ErrorReason

T = TypeVar("T")
log = logging.getLogger(__name__)

DRIVER_WRITE = WriteRequest(actor=DRIVER_ACTOR, method="RolloutDriver/Advance")


def _deployment_not_found(deployment_id: str) -> NotFound:
    name = deployment_name(deployment_id)
    return NotFound(
        f"deployment {name} does not exist",
        reason=ErrorReason.ERROR_REASON_DEPLOYMENT_NOT_FOUND,
        metadata={"resource": name},
    )


def _rollout_not_found(deployment_id: str, number: int) -> NotFound:
    name = rollout_name(deployment_id, number)
    return NotFound(
        f"rollout {name} does not exist",
        reason=ErrorReason.ERROR_REASON_ROLLOUT_NOT_FOUND,
        metadata={"resource": name},
    )


def _version_not_found(version: str) -> NotFound:
    return NotFound(
        f"version {version} does not exist",
        reason=ErrorReason.ERROR_REASON_MODEL_VERSION_NOT_FOUND,
        metadata={"resource": version},
    )


def _with_health(endpoints: tuple[Endpoint, ...], known: dict[str, EndpointHealth]) -> tuple[Endpoint, ...]:
    return tuple(
        dataclasses.replace(e, health=known.get(e.address, EndpointHealth.UNKNOWN)) for e in endpoints
    )


@dataclasses.dataclass(frozen=True)
class _Routes:
    """A deployment prepared for routing, cached per replica."""

    table: RoutingTable
    revision: int


class DeploymentService:
    """The deployment manager's use cases, independent of gRPC and of SQL."""

    def __init__(
        self,
        database: Database,
        feed: ChangeFeed,
        registry: RegistryService,
        *,
        progress_interval: float = 5.0,
    ) -> None:
        self._db = database
        self._feed = feed
        self._registry = registry
        self._progress_interval = progress_interval
        self._routes: ReadCache[_Routes] = ReadCache(feed)

    async def _write(
        self, write: WriteRequest, result_type: type[T] | None, body: Callable[[Mutation], Awaitable[T]]
    ) -> T:
        return await write_once(self._db, write, body, result_type=result_type, committed=self._written)

    def _written(self, revision: int) -> None:
        self._routes.written(revision)
        self._registry.written(revision)

    async def _locked(self, m: Mutation, deployment_id: str) -> Deployment:
        found = await store.get_deployment(m.conn, deployment_id, for_update=True)
        if found is None:
            raise _deployment_not_found(deployment_id)
        return found

    async def _commit(
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

    async def _check_version(self, m: Mutation, model_id: str, number: int, path: str) -> None:
        """The version exists and is not ARCHIVED (INVALID_ARGUMENT at `path`); locked until commit."""
        state = await store.lock_version_state(m.conn, model_id, number)
        if state is None:
            if not await store.model_exists(m.conn, model_id):
                raise NotFound(
                    f"model models/{model_id} does not exist",
                    reason=ErrorReason.ERROR_REASON_MODEL_NOT_FOUND,
                    metadata={"resource": f"models/{model_id}"},
                )
            raise _version_not_found(version_name(model_id, number))
        if state == "archived":
            raise InvalidArgument.field(
                path, f"{version_name(model_id, number)} is ARCHIVED; deploy a READY or DEPRECATED version"
            )

    async def _move_alias(self, m: Mutation, deployment: Deployment, rollout: Rollout) -> None:
        """The environment's alias follows a successful rollout, in the same transaction."""
        _, number = validation.parse_rollout_target(rollout.target_version)
        state = await store.lock_version_state(m.conn, deployment.model_id, number)
        if state is None:
            raise _version_not_found(rollout.target_version)
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

    # ---- deployments

    async def create_deployment(
        self, deployment_id: str, fields: DeploymentFields, write: WriteRequest
    ) -> Deployment:
        model_id, number = validation.check_deployment(deployment_id, fields, write.request_id)

        async def body(m: Mutation) -> Deployment:
            await self._check_version(m, model_id, number, "deployment.traffic.stable.model_version")
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
            created, _ = await self._commit(m, draft, entry=entry, table=table, now=now, kind="created")
            await self._registry.move_alias_in(
                m, model_id, fields.environment, number, f"{created.name} created"
            )
            return created

        return await self._write(write, Deployment, body)

    async def get_deployment(self, name: str) -> Deployment:
        deployment_id = validation.parse_deployment(name, "name")
        async with self._db.connection() as conn:
            found = await store.get_deployment(conn, deployment_id)
        if found is None:
            raise _deployment_not_found(deployment_id)
        return found

    async def list_deployments(self, *, page_size: int, page_token: str, model: str) -> Page[Deployment]:
        v = field_rules.Violations()
        model_id = v.collect(lambda: validation.parse_model_filter(model), "")
        fingerprint = pagination.query_fingerprint("ListDeployments", model)
        limit, after = pagination.check_page(v, page_size, page_token, fingerprint, (str,))
        v.raise_if_any()
        async with self._db.connection() as conn:
            rows = await store.list_deployments(
                conn, model_id=model_id, after=str(after[0]) if after else "", limit=limit + 1
            )
        token = pagination.encode_page_token(fingerprint, (rows[limit - 1].id,)) if len(rows) > limit else ""
        return Page(tuple(rows[:limit]), token)

    async def update_deployment(
        self, name: str, fields: DeploymentFields, paths: frozenset[str], etag: str, write: WriteRequest
    ) -> Deployment:
        deployment_id, paths = validation.check_update(name, fields, paths, write.request_id)

        async def body(m: Mutation) -> Deployment:
            current = await self._locked(m, deployment_id)
            if etag and etag != current.etag:
                raise etag_mismatch(current.name, current.etag)
            now = await store.db_now(m.conn)
            table = current.traffic
            if "traffic.stable.endpoints" in paths:
                known = await store.health_of(
                    m.conn, deployment_id, [e.address for e in fields.stable_endpoints]
                )
                endpoints = _with_health(fields.stable_endpoints, known)
                table = dataclasses.replace(
                    table, stable=dataclasses.replace(table.stable, endpoints=endpoints)
                )
            entry = HistoryEntry(
                Transition.UPDATED, f"updated {', '.join(sorted(paths))}", current.traffic, table
            )
            updated, _ = await self._commit(
                m,
                current,
                entry=entry,
                table=table,
                now=now,
                description=fields.description if "description" in paths else None,
                labels=dict(fields.labels) if "labels" in paths else None,
            )
            return updated

        return await self._write(write, Deployment, body)

    async def delete_deployment(self, name: str, etag: str, write: WriteRequest) -> None:
        deployment_id = field_rules.parse_with_request_id(
            lambda: validation.parse_deployment(name, "name"), write.request_id
        )

        async def body(m: Mutation) -> None:
            current = await self._locked(m, deployment_id)
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

        await self._write(write, None, body)

    # ---- rollouts

    async def _pending(
        self, m: Mutation | None, deployment: Deployment, spec: RolloutSpec, number: int
    ) -> Rollout:
        """A validated PENDING rollout of the spec, its endpoints with their last reported health."""
        if deployment.active_rollout is not None:
            active = rollout_name(deployment.id, deployment.active_rollout)
            raise FailedPrecondition(
                f"{deployment.name} already has an active rollout, {active}; one at a time",
                reason=ErrorReason.ERROR_REASON_ROLLOUT_IN_PROGRESS,
                metadata={"resource": deployment.name, "active_rollout": active},
            )
        assert spec.strategy is not None
        known: dict[str, EndpointHealth] = {}
        if m is not None:
            known = await store.health_of(m.conn, deployment.id, [e.address for e in spec.endpoints])
        now = deployment.update_time if m is None else await store.db_now(m.conn)
        return Rollout(
            deployment_id=deployment.id,
            number=number,
            target_version=spec.target_version,
            endpoints=_with_health(spec.endpoints, known),
            strategy=spec.strategy,
            steps=spec.steps,
            reason=spec.reason,
            state=RolloutState.PENDING,
            current_step=0,
            next_step_time=None,
            from_version=deployment.traffic.stable.model_version,
            rollback_mode=None,
            rollback_interval=None,
            started_by="" if m is None else m.write.actor,
            create_time=now,
            update_time=now,
            end_time=None,
            etag="",
        )

    async def _check_rollout_request(self, parent: str, spec: RolloutSpec, request_id: str) -> str:
        """The deployment's id, or INVALID_ARGUMENT naming every bad field of a StartRollout / PlanRollout
        request; with other bad fields, a target of another model than the deployment's is named too."""
        v, deployment_id = validation.check_rollout_request(parent, spec, request_id)
        if v.items and deployment_id:
            async with self._db.connection() as conn:
                current = await store.get_deployment(conn, deployment_id)
            if current is not None:
                validation.rollout_target(v, spec, current.model_id)
        v.raise_if_any()
        return deployment_id

    @staticmethod
    def _rollout_target(spec: RolloutSpec, model_id: str) -> int:
        v = field_rules.Violations()
        target = validation.rollout_target(v, spec, model_id)
        v.raise_if_any()
        assert target is not None
        return target

    async def start_rollout(self, parent: str, spec: RolloutSpec, write: WriteRequest) -> RolloutResult:
        deployment_id = await self._check_rollout_request(parent, spec, write.request_id)

        async def body(m: Mutation) -> RolloutResult:
            current = await self._locked(m, deployment_id)
            target = self._rollout_target(spec, current.model_id)
            await self._check_version(m, current.model_id, target, "rollout.target_version")
            number = await store.take_rollout_number(m.conn, deployment_id)
            pending = await self._pending(m, current, spec, number)
            now = await store.db_now(m.conn)
            outcome = machine.start(pending, current.traffic, now)
            return await self._apply(m, current, outcome, now)

        return await self._write(write, RolloutResult, body)

    async def _apply(
        self, m: Mutation, current: Deployment, outcome: machine.Outcome, now: datetime
    ) -> RolloutResult:
        deployment, rollout = await self._commit(
            m, current, entry=outcome.entry, table=outcome.table, now=now, rollout=outcome.rollout
        )
        assert rollout is not None
        return RolloutResult(rollout, deployment)

    async def plan_rollout(self, parent: str, spec: RolloutSpec) -> Plan:
        deployment_id = await self._check_rollout_request(parent, spec, "")
        async with self._db.transaction() as conn:
            current = await store.get_deployment(conn, deployment_id)
            if current is None:
                raise _deployment_not_found(deployment_id)
            target = self._rollout_target(spec, current.model_id)
            state = await store.lock_version_state(conn, current.model_id, target)
            now = await store.db_now(conn)
        if state is None:
            raise _version_not_found(spec.target_version)
        if state == "archived":
            raise InvalidArgument.field(
                "rollout.target_version",
                f"{spec.target_version} is ARCHIVED; deploy a READY or DEPRECATED version",
            )
        pending = await self._pending(None, current, spec, 0)
        pending = dataclasses.replace(pending, create_time=now, update_time=now)
        return Plan(pending, plan_stages(pending, current.traffic, now))

    async def get_rollout(self, name: str) -> Rollout:
        deployment_id, number = validation.parse_rollout(name, "name")
        async with self._db.connection() as conn:
            found = await store.get_rollout(conn, deployment_id, number)
        if found is None:
            raise _rollout_not_found(deployment_id, number)
        return found

    async def list_rollouts(self, parent: str, page_size: int, page_token: str) -> Page[Rollout]:
        v = field_rules.Violations()
        deployment_id = v.collect(lambda: validation.parse_deployment(parent, "parent"), "")
        fingerprint = pagination.query_fingerprint("ListRollouts", parent)
        limit, after = pagination.check_page(v, page_size, page_token, fingerprint, (int,))
        v.raise_if_any()
        async with self._db.connection() as conn:
            if await store.get_deployment(conn, deployment_id) is None:
                raise _deployment_not_found(deployment_id)
            rows = await store.list_rollouts(
                conn, deployment_id, before=int(str(after[0])) if after else None, limit=limit + 1
            )
        token = (
            pagination.encode_page_token(fingerprint, (rows[limit - 1].number,)) if len(rows) > limit else ""
        )
        return Page(tuple(rows[:limit]), token)

    async def _control(
        self,
        name: str,
        etag: str,
        reason: str,
        write: WriteRequest,
        event: Callable[[Rollout, TrafficTable, datetime], machine.Outcome],
        rollback: RollbackSpec | None = None,
    ) -> RolloutResult:
        deployment_id, number = validation.check_control(name, reason, write.request_id, rollback)

        async def body(m: Mutation) -> RolloutResult:
            current = await store.get_deployment(m.conn, deployment_id, for_update=True)
            rollout = None if current is None else await store.get_rollout(m.conn, deployment_id, number)
            if current is None or rollout is None:
                raise _rollout_not_found(deployment_id, number)
            if etag and etag != rollout.etag:
                raise etag_mismatch(rollout.name, rollout.etag)
            now = await store.db_now(m.conn)
            return await self._apply(m, current, event(rollout, current.traffic, now), now)

        return await self._write(write, RolloutResult, body)

    async def promote_rollout(
        self, name: str, to_end: bool, reason: str, etag: str, write: WriteRequest
    ) -> RolloutResult:
        return await self._control(
            name,
            etag,
            reason,
            write,
            lambda r, t, now: machine.promote(r, t, to_end=to_end, reason=reason, now=now),
        )

    async def pause_rollout(self, name: str, reason: str, etag: str, write: WriteRequest) -> RolloutResult:
        return await self._control(
            name, etag, reason, write, lambda r, t, now: machine.pause(r, t, reason=reason, now=now)
        )

    async def resume_rollout(self, name: str, reason: str, etag: str, write: WriteRequest) -> RolloutResult:
        return await self._control(
            name, etag, reason, write, lambda r, t, now: machine.resume(r, t, reason=reason, now=now)
        )

    async def rollback_rollout(
        self, name: str, spec: RollbackSpec, reason: str, etag: str, write: WriteRequest
    ) -> RolloutResult:
        def event(r: Rollout, t: TrafficTable, now: datetime) -> machine.Outcome:
            assert spec.mode is not None  # check_control refused a missing mode
            return machine.rollback(r, t, mode=spec.mode, interval=spec.interval, reason=reason, now=now)

        return await self._control(name, etag, reason, write, event, spec)

    async def abort_rollout(self, name: str, reason: str, etag: str, write: WriteRequest) -> RolloutResult:
        return await self._control(
            name, etag, reason, write, lambda r, t, now: machine.abort(r, t, reason=reason, now=now)
        )

    # ---- health

    async def report_health(
        self, deployment: str, address: str, ready: bool, write: WriteRequest
    ) -> HealthResult:
        deployment_id = validation.check_report_health(deployment, address, write.request_id)
        health = EndpointHealth.READY if ready else EndpointHealth.NOT_READY

        async def body(m: Mutation) -> HealthResult:
            current = await self._locked(m, deployment_id)
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
            updated, _ = await self._commit(
                m, current, entry=outcome.entry, table=outcome.table, now=now, rollout=outcome.rollout
            )
            return HealthResult(True, updated)

        return await self._write(write, HealthResult, body)

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

    # ---- history

    async def list_history(self, parent: str, page_size: int, page_token: str) -> Page[HistoryRecord]:
        v = field_rules.Violations()
        deployment_id = v.collect(lambda: validation.parse_deployment(parent, "parent"), "")
        fingerprint = pagination.query_fingerprint("ListDeploymentHistory", parent)
        limit, after = pagination.check_page(v, page_size, page_token, fingerprint, (int,))
        v.raise_if_any()
        async with self._db.connection() as conn:
            if await store.get_deployment(conn, deployment_id) is None:
                raise _deployment_not_found(deployment_id)
            rows = await store.list_history(
                conn, deployment_id, before_id=int(str(after[0])) if after else None, limit=limit + 1
            )
        token = pagination.encode_page_token(fingerprint, (rows[limit - 1].id,)) if len(rows) > limit else ""
        return Page(tuple(rows[:limit]), token)

    # ---- routing

    async def resolve_route(self, deployment: str, routing_key: str) -> Route:
        deployment_id = validation.check_resolve_route(deployment, routing_key)

        async def load() -> tuple[_Routes, int] | None:
            async with self._db.connection() as conn:
                found, latest = await store.get_deployment_at(conn, deployment_id)
            return None if found is None else (_Routes(RoutingTable(found.traffic), found.revision), latest)

        routes = await self._routes.read(deployment_id, load)
        if routes is None:
            raise _deployment_not_found(deployment_id)
        choice = routes.table.route(routing_key)
        if choice is None:
            name = deployment_name(deployment_id)
            raise FailedPrecondition(
                f"{name} has no endpoint that is not NOT_READY in any slot with traffic",
                reason=ErrorReason.ERROR_REASON_NO_READY_ENDPOINT,
                metadata={"resource": name},
            )
        slot, endpoint, version = choice
        return Route(endpoint, version, slot, routes.revision)

    # ---- watch

    async def watch(
        self, deployment: str, start_revision: int
    ) -> AsyncIterator[DeploymentChange | changes.ProgressMark]:
        """With start_revision 0 the deployment now, then each change after it; otherwise each change from
        start_revision on (inclusive); progress marks when idle."""
        v = field_rules.Violations()
        deployment_id = v.collect(lambda: validation.parse_deployment(deployment, "deployment"), "")
        changes.check_start_revision(start_revision, v)
        v.raise_if_any()
        name = deployment_name(deployment_id)
        if start_revision == 0:
            async with self._db.connection() as conn:
                found, latest = await store.get_deployment_at(conn, deployment_id)
            if found is not None:
                yield DeploymentChange(found.revision, "created", name, found.update_time, found)
                # Everything up to `latest` is in that state; the stream goes on with what commits after.
                start_revision = latest + 1
        async for event in changes.watch_changes(
            self._db,
            self._feed,
            start_revision=start_revision,
            resource_types=("deployment",),
            resource=name,
            progress_interval=self._progress_interval,
        ):
            if isinstance(event, changes.ProgressMark):
                yield event
            else:
                snapshot = None if event.snapshot is None else from_json(Deployment, event.snapshot)
                yield DeploymentChange(
                    event.revision, event.kind, event.resource, event.change_time, snapshot
                )

    # ---- the driver's step

    async def advance_due(self, limit: int = 100) -> int:
        """Advances rollouts whose timed step is due, each in its own transaction; returns how many moved.

        The due rollout's deployment row is locked with SKIP LOCKED, and the step is applied only if the
        rollout still waits on the step it was found on, so replicas racing on one rollout advance it once.
        """
        moved = 0
        for _ in range(limit):
            try:
                advanced = await self._write(DRIVER_WRITE, None, self._advance_one)
            except ModelplaneError as exc:
                # E.g. the target version was archived under a rollout about to succeed: nothing changed;
                # it is retried on the next round, and a person can roll it back meanwhile.
                log.warning("a due rollout could not advance: %s", exc.message)
                break
            if not advanced:
                break
            moved += 1
        return moved

    async def _advance_one(self, m: Mutation) -> bool:
        due = await store.lock_due_rollout(m.conn)
        if due is None:
            return False
        current = await store.get_deployment(m.conn, due.deployment_id)
        rollout = await store.get_rollout(m.conn, due.deployment_id, due.number)
        if current is None or rollout is None:  # pragma: no cover - both are locked
            return False
        now = await store.db_now(m.conn)
        outcome = machine.tick(rollout, current.traffic, expected_step=due.current_step, now=now)
        if outcome is None:
            return False
        await self._commit(
            m, current, entry=outcome.entry, table=outcome.table, now=now, rollout=outcome.rollout
        )
        return True


def plan_stages(pending: Rollout, table: TrafficTable, now: datetime) -> tuple[PlannedStage, ...]:
    """The stages a rollout goes through, simulated with the state machine itself: waiting for
    readiness, then each step once every canary endpoint is READY, then the final table."""
    stages: list[PlannedStage] = []
    unready = dataclasses.replace(
        pending,
        endpoints=tuple(dataclasses.replace(e, health=EndpointHealth.UNKNOWN) for e in pending.endpoints),
    )
    outcome = machine.start(unready, table, now)
    rollout, current = outcome.rollout, outcome.table
    assert rollout is not None
    if rollout.state is RolloutState.WAITING_READY:
        stages.append(PlannedStage(rollout.state, -1, current, None))
        for endpoint in pending.endpoints:
            ready = machine.health(
                rollout, current, address=endpoint.address, health=EndpointHealth.READY, now=now
            )
            if ready is not None and ready.rollout is not None:
                rollout, current = ready.rollout, ready.table
    while rollout.state is RolloutState.PROGRESSING:
        stages.append(
            PlannedStage(rollout.state, rollout.current_step, current, rollout.steps[rollout.current_step])
        )
        promoted = machine.promote(rollout, current, to_end=False, reason="", now=now)
        assert promoted.rollout is not None
        rollout, current = promoted.rollout, promoted.table
    stages.append(PlannedStage(rollout.state, -1, current, None))
    return tuple(stages)


__all__ = ["DeploymentService", "RolloutStrategy", "plan_stages"]
