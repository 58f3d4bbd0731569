"""The deployment manager's rollouts: start and plan, promote, pause, resume, roll back, abort, timed steps.

Each transition is the state machine's (`rollout_machine`); this module finds the rollout, locks its
deployment and commits what the machine decided through the `DeploymentWriter`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from modelplane.server import field_rules
from modelplane.server.deployments import gate_rules, gates, store, validation
from modelplane.server.deployments import rollout_machine as machine
from modelplane.server.deployments.domain import (
    DRIVER_ACTOR,
    Deployment,
    EndpointHealth,
    GateEvaluation,
    HistoryEntry,
    Page,
    Plan,
    PlannedStage,
    RollbackMode,
    RollbackSpec,
    Rollout,
    RolloutResult,
    RolloutSpec,
    RolloutState,
    TrafficTable,
    Transition,
    rollout_name,
)
from modelplane.server.deployments.gates import GateReader
from modelplane.server.deployments.records import records_page
from modelplane.server.deployments.writer import (
    DeploymentWriter,
    deployment_not_found,
    rollout_not_found,
    version_not_found,
    with_health,
)
from modelplane.server.errors import FailedPrecondition, InvalidArgument, ModelplaneError
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Connection, Database
from modelplane.server.store.writes import etag_mismatch
from modelplane.v1.error_reason_pb2 import ErrorReason

log = logging.getLogger(__name__)

DRIVER_WRITE = WriteRequest(actor=DRIVER_ACTOR, method="RolloutDriver/Advance")


async def _existing_rollout(conn: Connection, deployment_id: str, number: int) -> Rollout:
    found = await store.get_rollout(conn, deployment_id, number)
    if found is None:
        raise rollout_not_found(deployment_id, number)
    return found


class RolloutService:
    """The rollout use cases and the driver's timed step, independent of gRPC and of SQL."""

    def __init__(self, database: Database, writer: DeploymentWriter, gates: GateReader) -> None:
        self._db = database
        self._writer = writer
        self._gates = gates

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
            endpoints=with_health(spec.endpoints, known),
            strategy=spec.strategy,
            steps=spec.steps,
            reason=spec.reason,
            analysis=spec.analysis,
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
        for path, policy in gate_rules.guardrail_policies(spec.analysis):
            if not await self._gates.policy_exists(policy):
                v.add(
                    path, f"{policy} does not exist: a guardrail gate reads the checks of an existing policy"
                )
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
            current = await self._writer.locked(m, deployment_id)
            target = self._rollout_target(spec, current.model_id)
            await self._writer.check_version(m, current.model_id, target, "rollout.target_version")
            number = await store.take_rollout_number(m.conn, deployment_id)
            pending = await self._pending(m, current, spec, number)
            now = await store.db_now(m.conn)
            outcome = machine.start(pending, current.traffic, now)
            return await self._apply(m, current, outcome, now)

        return await self._writer.write(write, RolloutResult, body)

    async def _apply(
        self, m: Mutation, current: Deployment, outcome: machine.Outcome, now: datetime
    ) -> RolloutResult:
        deployment, rollout = await self._writer.commit(
            m, current, entry=outcome.entry, table=outcome.table, now=now, rollout=outcome.rollout
        )
        assert rollout is not None
        return RolloutResult(rollout, deployment)

    async def plan_rollout(self, parent: str, spec: RolloutSpec) -> Plan:
        deployment_id = await self._check_rollout_request(parent, spec, "")
        async with self._db.transaction() as conn:
            current = await store.get_deployment(conn, deployment_id)
            if current is None:
                raise deployment_not_found(deployment_id)
            target = self._rollout_target(spec, current.model_id)
            state = await store.lock_version_state(conn, current.model_id, target)
            now = await store.db_now(conn)
        if state is None:
            raise version_not_found(spec.target_version)
        if state == "archived":
            raise InvalidArgument.field(
                "rollout.target_version",
                f"{spec.target_version} is ARCHIVED; deploy a READY or DEPRECATED version",
            )
        pending = await self._pending(None, current, spec, 0)
        pending = dataclasses.replace(pending, create_time=now, update_time=now)
        evaluations = await self._evaluate(pending, current, now, not_before=None)
        return Plan(pending, plan_stages(pending, current.traffic, now), evaluations)

    async def list_rollouts(self, parent: str, page_size: int, page_token: str) -> Page[Rollout]:
        return await records_page(
            self._db, "ListRollouts", parent, page_size, page_token, store.list_rollouts, lambda r: r.number
        )

    async def get_rollout(self, name: str) -> Rollout:
        deployment_id, number = validation.parse_rollout(name, "name")
        async with self._db.connection() as conn:
            return await _existing_rollout(conn, deployment_id, number)

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
            if current is None:
                raise rollout_not_found(deployment_id, number)
            rollout = await _existing_rollout(m.conn, deployment_id, number)
            if etag and etag != rollout.etag:
                raise etag_mismatch(rollout.name, rollout.etag)
            now = await store.db_now(m.conn)
            return await self._apply(m, current, event(rollout, current.traffic, now), now)

        return await self._writer.write(write, RolloutResult, body)

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

    # ---- the driver's step

    async def advance_due(self, limit: int = 100) -> int:
        """Advances rollouts whose timed step is due, each in its own transaction; returns how many moved.

        The due rollout's deployment row is locked with SKIP LOCKED, and the step is applied only if the
        rollout still waits on the step it was found on, so replicas racing on one rollout advance it once.
        """
        moved = 0
        for _ in range(limit):
            try:
                advanced = await self._writer.write(DRIVER_WRITE, None, self._advance_one)
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
        gated = (
            rollout.analysis is not None
            and rollout.state is RolloutState.PROGRESSING
            and rollout.current_step == due.current_step
            and rollout.next_step_time is not None
            and rollout.next_step_time <= now
        )
        if gated:
            outcome = await self._gated_step(m, rollout, current, now)
            if outcome is None:
                return True  # waiting for data, its next check saved
        else:
            outcome = machine.tick(rollout, current.traffic, expected_step=due.current_step, now=now)
            if outcome is None:
                return False
        await self._writer.commit(
            m, current, entry=outcome.entry, table=outcome.table, now=now, rollout=outcome.rollout
        )
        return True

    async def _evaluate(
        self, rollout: Rollout, deployment: Deployment, now: datetime, *, not_before: datetime | None
    ) -> tuple[GateEvaluation, ...]:
        """Every gate of the rollout judged over its window ending the evaluation delay before now; one
        bounded read per gate."""
        if rollout.analysis is None:
            return ()
        alpha = gates.alpha_of(rollout.analysis)
        end = gates.window_end(rollout.analysis, now)
        found = []
        for gate in rollout.analysis.gates:
            start = gates.window_start(gate, end, not_before)
            figures = await self._gates.compare_slots(gates.window_query(gate, deployment.name, start, end))
            found.append(gates.judge(gate, figures, alpha=alpha, start=start, end=end))
        return tuple(found)

    async def _gated_step(
        self, m: Mutation, rollout: Rollout, current: Deployment, now: datetime
    ) -> machine.Outcome | None:
        """A due timed step of a rollout with gates: advance, wait for data, pause or roll back, as the
        gates decide. A wait whose verdicts are those recorded last is saved without a history entry
        (None); every other evaluation is written into the history with its figures."""
        assert rollout.analysis is not None
        evaluations = await self._evaluate(rollout, current, now, not_before=rollout.create_time)
        decision = gates.decide(rollout.analysis, evaluations, rollout.data_wait_start, now)
        table = current.traffic
        evaluated = dataclasses.replace(rollout, gate_evaluations=evaluations)
        if decision.fate is gates.StepFate.WAIT:
            recheck = now + timedelta(seconds=gates.recheck_after(rollout.analysis))
            waiting = dataclasses.replace(
                evaluated, data_wait_start=decision.wait_start, next_step_time=recheck
            )
            if not gates.worth_recording(rollout, evaluations):
                # Only the driver's bookkeeping changed (the next check, the latest figures): no transition,
                # so no revision, and the rollout keeps its etag.
                await store.save_rollout(m.conn, waiting)
                return None
            entry = HistoryEntry(
                Transition.GATE_EVALUATED, decision.reason, table, table, waiting.state, evaluations
            )
            return machine.Outcome(dataclasses.replace(waiting, update_time=now), table, entry)
        if decision.fate is gates.StepFate.ADVANCE:
            outcome = machine.tick(evaluated, table, expected_step=rollout.current_step, now=now)
            assert outcome is not None  # the caller saw it due
            reason = f"{outcome.entry.reason}; {decision.reason}"
        elif decision.fate is gates.StepFate.PAUSE:
            outcome = machine.pause(evaluated, table, reason=decision.reason, now=now)
            reason = decision.reason
        else:
            outcome = machine.rollback(
                evaluated, table, mode=RollbackMode.INSTANT, interval=None, reason=decision.reason, now=now
            )
            reason = decision.reason
        entry = dataclasses.replace(outcome.entry, reason=reason, gate_evaluations=evaluations)
        return dataclasses.replace(outcome, entry=entry)


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
