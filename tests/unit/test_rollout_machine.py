"""The rollout state machine without I/O: every transition, the illegal ones, readiness gating, weights."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from modelplane.server.deployments import rollout_machine as machine
from modelplane.server.deployments.domain import (
    ACTIVE_STATES,
    Endpoint,
    EndpointHealth,
    RollbackMode,
    Rollout,
    RolloutState,
    RolloutStrategy,
    SlotTraffic,
    Step,
    TrafficTable,
    Transition,
)
from modelplane.server.deployments.rollouts import plan_stages
from modelplane.server.errors import FailedPrecondition

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TABLE = TrafficTable(stable=SlotTraffic("models/m/versions/1", (Endpoint("s1"),), 10_000))


def _rollout(
    strategy: RolloutStrategy = RolloutStrategy.CANARY,
    steps: tuple[Step, ...] = (Step(1000, 60.0), Step(5000, None)),
    health: EndpointHealth = EndpointHealth.UNKNOWN,
) -> Rollout:
    return Rollout(
        deployment_id="d",
        number=1,
        target_version="models/m/versions/2",
        endpoints=(Endpoint("c1", health=health), Endpoint("c2", health=health)),
        strategy=strategy,
        steps=steps if strategy is RolloutStrategy.CANARY else (),
        reason="",
        state=RolloutState.PENDING,
        current_step=0,
        next_step_time=None,
        from_version="",
        rollback_mode=None,
        rollback_interval=None,
        started_by="t",
        create_time=NOW,
        update_time=NOW,
        end_time=None,
        etag="",
    )


def _weights(table: TrafficTable) -> tuple[int, int | None]:
    return table.stable.weight_bp, None if table.canary is None else table.canary.weight_bp


def _ready(outcome: machine.Outcome, *addresses: str) -> machine.Outcome:
    for address in addresses:
        assert outcome.rollout is not None
        step = machine.health(
            outcome.rollout, outcome.table, address=address, health=EndpointHealth.READY, now=NOW
        )
        assert step is not None
        outcome = step
    return outcome


def test_canary_waits_for_every_endpoint_then_follows_the_steps() -> None:
    started = machine.start(_rollout(), TABLE, NOW)
    assert started.rollout is not None
    assert started.rollout.state is RolloutState.WAITING_READY
    assert _weights(started.table) == (10_000, 0)
    half = _ready(started, "c1")
    assert half.rollout is not None
    assert half.rollout.state is RolloutState.WAITING_READY
    assert _weights(half.table) == (10_000, 0)
    going = _ready(half, "c2")
    assert going.rollout is not None
    assert going.rollout.state is RolloutState.PROGRESSING
    assert _weights(going.table) == (9000, 1000)
    assert going.rollout.next_step_time == NOW + timedelta(seconds=60)
    assert going.entry.transition is Transition.HEALTH_CHANGED

    # Not due yet, or a different step: nothing happens.
    assert machine.tick(going.rollout, going.table, expected_step=0, now=NOW) is None
    later = NOW + timedelta(seconds=61)
    assert machine.tick(going.rollout, going.table, expected_step=1, now=later) is None
    ticked = machine.tick(going.rollout, going.table, expected_step=0, now=later)
    assert ticked is not None
    assert ticked.rollout is not None
    assert (ticked.rollout.current_step, ticked.rollout.next_step_time) == (1, None)
    assert _weights(ticked.table) == (5000, 5000)
    # The same tick again (a second replica) finds nothing to do.
    assert machine.tick(ticked.rollout, ticked.table, expected_step=0, now=later) is None

    done = machine.promote(ticked.rollout, ticked.table, to_end=False, reason="ok", now=later)
    assert done.rollout is not None
    assert done.rollout.state is RolloutState.SUCCEEDED
    assert done.table == TrafficTable(
        stable=SlotTraffic(
            "models/m/versions/2",
            (Endpoint("c1", health=EndpointHealth.READY), Endpoint("c2", health=EndpointHealth.READY)),
            10_000,
        )
    )
    assert done.entry.transition is Transition.SUCCEEDED
    assert done.rollout.end_time == later


def test_losing_readiness_takes_the_weight_away() -> None:
    going = machine.start(_rollout(health=EndpointHealth.READY), TABLE, NOW)
    assert going.rollout is not None
    assert going.rollout.state is RolloutState.PROGRESSING
    lost = machine.health(going.rollout, going.table, address="c2", health=EndpointHealth.NOT_READY, now=NOW)
    assert lost is not None
    assert lost.rollout is not None
    assert lost.rollout.state is RolloutState.WAITING_READY
    assert _weights(lost.table) == (10_000, 0)
    paused = machine.pause(going.rollout, going.table, reason="", now=NOW)
    assert paused.rollout is not None
    lost = machine.health(
        paused.rollout, paused.table, address="c1", health=EndpointHealth.NOT_READY, now=NOW
    )
    assert lost is not None
    assert lost.rollout is not None
    assert (lost.rollout.state, _weights(lost.table)) == (RolloutState.PAUSED, (10_000, 0))
    resumed = machine.resume(lost.rollout, lost.table, reason="", now=NOW)
    assert resumed.rollout is not None
    assert resumed.rollout.state is RolloutState.WAITING_READY


def test_a_report_that_changes_nothing_is_no_transition() -> None:
    going = machine.start(_rollout(health=EndpointHealth.READY), TABLE, NOW)
    assert (
        machine.health(going.rollout, going.table, address="c1", health=EndpointHealth.READY, now=NOW) is None
    )
    assert machine.health(None, TABLE, address="elsewhere", health=EndpointHealth.READY, now=NOW) is None


def test_strategies_without_steps() -> None:
    immediate = machine.start(_rollout(RolloutStrategy.IMMEDIATE), TABLE, NOW)
    assert immediate.rollout is not None
    assert immediate.rollout.state is RolloutState.SUCCEEDED
    assert immediate.table.stable.model_version == "models/m/versions/2"
    blue_green = machine.start(_rollout(RolloutStrategy.BLUE_GREEN), TABLE, NOW)
    assert blue_green.rollout is not None
    assert blue_green.rollout.state is RolloutState.WAITING_READY
    switched = _ready(blue_green, "c1", "c2")
    assert switched.rollout is not None
    assert switched.rollout.state is RolloutState.SUCCEEDED
    assert _weights(switched.table) == (10_000, None)


def test_stepped_rollback_walks_down_the_steps_taken() -> None:
    steps = (Step(1000, None), Step(2000, None), Step(4000, None))
    outcome = machine.start(_rollout(steps=steps, health=EndpointHealth.READY), TABLE, NOW)
    for _ in range(2):
        assert outcome.rollout is not None
        outcome = machine.promote(outcome.rollout, outcome.table, to_end=False, reason="", now=NOW)
    assert outcome.rollout is not None
    assert _weights(outcome.table) == (6000, 4000)
    back = machine.rollback(
        outcome.rollout, outcome.table, mode=RollbackMode.STEPPED, interval=10, reason="", now=NOW
    )
    seen = [_weights(back.table)]
    when = NOW
    while back.rollout is not None and back.rollout.state is RolloutState.ROLLING_BACK:
        when += timedelta(seconds=11)
        step = machine.tick(back.rollout, back.table, expected_step=back.rollout.current_step, now=when)
        assert step is not None
        back = step
        seen.append(_weights(back.table))
    assert seen == [(8000, 2000), (9000, 1000), (10_000, None)]
    assert back.rollout is not None
    assert back.rollout.state is RolloutState.ROLLED_BACK
    assert back.rollout.rollback_mode is RollbackMode.STEPPED


ILLEGAL = [
    ("promote", RolloutState.WAITING_READY),
    ("promote", RolloutState.PAUSED),
    ("pause", RolloutState.PAUSED),
    ("pause", RolloutState.ROLLING_BACK),
    ("resume", RolloutState.PROGRESSING),
    *[
        (event, state)
        for event in ("promote", "pause", "resume", "rollback", "abort")
        for state in (
            RolloutState.SUCCEEDED,
            RolloutState.ROLLED_BACK,
            RolloutState.ABORTED,
        )
    ],
]


@pytest.mark.parametrize(("event", "state"), ILLEGAL)
def test_illegal_transitions_name_the_state(event: str, state: RolloutState) -> None:
    rollout = dataclasses.replace(_rollout(), state=state)
    table = TrafficTable(TABLE.stable, SlotTraffic("models/m/versions/2", rollout.endpoints, 0))
    calls = {
        "promote": lambda: machine.promote(rollout, table, to_end=False, reason="", now=NOW),
        "pause": lambda: machine.pause(rollout, table, reason="", now=NOW),
        "resume": lambda: machine.resume(rollout, table, reason="", now=NOW),
        "rollback": lambda: machine.rollback(
            rollout, table, mode=RollbackMode.INSTANT, interval=None, reason="", now=NOW
        ),
        "abort": lambda: machine.abort(rollout, table, reason="", now=NOW),
    }
    with pytest.raises(FailedPrecondition) as caught:
        calls[event]()
    assert caught.value.reason == "ILLEGAL_TRANSITION"
    assert caught.value.metadata["state"] == state.name


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_abort_and_instant_rollback_from_every_active_state(state: RolloutState) -> None:
    rollout = dataclasses.replace(_rollout(), state=state, current_step=1)
    table = TrafficTable(
        dataclasses.replace(TABLE.stable, weight_bp=5000),
        SlotTraffic("models/m/versions/2", rollout.endpoints, 5000),
    )
    aborted = machine.abort(rollout, table, reason="", now=NOW)
    assert aborted.rollout is not None
    assert aborted.rollout.state is RolloutState.ABORTED
    rolled = machine.rollback(rollout, table, mode=RollbackMode.INSTANT, interval=None, reason="", now=NOW)
    assert rolled.rollout is not None
    assert rolled.rollout.state is RolloutState.ROLLED_BACK
    for outcome in (aborted, rolled):
        assert outcome.table == TrafficTable(TABLE.stable)
        assert outcome.entry.traffic_before == table


def test_every_table_sums_to_full_weight_and_the_plan_follows_the_machine() -> None:
    steps = (Step(1, 1.0), Step(2500, None), Step(10_000, 5.0))
    stages = plan_stages(_rollout(steps=steps), TABLE, NOW)
    assert [(s.state, s.step) for s in stages] == [
        (RolloutState.WAITING_READY, -1),
        (RolloutState.PROGRESSING, 0),
        (RolloutState.PROGRESSING, 1),
        (RolloutState.PROGRESSING, 2),
        (RolloutState.SUCCEEDED, -1),
    ]
    for stage in stages:
        canary = 0 if stage.traffic.canary is None else stage.traffic.canary.weight_bp
        assert stage.traffic.stable.weight_bp + canary == 10_000
    assert [s.advance for s in stages[1:4]] == list(steps)
