"""Rollout analysis gates against a real server, Postgres and the log collector: events written through
LogService for the canary and stable slots, the step driver deciding each gated step (promotion, rollback
naming the gate, pause, waiting for data then the strategy's action), once across two replicas, every
evaluation in the history, the recorded window giving the same figures through AggregateLogEvents after
late events are stored, PlanRollout's figures, and INVALID_ARGUMENT with the path of every bad field.

Each rollout's first step holds until promoted, so the events are all stored before the timed step whose
end the gates decide starts: nothing here races the driver.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.client import DeploymentClient
from modelplane.client.errors import InvalidArgument
from modelplane.v1 import (
    common_pb2,
    deployments_pb2_grpc,
    guardrails_pb2_grpc,
    logs_pb2_grpc,
    registry_pb2_grpc,
)
from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import registry_pb2 as rpb
from tests.support import StartServer
from tests.support.rich_errors import rich

if TYPE_CHECKING:
    from modelplane.v1.deployments_pb2_grpc import DeploymentServiceAsyncStub as DeploymentStub
else:
    DeploymentStub = Any

TIMEOUT = 10.0
DEPLOYMENT = "deployments/chat-prod"
MODEL = "models/chat"
V1, V2 = f"{MODEL}/versions/1", f"{MODEL}/versions/2"
CANARY = ["10.0.1.1:8000"]
DRIVER = "modelplane-driver"


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


async def _setup(channel: grpc.aio.Channel) -> DeploymentStub:
    reg = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    dep = deployments_pb2_grpc.DeploymentServiceStub(channel)
    await reg.CreateModel(rpb.CreateModelRequest(model_id="chat", model=rpb.Model(provider="local")))
    for _ in range(2):
        await reg.CreateModelVersion(
            rpb.CreateModelVersionRequest(
                parent=MODEL,
                model_version=rpb.ModelVersion(
                    source_uri="local:chat",
                    context_window=8192,
                    max_output_tokens=1024,
                    pricing=rpb.TokenPricing(currency_code="USD"),
                ),
            )
        )
    await dep.CreateDeployment(
        dpb.CreateDeploymentRequest(
            deployment_id="chat-prod",
            deployment=dpb.Deployment(
                environment="prod",
                model=MODEL,
                traffic=dpb.TrafficTable(
                    stable=dpb.SlotTraffic(
                        model_version=V1, endpoints=[dpb.Endpoint(address="10.0.0.1:8000")]
                    )
                ),
            ),
        ),
        timeout=TIMEOUT,
    )
    for address in CANARY:
        await dep.ReportEndpointHealth(
            dpb.ReportEndpointHealthRequest(deployment=DEPLOYMENT, address=address, ready=True),
            timeout=TIMEOUT,
        )
    return dep


def _error_gate(on_failure: int = dpb.GATE_ACTION_ROLLBACK, name: str = "errors") -> dpb.AnalysisGate:
    return dpb.AnalysisGate(
        name=name,
        signal=dpb.ANALYSIS_SIGNAL_ERROR_RATE,
        window=_duration(600),
        min_samples=200,
        bound=dpb.GateBound(max_ratio=1.0),
        on_failure=on_failure,  # type: ignore[arg-type]
    )


def _latency_gate() -> dpb.AnalysisGate:
    return dpb.AnalysisGate(
        name="p95",
        signal=dpb.ANALYSIS_SIGNAL_LATENCY_P95,
        window=_duration(600),
        min_samples=200,
        bound=dpb.GateBound(max_ratio=1.2, margin=5.0),
        on_failure=dpb.GATE_ACTION_PAUSE,
    )


def _rollout(
    gates: Sequence[dpb.AnalysisGate],
    *,
    wait: float = 30.0,
    on_no_data: int = dpb.GATE_ACTION_PAUSE,
    delay: float | None = 0.0,
) -> dpb.Rollout:
    """A CANARY rollout with `gates`. The evaluation delay is 0 unless given (None: unset): these tests
    store every event before the evaluation, and their windows start at the rollout's start."""
    return dpb.Rollout(
        target_version=V2,
        endpoints=[dpb.Endpoint(address=a) for a in CANARY],
        strategy=dpb.ROLLOUT_STRATEGY_CANARY,
        steps=[
            dpb.RolloutStep(weight_bp=1000, pause_until_promoted=True),
            dpb.RolloutStep(weight_bp=5000, duration=_duration(0.3)),
        ],
        analysis=dpb.RolloutAnalysis(
            gates=list(gates),
            max_wait_for_data=_duration(wait),
            on_no_data=on_no_data,  # type: ignore[arg-type]
            evaluation_delay=None if delay is None else _duration(delay),
        ),
    )


def _inference(
    slot: int, i: int, *, error: bool, latency_ms: int, at: datetime | None = None
) -> lpb.LogEvent:
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC) if at is None else at)
    return lpb.LogEvent(
        event_id=f"{uuid.uuid4()}",
        event_time=now,
        service="llm-client",
        level=lpb.LOG_LEVEL_ERROR if error else lpb.LOG_LEVEL_INFO,
        links=common_pb2.EventLinks(deployment=DEPLOYMENT, traffic_slot=slot),  # type: ignore[arg-type]
        inference=lpb.InferencePayload(
            provider="local",
            model_version=V2 if slot == common_pb2.TRAFFIC_SLOT_CANARY else V1,
            input_tokens=100,
            output_tokens=50,
            latency=_duration(latency_ms / 1000),
            status=lpb.INFERENCE_STATUS_ERROR if error else lpb.INFERENCE_STATUS_OK,
        ),
    )


async def _feed(
    channel: grpc.aio.Channel, slot: int, n: int, errors: int, at: datetime | None = None
) -> None:
    """n inference events of the slot emitted `at` (default: now), the first `errors` of them failed,
    latencies 1..100 ms alike on both slots."""
    logs = logs_pb2_grpc.LogServiceStub(channel)
    events = [_inference(slot, i, error=i < errors, latency_ms=1 + i % 100, at=at) for i in range(n)]
    for start in range(0, n, 1000):
        await logs.WriteLogEvents(
            lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=events[start : start + 1000])),
            timeout=TIMEOUT,
        )


async def _start(dep: DeploymentStub, rollout: dpb.Rollout) -> str:
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent=DEPLOYMENT, rollout=rollout), timeout=TIMEOUT
    )
    return started.rollout.name


async def _promote(dep: DeploymentStub, name: str) -> None:
    await dep.PromoteRollout(dpb.PromoteRolloutRequest(name=name), timeout=TIMEOUT)


async def _wait_state(dep: DeploymentStub, name: str, state: int, within: float = 20.0) -> dpb.Rollout:
    async with asyncio.timeout(within):
        while True:
            rollout = (await dep.GetRollout(dpb.GetRolloutRequest(name=name), timeout=TIMEOUT)).rollout
            if rollout.state == state:
                return rollout
            await asyncio.sleep(0.05)


async def _history(dep: DeploymentStub) -> list[dpb.DeploymentHistoryEntry]:
    page = await dep.ListDeploymentHistory(
        dpb.ListDeploymentHistoryRequest(parent=DEPLOYMENT, page_size=1000), timeout=TIMEOUT
    )
    return list(page.entries)[::-1]


def _by_driver(entries: Sequence[dpb.DeploymentHistoryEntry]) -> list[dpb.DeploymentHistoryEntry]:
    return [e for e in entries if e.actor == DRIVER]


async def test_equal_slots_pass_and_the_step_advances_to_success(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    name = await _start(dep, _rollout([_error_gate(), _latency_gate()]))
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 20)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 1000, 20)
    await _promote(dep, name)
    done = await _wait_state(dep, name, dpb.ROLLOUT_STATE_SUCCEEDED)
    assert [e.verdict for e in done.gate_evaluations] == [dpb.GATE_VERDICT_PASS] * 2
    (decided,) = _by_driver(await _history(dep))
    assert decided.transition == dpb.DEPLOYMENT_TRANSITION_SUCCEEDED
    assert "gates passed: errors, p95" in decided.reason
    errors, latency = decided.gate_evaluations
    assert (errors.gate, errors.canary_samples, errors.stable_samples) == ("errors", 1000, 1000)
    assert errors.canary_value == pytest.approx(0.02)
    assert errors.stable_value == pytest.approx(0.02)
    assert errors.verdict == dpb.GATE_VERDICT_PASS
    assert errors.p_value >= 0.01
    assert errors.window_end.ToDatetime() > errors.window_start.ToDatetime()
    # Latencies 1..100 ms on both slots: p95 = 95 ms; the bar is 1.2 x 95 + 5 ms.
    assert (latency.canary_value, latency.stable_value) == (95.0, 95.0)
    assert latency.threshold == pytest.approx(119.0)


async def test_canary_errors_three_times_stable_roll_back_naming_the_gate(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    name = await _start(dep, _rollout([_latency_gate(), _error_gate()]))
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 20)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 1000, 62)
    await _promote(dep, name)
    done = await _wait_state(dep, name, dpb.ROLLOUT_STATE_ROLLED_BACK)
    (decided,) = _by_driver(await _history(dep))
    assert decided.transition == dpb.DEPLOYMENT_TRANSITION_ROLLED_BACK
    assert decided.reason.startswith("gate errors failed: canary error rate 0.0620 (62/1000)")
    assert not decided.traffic_after.HasField("canary")
    verdicts = {e.gate: e.verdict for e in decided.gate_evaluations}
    assert verdicts == {"p95": dpb.GATE_VERDICT_PASS, "errors": dpb.GATE_VERDICT_FAIL}
    failed = done.gate_evaluations[1]
    assert failed.p_value < 0.01
    assert failed.canary_value == pytest.approx(0.062)


async def test_a_failing_gate_with_on_failure_pause_pauses(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    name = await _start(dep, _rollout([_error_gate(dpb.GATE_ACTION_PAUSE)]))
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 20)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 1000, 100)
    await _promote(dep, name)
    paused = await _wait_state(dep, name, dpb.ROLLOUT_STATE_PAUSED)
    assert paused.current_step == 1
    (decided,) = _by_driver(await _history(dep))
    assert decided.transition == dpb.DEPLOYMENT_TRANSITION_PAUSED
    assert decided.reason.startswith("gate errors failed:")
    # Paused keeps the canary's weight where it was: a person decides now.
    assert decided.traffic_after.canary.weight_bp == 5000


async def test_short_data_waits_then_the_strategy_acts(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    name = await _start(dep, _rollout([_error_gate()], wait=2.0, on_no_data=dpb.GATE_ACTION_ROLLBACK))
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 0)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 50, 0)
    await _promote(dep, name)
    waiting = await _wait_state(dep, name, dpb.ROLLOUT_STATE_PROGRESSING)
    async with asyncio.timeout(10):
        while not waiting.HasField("data_wait_start"):
            await asyncio.sleep(0.05)
            waiting = (await dep.GetRollout(dpb.GetRolloutRequest(name=name), timeout=TIMEOUT)).rollout
    assert waiting.gate_evaluations[0].verdict == dpb.GATE_VERDICT_INCONCLUSIVE
    assert "canary has 50 of the 200 events needed" in waiting.gate_evaluations[0].reason
    await _wait_state(dep, name, dpb.ROLLOUT_STATE_ROLLED_BACK)
    by_driver = _by_driver(await _history(dep))
    # One entry when the verdict first became INCONCLUSIVE (the rechecks in between changed nothing), one
    # for the decision after the wait.
    assert [e.transition for e in by_driver] == [
        dpb.DEPLOYMENT_TRANSITION_GATE_EVALUATED,
        dpb.DEPLOYMENT_TRANSITION_ROLLED_BACK,
    ]
    evaluated, decided = by_driver
    assert evaluated.traffic_after == evaluated.traffic_before
    assert evaluated.gate_evaluations[0].verdict == dpb.GATE_VERDICT_INCONCLUSIVE
    assert evaluated.gate_evaluations[0].canary_samples == 50
    assert decided.reason == "not enough data after 2 s for gates errors: on_no_data ROLLBACK"


async def test_short_data_then_data_arrives_and_the_step_advances(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    name = await _start(dep, _rollout([_error_gate()], wait=30.0))
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 10)
    await _promote(dep, name)
    async with asyncio.timeout(10):
        while True:
            if _by_driver(await _history(dep)):
                break
            await asyncio.sleep(0.05)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 1000, 10)
    await _wait_state(dep, name, dpb.ROLLOUT_STATE_SUCCEEDED)
    transitions = [e.transition for e in _by_driver(await _history(dep))]
    assert transitions == [dpb.DEPLOYMENT_TRANSITION_GATE_EVALUATED, dpb.DEPLOYMENT_TRANSITION_SUCCEEDED]


async def _aggregate_by_slot(
    channel: grpc.aio.Channel, start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp
) -> dict[int, lpb.LogGroup]:
    """The deployment's inference events over [start, end) through AggregateLogEvents, by traffic slot."""
    logs = logs_pb2_grpc.LogServiceStub(channel)
    found = await logs.AggregateLogEvents(
        lpb.AggregateLogEventsRequest(
            filter=f'deployment = "{DEPLOYMENT}" AND kind = INFERENCE'
            f' AND event_time >= "{start.ToJsonString()}" AND event_time < "{end.ToJsonString()}"',
            group_by=[lpb.LOG_GROUP_BY_TRAFFIC_SLOT],
        ),
        timeout=TIMEOUT,
    )
    return {g.traffic_slot: g for g in found.groups}


async def test_aggregating_the_recorded_window_later_gives_the_gates_figures(
    channel: grpc.aio.Channel,
) -> None:
    dep = await _setup(channel)
    # The analysis leaves evaluation_delay unset: each window ends 2 s before the evaluation.
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent=DEPLOYMENT, rollout=_rollout([_error_gate()], delay=None)),
        timeout=TIMEOUT,
    )
    name, begun = started.rollout.name, started.rollout.create_time.ToDatetime(tzinfo=UTC)
    assert not started.rollout.analysis.HasField("evaluation_delay")
    emitted = begun + timedelta(milliseconds=100)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 20, at=emitted)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 1000, 30, at=emitted)
    # The step is decided 0.3 s after the promotion; promoting once the delay has passed since the events
    # were emitted puts them in the window.
    await asyncio.sleep(max(0.0, (emitted + timedelta(seconds=2.2) - datetime.now(UTC)).total_seconds()))
    await _promote(dep, name)
    done = await _wait_state(dep, name, dpb.ROLLOUT_STATE_SUCCEEDED)
    (decided,) = _by_driver(await _history(dep))
    (evaluation,) = decided.gate_evaluations
    assert evaluation == done.gate_evaluations[0]
    # The window ends the delay before the evaluation, the driver's clock reading that dates the entry.
    end = evaluation.window_end.ToDatetime(tzinfo=UTC)
    assert end == decided.create_time.ToDatetime(tzinfo=UTC) - timedelta(seconds=2)
    assert evaluation.window_start.ToDatetime(tzinfo=UTC) == begun
    # Events emitted before the evaluation but stored after it: a shipper's batch still in flight. They
    # are in the last 2 s before the evaluation, outside the recorded window.
    late = end + timedelta(seconds=1)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 100, 50, at=late)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 100, 50, at=late)
    groups = await _aggregate_by_slot(channel, evaluation.window_start, evaluation.window_end)
    canary, stable = groups[common_pb2.TRAFFIC_SLOT_CANARY], groups[common_pb2.TRAFFIC_SLOT_STABLE]
    assert (
        (canary.count, stable.count)
        == (evaluation.canary_samples, evaluation.stable_samples)
        == (
            1000,
            1000,
        )
    )
    assert canary.error_rate == pytest.approx(evaluation.canary_value, rel=1e-12)
    assert stable.error_rate == pytest.approx(evaluation.stable_value, rel=1e-12)
    # A window ending at the evaluation time itself would read different figures now than it did then.
    naive = await _aggregate_by_slot(channel, evaluation.window_start, decided.create_time)
    assert naive[common_pb2.TRAFFIC_SLOT_CANARY].count == 1100


async def test_two_replicas_decide_a_gated_step_once(start_server: StartServer) -> None:
    replicas = [await start_server(), await start_server()]
    async with grpc.aio.insecure_channel(replicas[0].target) as channel:
        dep = await _setup(channel)
        name = await _start(dep, _rollout([_error_gate()], wait=1.5, on_no_data=dpb.GATE_ACTION_PROCEED))
        await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 20)
        await _promote(dep, name)
        await _wait_state(dep, name, dpb.ROLLOUT_STATE_SUCCEEDED)
        by_driver = _by_driver(await _history(dep))
        assert [e.transition for e in by_driver] == [
            dpb.DEPLOYMENT_TRANSITION_GATE_EVALUATED,
            dpb.DEPLOYMENT_TRANSITION_SUCCEEDED,
        ]
        assert "on_no_data PROCEED" in by_driver[1].reason


async def test_plan_rollout_shows_what_each_gate_would_decide_now(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 1000, 20)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 1000, 80)
    strict = dpb.AnalysisGate(
        name="many",
        signal=dpb.ANALYSIS_SIGNAL_TOKENS_PER_REQUEST,
        window=_duration(600),
        min_samples=5000,
        bound=dpb.GateBound(max_value=200),
        on_failure=dpb.GATE_ACTION_PAUSE,
    )
    plan = await dep.PlanRollout(
        dpb.PlanRolloutRequest(parent=DEPLOYMENT, rollout=_rollout([_error_gate(), _latency_gate(), strict])),
        timeout=TIMEOUT,
    )
    errors, latency, many = plan.gate_evaluations
    assert (errors.verdict, errors.canary_samples, errors.stable_samples) == (
        dpb.GATE_VERDICT_FAIL,
        1000,
        1000,
    )
    assert errors.canary_value == pytest.approx(0.08)
    assert errors.stable_value == pytest.approx(0.02)
    assert latency.verdict == dpb.GATE_VERDICT_PASS
    assert many.verdict == dpb.GATE_VERDICT_INCONCLUSIVE
    assert many.canary_value == 150.0
    assert plan.rollout.analysis.gates[2].name == "many"
    # Nothing was started.
    deployment = await dep.GetDeployment(dpb.GetDeploymentRequest(name=DEPLOYMENT), timeout=TIMEOUT)
    assert deployment.deployment.active_rollout == ""


async def test_a_guardrail_gate_reads_its_policy_checks(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    guardrails = guardrails_pb2_grpc.GuardrailServiceStub(channel)
    await guardrails.CreatePolicy(
        gpb.CreatePolicyRequest(
            policy_id="stories",
            policy=gpb.Policy(
                rules=[
                    gpb.Rule(
                        id="maybe",
                        severity=gpb.SEVERITY_INFO,
                        category="style",
                        regex=gpb.RegexRule(pattern=r"\bmaybe\b"),
                    )
                ],
                default_fallback="...",
                fail_mode=gpb.FAIL_MODE_CLOSED,
            ),
        ),
        timeout=TIMEOUT,
    )
    logs = logs_pb2_grpc.LogServiceStub(channel)
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    events = [
        lpb.LogEvent(
            event_id=str(uuid.uuid4()),
            event_time=now,
            service="storyteller",
            level=lpb.LOG_LEVEL_INFO,
            links=common_pb2.EventLinks(deployment=DEPLOYMENT, traffic_slot=slot),
            guardrail=lpb.GuardrailPayload(
                policy="policies/stories",
                revision=1,
                decision=gpb.DECISION_BLOCK if i < blocks else gpb.DECISION_ALLOW,
            ),
        )
        for slot, blocks in ((common_pb2.TRAFFIC_SLOT_STABLE, 10), (common_pb2.TRAFFIC_SLOT_CANARY, 90))
        for i in range(300)
    ]
    await logs.WriteLogEvents(lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=events)), timeout=TIMEOUT)
    gate = dpb.AnalysisGate(
        name="blocks",
        signal=dpb.ANALYSIS_SIGNAL_GUARDRAIL_BLOCK_RATE,
        window=_duration(600),
        min_samples=100,
        bound=dpb.GateBound(max_ratio=2.0, margin=0.01),
        on_failure=dpb.GATE_ACTION_ROLLBACK,
        policy="policies/stories",
    )
    plan = await dep.PlanRollout(
        dpb.PlanRolloutRequest(parent=DEPLOYMENT, rollout=_rollout([gate])), timeout=TIMEOUT
    )
    (blocks,) = plan.gate_evaluations
    assert (blocks.canary_samples, blocks.stable_samples) == (300, 300)
    assert blocks.canary_value == pytest.approx(0.3)
    assert blocks.threshold == pytest.approx(2 * 10 / 300 + 0.01)
    assert blocks.verdict == dpb.GATE_VERDICT_FAIL


async def test_bad_gates_are_refused_with_every_field_path(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    bad = [
        dpb.AnalysisGate(
            name="Errors",
            signal=dpb.ANALYSIS_SIGNAL_ERROR_RATE,
            window=_duration(1),
            min_samples=10,
            bound=dpb.GateBound(max_ratio=0.5, margin=-1),
            on_failure=dpb.GATE_ACTION_PROCEED,
        ),
        dpb.AnalysisGate(
            name="blocks",
            signal=dpb.ANALYSIS_SIGNAL_GUARDRAIL_BLOCK_RATE,
            window=_duration(600),
            min_samples=100,
            bound=dpb.GateBound(max_value=1.5),
            on_failure=dpb.GATE_ACTION_PAUSE,
            policy="policies/none-such",
        ),
        dpb.AnalysisGate(
            name="cost",
            signal=dpb.ANALYSIS_SIGNAL_COST_PER_REQUEST,
            window=_duration(2 * 86400),
            min_samples=100,
            on_failure=dpb.GATE_ACTION_PAUSE,
        ),
        dpb.AnalysisGate(
            name="cost", window=_duration(60), min_samples=100, bound=dpb.GateBound(max_value=1)
        ),
    ]
    rollout = _rollout(bad, wait=0, delay=301)
    rollout.analysis.alpha = 0.5
    for call in (
        dep.StartRollout(dpb.StartRolloutRequest(parent=DEPLOYMENT, rollout=rollout), timeout=TIMEOUT),
        dep.PlanRollout(dpb.PlanRolloutRequest(parent=DEPLOYMENT, rollout=rollout), timeout=TIMEOUT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = rich(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "INVALID_FIELD"
        g = "rollout.analysis.gates"
        assert sorted(error.field_paths) == sorted(
            [
                "rollout.analysis.max_wait_for_data",
                "rollout.analysis.alpha",
                "rollout.analysis.evaluation_delay",
                f"{g}[0].name",
                f"{g}[0].window",
                f"{g}[0].min_samples",
                f"{g}[0].on_failure",
                f"{g}[0].bound.max_ratio",
                f"{g}[0].bound.margin",
                f"{g}[1].bound.max_value",
                f"{g}[1].policy",
                f"{g}[2].window",
                f"{g}[2].bound",
                f"{g}[2].currency_code",
                f"{g}[3].name",
                f"{g}[3].signal",
                f"{g}[3].on_failure",
            ]
        )
    rollouts = await dep.ListRollouts(dpb.ListRolloutsRequest(parent=DEPLOYMENT), timeout=TIMEOUT)
    assert list(rollouts.rollouts) == []


async def test_gates_need_a_timed_canary_step(channel: grpc.aio.Channel) -> None:
    dep = await _setup(channel)
    immediate = _rollout([_error_gate()])
    immediate.strategy = dpb.ROLLOUT_STRATEGY_IMMEDIATE
    del immediate.steps[:]
    untimed = _rollout([_error_gate()])
    del untimed.steps[1:]
    for rollout, path in ((immediate, "rollout.analysis"), (untimed, "rollout.analysis")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await dep.StartRollout(
                dpb.StartRolloutRequest(parent=DEPLOYMENT, rollout=rollout), timeout=TIMEOUT
            )
        error = rich(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field_paths == [path]
    empty = _rollout([])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await dep.StartRollout(dpb.StartRolloutRequest(parent=DEPLOYMENT, rollout=empty), timeout=TIMEOUT)
    assert rich(caught.value).field_paths == ["rollout.analysis.gates"]


async def test_the_python_client_carries_gates(channel: grpc.aio.Channel) -> None:
    await _setup(channel)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_STABLE, 300, 3)
    await _feed(channel, common_pb2.TRAFFIC_SLOT_CANARY, 300, 3)
    client = DeploymentClient(channel)
    plan = await client.plan_rollout(parent=DEPLOYMENT, rollout=_rollout([_error_gate()]))
    (errors,) = plan.gate_evaluations
    assert (errors.verdict, errors.canary_samples) == (dpb.GATE_VERDICT_PASS, 300)
    bad = _rollout([_error_gate()])
    bad.analysis.gates[0].bound.max_ratio = 0.5
    with pytest.raises(InvalidArgument) as caught:
        await client.start_rollout(parent=DEPLOYMENT, rollout=bad)
    assert [v.field for v in caught.value.field_violations] == ["rollout.analysis.gates[0].bound.max_ratio"]
    started = await client.start_rollout(parent=DEPLOYMENT, rollout=_rollout([_error_gate()]))
    assert started.rollout.analysis.gates[0].name == "errors"
    assert started.rollout.analysis.max_wait_for_data.seconds == 30
