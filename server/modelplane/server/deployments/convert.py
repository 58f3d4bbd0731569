"""Conversions between the deployment manager's proto messages and its domain values, in one place.

Enum values that are UNSPECIFIED or unknown on input are refused with the field's path, and so is a step
whose `advance` is missing or a `pause_until_promoted` set to false: no field is ignored silently. What
cannot be read goes into the domain value's `refused`, which validation reports beside every other
violation of the request.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import duration_pb2

from modelplane.server.deployments.domain import (
    Analysis,
    AnalysisSignal,
    Deployment,
    DeploymentChange,
    DeploymentFields,
    Endpoint,
    EndpointHealth,
    Gate,
    GateAction,
    GateBound,
    GateEvaluation,
    GateVerdict,
    HistoryRecord,
    Plan,
    RollbackMode,
    RollbackSpec,
    Rollout,
    RolloutSpec,
    RolloutState,
    RolloutStrategy,
    Route,
    SlotTraffic,
    Step,
    TrafficSlot,
    TrafficTable,
    Transition,
    rollout_name,
)
from modelplane.server.errors import FieldViolation
from modelplane.server.proto_time import check_duration, timestamp
from modelplane.server.store.changes import ProgressMark
from modelplane.v1 import common_pb2, registry_pb2
from modelplane.v1 import deployments_pb2 as pb

_HEALTH = {
    EndpointHealth.UNKNOWN: pb.ENDPOINT_HEALTH_UNSPECIFIED,
    EndpointHealth.READY: pb.ENDPOINT_HEALTH_READY,
    EndpointHealth.NOT_READY: pb.ENDPOINT_HEALTH_NOT_READY,
}
_STRATEGY = {
    RolloutStrategy.CANARY: pb.ROLLOUT_STRATEGY_CANARY,
    RolloutStrategy.BLUE_GREEN: pb.ROLLOUT_STRATEGY_BLUE_GREEN,
    RolloutStrategy.IMMEDIATE: pb.ROLLOUT_STRATEGY_IMMEDIATE,
}
_STRATEGY_FROM: dict[int, RolloutStrategy] = {int(number): s for s, number in _STRATEGY.items()}
_STATE = {state: pb.RolloutState.Value(f"ROLLOUT_STATE_{state.name}") for state in RolloutState}
_MODE = {RollbackMode.INSTANT: pb.ROLLBACK_MODE_INSTANT, RollbackMode.STEPPED: pb.ROLLBACK_MODE_STEPPED}
_MODE_FROM: dict[int, RollbackMode] = {int(number): mode for mode, number in _MODE.items()}
_TRANSITION = {t: pb.DeploymentTransition.Value(f"DEPLOYMENT_TRANSITION_{t.name}") for t in Transition}
# A traffic slot as every capability's messages carry it (a guardrail check's links, a log event's).
SLOT_TO_PROTO = {
    TrafficSlot.NONE: common_pb2.TRAFFIC_SLOT_UNSPECIFIED,
    TrafficSlot.STABLE: common_pb2.TRAFFIC_SLOT_STABLE,
    TrafficSlot.CANARY: common_pb2.TRAFFIC_SLOT_CANARY,
}
SLOT_FROM_PROTO = {number: slot for slot, number in SLOT_TO_PROTO.items()}
_SIGNAL = {s: pb.AnalysisSignal.Value(f"ANALYSIS_SIGNAL_{s.name}") for s in AnalysisSignal}
_SIGNAL_FROM: dict[int, AnalysisSignal] = {int(number): s for s, number in _SIGNAL.items()}
_ACTION = {a: pb.GateAction.Value(f"GATE_ACTION_{a.name}") for a in GateAction}
_ACTION_FROM: dict[int, GateAction] = {int(number): a for a, number in _ACTION.items()}
_VERDICT = {v: pb.GateVerdict.Value(f"GATE_VERDICT_{v.name}") for v in GateVerdict}
_CHANGE_KINDS = {
    "created": registry_pb2.CHANGE_KIND_CREATED,
    "updated": registry_pb2.CHANGE_KIND_UPDATED,
    "deleted": registry_pb2.CHANGE_KIND_DELETED,
}


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


# ---- to the domain


def endpoints_from_proto(endpoints: Iterable[pb.Endpoint]) -> tuple[Endpoint, ...]:
    # health is output only (AIP-203): what a caller sends there is not theirs to set.
    return tuple(Endpoint(address=e.address, labels=dict(e.labels)) for e in endpoints)


def deployment_fields(d: pb.Deployment) -> DeploymentFields:
    return DeploymentFields(
        environment=d.environment,
        model=d.model,
        stable_version=d.traffic.stable.model_version,
        stable_endpoints=endpoints_from_proto(d.traffic.stable.endpoints),
        stable_weight_bp=d.traffic.stable.weight_bp,
        canary_given=d.traffic.HasField("canary"),
        description=d.description,
        labels=dict(d.labels),
    )


def _seconds(value: duration_pb2.Duration, path: str, found: list[FieldViolation]) -> float | None:
    """The duration in seconds; None (and a violation) when it is not a valid google.protobuf.Duration."""
    violation = check_duration(value, path)
    if violation is not None:
        found.append(violation)
        return None
    return value.seconds + value.nanos / 1e9


def _step(step: pb.RolloutStep, path: str, found: list[FieldViolation]) -> Step:
    """The step; one whose end cannot be read is a violation in `found` and holds until promoted here, so
    that the steps after it keep their indexes for validation."""
    which = step.WhichOneof("advance")
    seconds = None
    if which is None:
        found.append(FieldViolation(path, "set pause_until_promoted or duration: how the step ends"))
    elif which == "pause_until_promoted" and not step.pause_until_promoted:
        found.append(
            FieldViolation(f"{path}.pause_until_promoted", "must be true when set; or set duration instead")
        )
    elif which == "duration":
        seconds = _seconds(step.duration, f"{path}.duration", found)
        if seconds is not None and seconds <= 0:
            found.append(FieldViolation(f"{path}.duration", "must be more than 0"))
            seconds = None
    return Step(weight_bp=step.weight_bp, duration=seconds)


def _gate(g: pb.AnalysisGate, path: str, found: list[FieldViolation]) -> Gate:
    """The gate; an unset or unknown enum, or an unreadable window, is None (validation names it)."""
    window = _seconds(g.window, f"{path}.window", found) if g.HasField("window") else None
    bound = None
    if g.HasField("bound"):
        which = g.bound.WhichOneof("limit")
        bound = GateBound(
            max_value=g.bound.max_value if which == "max_value" else None,
            max_ratio=g.bound.max_ratio if which == "max_ratio" else None,
            margin=g.bound.margin,
        )
    return Gate(
        name=g.name,
        signal=_SIGNAL_FROM.get(g.signal),
        window=window,
        min_samples=g.min_samples,
        bound=bound,
        on_failure=_ACTION_FROM.get(g.on_failure),
        currency_code=g.currency_code,
        policy=g.policy,
    )


def _analysis(a: pb.RolloutAnalysis, found: list[FieldViolation]) -> Analysis:
    path = "rollout.analysis"
    wait = None
    if a.HasField("max_wait_for_data"):
        wait = _seconds(a.max_wait_for_data, f"{path}.max_wait_for_data", found)
    delay = None
    if a.HasField("evaluation_delay"):
        delay = _seconds(a.evaluation_delay, f"{path}.evaluation_delay", found)
    return Analysis(
        gates=tuple(_gate(g, f"{path}.gates[{i}]", found) for i, g in enumerate(a.gates)),
        max_wait_for_data=wait,
        on_no_data=_ACTION_FROM.get(a.on_no_data),
        alpha=a.alpha,
        evaluation_delay=delay,
    )


def rollout_spec(r: pb.Rollout) -> RolloutSpec:
    found: list[FieldViolation] = []
    strategy = _STRATEGY_FROM.get(r.strategy)
    steps = [_step(step, f"rollout.steps[{i}]", found) for i, step in enumerate(r.steps)]
    analysis = _analysis(r.analysis, found) if r.HasField("analysis") else None
    return RolloutSpec(
        target_version=r.target_version,
        endpoints=endpoints_from_proto(r.endpoints),
        strategy=strategy,
        steps=tuple(steps),
        reason=r.reason,
        refused=tuple(found),
        analysis=analysis,
    )


def rollback_spec(request: pb.RollbackRolloutRequest) -> RollbackSpec:
    found: list[FieldViolation] = []
    interval = None
    if request.HasField("step_interval"):
        interval = _seconds(request.step_interval, "step_interval", found)
    return RollbackSpec(_MODE_FROM.get(request.mode), interval, tuple(found))


# ---- to protos


def endpoint_to_proto(e: Endpoint) -> pb.Endpoint:
    return pb.Endpoint(address=e.address, labels=dict(e.labels), health=_HEALTH[e.health])


def slot_to_proto(s: SlotTraffic) -> pb.SlotTraffic:
    return pb.SlotTraffic(
        model_version=s.model_version,
        endpoints=[endpoint_to_proto(e) for e in s.endpoints],
        weight_bp=s.weight_bp,
    )


def table_to_proto(t: TrafficTable) -> pb.TrafficTable:
    table = pb.TrafficTable(stable=slot_to_proto(t.stable))
    if t.canary is not None:
        table.canary.CopyFrom(slot_to_proto(t.canary))
    return table


def deployment_to_proto(d: Deployment) -> pb.Deployment:
    return pb.Deployment(
        name=d.name,
        environment=d.environment,
        model=f"models/{d.model_id}",
        traffic=table_to_proto(d.traffic),
        description=d.description,
        labels=dict(d.labels),
        active_rollout="" if d.active_rollout is None else rollout_name(d.id, d.active_rollout),
        revision=d.revision,
        create_time=timestamp(d.create_time),
        update_time=timestamp(d.update_time),
        etag=d.etag,
    )


def step_to_proto(s: Step) -> pb.RolloutStep:
    if s.duration is None:
        return pb.RolloutStep(weight_bp=s.weight_bp, pause_until_promoted=True)
    return pb.RolloutStep(weight_bp=s.weight_bp, duration=duration(s.duration))


def analysis_to_proto(a: Analysis) -> pb.RolloutAnalysis:
    message = pb.RolloutAnalysis(
        on_no_data=pb.GATE_ACTION_UNSPECIFIED if a.on_no_data is None else _ACTION[a.on_no_data],
        alpha=a.alpha,
    )
    if a.max_wait_for_data is not None:
        message.max_wait_for_data.CopyFrom(duration(a.max_wait_for_data))
    if a.evaluation_delay is not None:
        message.evaluation_delay.CopyFrom(duration(a.evaluation_delay))
    for g in a.gates:
        gate = message.gates.add(
            name=g.name,
            signal=pb.ANALYSIS_SIGNAL_UNSPECIFIED if g.signal is None else _SIGNAL[g.signal],
            min_samples=g.min_samples,
            on_failure=pb.GATE_ACTION_UNSPECIFIED if g.on_failure is None else _ACTION[g.on_failure],
            currency_code=g.currency_code,
            policy=g.policy,
        )
        if g.window is not None:
            gate.window.CopyFrom(duration(g.window))
        if g.bound is not None:
            gate.bound.margin = g.bound.margin
            if g.bound.max_value is not None:
                gate.bound.max_value = g.bound.max_value
            elif g.bound.max_ratio is not None:
                gate.bound.max_ratio = g.bound.max_ratio
    return message


def evaluation_to_proto(e: GateEvaluation) -> pb.GateEvaluation:
    return pb.GateEvaluation(
        gate=e.gate,
        signal=_SIGNAL[e.signal],
        window_start=timestamp(e.window_start),
        window_end=timestamp(e.window_end),
        canary_value=e.canary_value,
        stable_value=e.stable_value,
        canary_samples=e.canary_samples,
        stable_samples=e.stable_samples,
        threshold=e.threshold,
        p_value=e.p_value,
        verdict=_VERDICT[e.verdict],
        reason=e.reason,
    )


def rollout_to_proto(r: Rollout) -> pb.Rollout:
    message = pb.Rollout(
        name=r.name,
        target_version=r.target_version,
        endpoints=[endpoint_to_proto(e) for e in r.endpoints],
        strategy=_STRATEGY[r.strategy],
        steps=[step_to_proto(s) for s in r.steps],
        reason=r.reason,
        state=_STATE[r.state],
        current_step=r.current_step,
        from_version=r.from_version,
        rollback_mode=pb.ROLLBACK_MODE_UNSPECIFIED if r.rollback_mode is None else _MODE[r.rollback_mode],
        started_by=r.started_by,
        create_time=timestamp(r.create_time),
        update_time=timestamp(r.update_time),
        etag=r.etag,
    )
    if r.next_step_time is not None:
        message.next_step_time.CopyFrom(timestamp(r.next_step_time))
    if r.end_time is not None:
        message.end_time.CopyFrom(timestamp(r.end_time))
    if r.rollback_interval is not None:
        message.rollback_interval.CopyFrom(duration(r.rollback_interval))
    if r.analysis is not None:
        message.analysis.CopyFrom(analysis_to_proto(r.analysis))
    message.gate_evaluations.extend(evaluation_to_proto(e) for e in r.gate_evaluations)
    if r.data_wait_start is not None:
        message.data_wait_start.CopyFrom(timestamp(r.data_wait_start))
    return message


def plan_to_proto(plan: Plan) -> pb.PlanRolloutResponse:
    response = pb.PlanRolloutResponse(rollout=rollout_to_proto(plan.rollout))
    response.rollout.name = ""
    for stage in plan.stages:
        message = pb.PlannedStage(
            state=_STATE[stage.state], step=stage.step, traffic=table_to_proto(stage.traffic)
        )
        if stage.advance is not None:
            message.advance.CopyFrom(step_to_proto(stage.advance))
        response.stages.append(message)
    response.gate_evaluations.extend(evaluation_to_proto(e) for e in plan.gate_evaluations)
    return response


def history_to_proto(h: HistoryRecord) -> pb.DeploymentHistoryEntry:
    entry = pb.DeploymentHistoryEntry(
        name=h.name,
        transition=_TRANSITION[h.transition],
        rollout="" if h.rollout is None else rollout_name(h.deployment_id, h.rollout),
        rollout_state=pb.ROLLOUT_STATE_UNSPECIFIED if h.rollout_state is None else _STATE[h.rollout_state],
        actor=h.actor,
        reason=h.reason,
        traffic_after=table_to_proto(h.traffic_after),
        revision=h.revision,
        create_time=timestamp(h.create_time),
    )
    if h.traffic_before is not None:
        entry.traffic_before.CopyFrom(table_to_proto(h.traffic_before))
    entry.gate_evaluations.extend(evaluation_to_proto(e) for e in h.gate_evaluations)
    return entry


def route_to_proto(route: Route) -> pb.ResolveRouteResponse:
    return pb.ResolveRouteResponse(
        endpoint=endpoint_to_proto(route.endpoint),
        model_version=route.model_version,
        slot=SLOT_TO_PROTO[TrafficSlot(route.slot)],
        revision=route.revision,
    )


def watch_event(event: DeploymentChange | ProgressMark) -> pb.WatchDeploymentResponse:
    if isinstance(event, ProgressMark):
        return pb.WatchDeploymentResponse(progress=registry_pb2.WatchProgress(revision=event.revision))
    change = pb.DeploymentChange(
        revision=event.revision, kind=_CHANGE_KINDS[event.kind], change_time=timestamp(event.change_time)
    )
    if event.deployment is not None:
        change.deployment.CopyFrom(deployment_to_proto(event.deployment))
    else:
        change.deployment.name = event.resource
    return pb.WatchDeploymentResponse(change=change)
