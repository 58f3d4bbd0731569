"""The rollout state machine, pure: (rollout, traffic table, event, now) -> (rollout, table, history entry).

No I/O and no clock of its own, so every transition is unit-tested directly and the service, the driver
and PlanRollout all run the same rules. An event the state does not allow raises FailedPrecondition
(reason ILLEGAL_TRANSITION) naming the state; a timer that is no longer due returns None.

Rules the functions keep:
- the canary's weight rises above 0 only while every canary endpoint is READY; the stable slot keeps
  all the traffic until then (WAITING_READY), and a canary that stops being ready drops to 0;
- every outcome's table has weights summing to 10,000;
- an event that ends the rollout is recorded under its outcome (SUCCEEDED, ROLLED_BACK, ABORTED).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelplane.server.deployments import traffic
from modelplane.server.deployments.domain import (
    ACTIVE_STATES,
    FULL_WEIGHT_BP,
    EndpointHealth,
    HistoryEntry,
    RollbackMode,
    Rollout,
    RolloutState,
    RolloutStrategy,
    SlotTraffic,
    TrafficTable,
    Transition,
)
from modelplane.server.errors import FailedPrecondition
from modelplane.v1.error_reason_pb2 import ErrorReason


@dataclass(frozen=True)
class Outcome:
    rollout: Rollout | None
    table: TrafficTable
    entry: HistoryEntry


def illegal(rollout: Rollout, event: str, hint: str = "") -> FailedPrecondition:
    state = rollout.state.name
    return FailedPrecondition(
        f"{rollout.name} is {state}: it cannot be {event}{'; ' + hint if hint else ''}",
        reason=ErrorReason.ERROR_REASON_ILLEGAL_TRANSITION,
        metadata={"resource": rollout.name, "state": state, "event": event},
    )


def _outcome(
    before: TrafficTable,
    rollout: Rollout,
    table: TrafficTable,
    transition: Transition,
    reason: str,
    now: datetime,
) -> Outcome:
    if rollout.state is RolloutState.SUCCEEDED:
        transition = Transition.SUCCEEDED
    elif rollout.state is RolloutState.ROLLED_BACK:
        transition = Transition.ROLLED_BACK
    elif rollout.state is RolloutState.ABORTED:
        transition = Transition.ABORTED
    final = rollout.state not in ACTIVE_STATES
    rollout = dataclasses.replace(
        rollout,
        update_time=now,
        end_time=now if final else None,
        next_step_time=None if final else rollout.next_step_time,
        data_wait_start=None if final else rollout.data_wait_start,
        paused_from=rollout.paused_from if rollout.state is RolloutState.PAUSED else None,
    )
    return Outcome(rollout, table, HistoryEntry(transition, reason, before, table, rollout.state))


def _succeed(rollout: Rollout, table: TrafficTable) -> tuple[Rollout, TrafficTable]:
    return dataclasses.replace(rollout, state=RolloutState.SUCCEEDED), traffic.promoted(table)


def _enter_step(
    rollout: Rollout, table: TrafficTable, step: int, now: datetime
) -> tuple[Rollout, TrafficTable]:
    """The rollout with `step` in force (a ready canary assumed); BLUE_GREEN and past-the-end succeed."""
    if rollout.strategy is not RolloutStrategy.CANARY or step >= len(rollout.steps):
        return _succeed(rollout, table)
    spec = rollout.steps[step]
    next_time = None if spec.duration is None else now + timedelta(seconds=spec.duration)
    moved = dataclasses.replace(
        rollout,
        state=RolloutState.PROGRESSING,
        current_step=step,
        next_step_time=next_time,
        data_wait_start=None,
    )
    return moved, traffic.with_canary_weight(table, spec.weight_bp)


def _wait_ready(rollout: Rollout, table: TrafficTable) -> tuple[Rollout, TrafficTable]:
    waiting = dataclasses.replace(
        rollout, state=RolloutState.WAITING_READY, next_step_time=None, data_wait_start=None
    )
    return waiting, traffic.with_canary_weight(table, 0)


def start(rollout: Rollout, table: TrafficTable, now: datetime) -> Outcome:
    """Starts a PENDING rollout on a table with no canary: the canary slot joins at weight 0."""
    if rollout.state is not RolloutState.PENDING:
        raise illegal(rollout, "started")
    assert table.canary is None, "one active rollout per deployment"
    canary = SlotTraffic(model_version=rollout.target_version, endpoints=rollout.endpoints, weight_bp=0)
    with_canary = TrafficTable(
        stable=dataclasses.replace(table.stable, weight_bp=FULL_WEIGHT_BP), canary=canary
    )
    started = dataclasses.replace(rollout, current_step=0, from_version=table.stable.model_version)
    if rollout.strategy is RolloutStrategy.IMMEDIATE:
        moved, after = _succeed(started, with_canary)
    elif traffic.canary_ready(with_canary):
        moved, after = _enter_step(started, with_canary, 0, now)
    else:
        moved, after = _wait_ready(started, with_canary)
    return _outcome(table, moved, after, Transition.ROLLOUT_STARTED, rollout.reason, now)


def promote(rollout: Rollout, table: TrafficTable, *, to_end: bool, reason: str, now: datetime) -> Outcome:
    """The next step (or success after the last one, or with to_end); only while PROGRESSING."""
    if rollout.state is not RolloutState.PROGRESSING:
        hint = {
            RolloutState.WAITING_READY: "its canary endpoints are not all READY yet",
            RolloutState.PAUSED: "resume it first",
        }.get(rollout.state, "")
        raise illegal(rollout, "promoted", hint)
    if to_end:
        moved, after = _succeed(rollout, table)
    else:
        moved, after = _enter_step(rollout, table, rollout.current_step + 1, now)
    return _outcome(table, moved, after, Transition.PROMOTED, reason, now)


def tick(rollout: Rollout, table: TrafficTable, *, expected_step: int, now: datetime) -> Outcome | None:
    """A timed step ran out. None unless the rollout still waits on that very step and it is due, so a
    step seen by two drivers (or by a driver and a person) advances once."""
    due = rollout.next_step_time is not None and rollout.next_step_time <= now
    if not due or rollout.current_step != expected_step:
        return None
    if rollout.state is RolloutState.PROGRESSING:
        moved, after = _enter_step(rollout, table, rollout.current_step + 1, now)
        reason = f"step {rollout.current_step} ran its duration"
    elif rollout.state is RolloutState.ROLLING_BACK:
        moved, after = _step_down(rollout, table, now)
        reason = "stepped rollback: next step down"
    else:
        return None
    return _outcome(table, moved, after, Transition.STEP_ADVANCED, reason, now)


def pause(rollout: Rollout, table: TrafficTable, *, reason: str, now: datetime) -> Outcome:
    if rollout.state not in (RolloutState.WAITING_READY, RolloutState.PROGRESSING):
        raise illegal(rollout, "paused")
    paused = dataclasses.replace(
        rollout,
        state=RolloutState.PAUSED,
        paused_from=rollout.state,
        next_step_time=None,
        data_wait_start=None,
    )
    return _outcome(table, paused, table, Transition.PAUSED, reason, now)


def resume(rollout: Rollout, table: TrafficTable, *, reason: str, now: datetime) -> Outcome:
    """Back to the current step (its duration starts afresh), or to WAITING_READY if the canary is not."""
    if rollout.state is not RolloutState.PAUSED:
        raise illegal(rollout, "resumed")
    if traffic.canary_ready(table):
        moved, after = _enter_step(rollout, table, rollout.current_step, now)
    else:
        moved, after = _wait_ready(rollout, table)
    return _outcome(table, moved, after, Transition.RESUMED, reason, now)


def _step_down(rollout: Rollout, table: TrafficTable, now: datetime) -> tuple[Rollout, TrafficTable]:
    if rollout.current_step <= 0:
        return dataclasses.replace(rollout, state=RolloutState.ROLLED_BACK), traffic.without_canary(table)
    step = rollout.current_step - 1
    assert rollout.rollback_interval is not None
    moved = dataclasses.replace(
        rollout,
        state=RolloutState.ROLLING_BACK,
        current_step=step,
        next_step_time=now + timedelta(seconds=rollout.rollback_interval),
    )
    return moved, traffic.with_canary_weight(table, rollout.steps[step].weight_bp)


def rollback(
    rollout: Rollout,
    table: TrafficTable,
    *,
    mode: RollbackMode,
    interval: float | None,
    reason: str,
    now: datetime,
) -> Outcome:
    """INSTANT: the canary goes now. STEPPED: down the steps already taken, one per interval."""
    if rollout.state not in ACTIVE_STATES:
        raise illegal(rollout, "rolled back")
    if mode is RollbackMode.STEPPED and rollout.state is RolloutState.ROLLING_BACK:
        raise illegal(rollout, "rolled back STEPPED again", "roll it back INSTANT to finish now")
    marked = dataclasses.replace(rollout, rollback_mode=mode, rollback_interval=interval)
    has_weight = table.canary is not None and table.canary.weight_bp > 0
    if mode is RollbackMode.STEPPED and has_weight and rollout.current_step > 0:
        moved, after = _step_down(marked, table, now)
        return _outcome(table, moved, after, Transition.ROLLBACK_STARTED, reason, now)
    ended = dataclasses.replace(marked, state=RolloutState.ROLLED_BACK)
    return _outcome(table, ended, traffic.without_canary(table), Transition.ROLLED_BACK, reason, now)


def abort(rollout: Rollout, table: TrafficTable, *, reason: str, now: datetime) -> Outcome:
    if rollout.state not in ACTIVE_STATES:
        raise illegal(rollout, "aborted")
    ended = dataclasses.replace(rollout, state=RolloutState.ABORTED)
    return _outcome(table, ended, traffic.without_canary(table), Transition.ABORTED, reason, now)


def health(
    rollout: Rollout | None,
    table: TrafficTable,
    *,
    address: str,
    health: EndpointHealth,
    now: datetime,
) -> Outcome | None:
    """An endpoint's readiness changed; None when that changes nothing in the table."""
    updated = traffic.with_health(table, address, health)
    if updated == table:
        return None
    reason = f"{address} reported {'ready' if health is EndpointHealth.READY else 'not ready'}"
    if rollout is None or rollout.state not in ACTIVE_STATES or updated.canary is None:
        return Outcome(rollout, updated, HistoryEntry(Transition.HEALTH_CHANGED, reason, table, updated))
    ready = traffic.canary_ready(updated)
    moved, after = rollout, updated
    if rollout.state is RolloutState.WAITING_READY and ready:
        moved, after = _enter_step(rollout, updated, rollout.current_step, now)
    elif rollout.state is RolloutState.PROGRESSING and not ready:
        moved, after = _wait_ready(rollout, updated)
    elif rollout.state is RolloutState.PAUSED and not ready:
        # Paused keeps its place, but never with weight on a canary that is not ready.
        moved = dataclasses.replace(rollout, paused_from=RolloutState.WAITING_READY)
        after = traffic.with_canary_weight(updated, 0)
    elif rollout.state is RolloutState.ROLLING_BACK and not ready:
        moved, after = (
            dataclasses.replace(rollout, state=RolloutState.ROLLED_BACK),
            traffic.without_canary(updated),
        )
    return _outcome(table, moved, after, Transition.HEALTH_CHANGED, reason, now)
