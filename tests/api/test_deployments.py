"""DeploymentService over gRPC against a real server and Postgres: every RPC, every rollout transition (the
illegal ones with their codes), readiness gating, timed steps across restarts and replicas, the atomic alias
move on success, and the history replay that rebuilds the traffic table."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from modelplane.client import routing
from modelplane.v1 import common_pb2, deployments_pb2_grpc, registry_pb2_grpc
from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import registry_pb2 as pb
from tests.support import StartServer
from tests.support.rich_errors import RichError, rich

if TYPE_CHECKING:
    from modelplane.v1.deployments_pb2_grpc import DeploymentServiceAsyncStub as DeploymentStub
    from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceAsyncStub as RegistryStub
else:
    DeploymentStub = RegistryStub = Any

TIMEOUT = 10.0
MODEL = "models/chat"
V1, V2 = f"{MODEL}/versions/1", f"{MODEL}/versions/2"
STABLE = ["10.0.0.1:8000", "10.0.0.2:8000"]
CANARY = ["10.0.1.1:8000", "10.0.1.2:8000"]


def _stubs(
    channel: grpc.aio.Channel,
) -> tuple[DeploymentStub, RegistryStub]:
    return deployments_pb2_grpc.DeploymentServiceStub(channel), registry_pb2_grpc.ModelRegistryServiceStub(
        channel
    )


async def _registry(reg: RegistryStub, versions: int = 2) -> None:
    await reg.CreateModel(
        pb.CreateModelRequest(model_id="chat", model=pb.Model(provider="local")), timeout=TIMEOUT
    )
    for _ in range(versions):
        await reg.CreateModelVersion(
            pb.CreateModelVersionRequest(
                parent=MODEL,
                model_version=pb.ModelVersion(
                    source_uri="local:chat",
                    context_window=8192,
                    max_output_tokens=1024,
                    pricing=pb.TokenPricing(currency_code="USD"),
                ),
            ),
            timeout=TIMEOUT,
        )


def _endpoints(addresses: Sequence[str]) -> list[dpb.Endpoint]:
    return [dpb.Endpoint(address=a) for a in addresses]


async def _deploy(dep: DeploymentStub, deployment_id: str = "chat-prod") -> dpb.Deployment:
    response = await dep.CreateDeployment(
        dpb.CreateDeploymentRequest(
            deployment_id=deployment_id,
            deployment=dpb.Deployment(
                environment="prod",
                model=MODEL,
                traffic=dpb.TrafficTable(
                    stable=dpb.SlotTraffic(model_version=V1, endpoints=_endpoints(STABLE))
                ),
            ),
        ),
        timeout=TIMEOUT,
    )
    return response.deployment


def _pause() -> dpb.RolloutStep:
    return dpb.RolloutStep(weight_bp=0, pause_until_promoted=True)


def _canary(weights: Sequence[int], seconds: float | None = None) -> dpb.Rollout:
    steps = []
    for w in weights:
        if seconds is None:
            steps.append(dpb.RolloutStep(weight_bp=w, pause_until_promoted=True))
        else:
            d = duration_pb2.Duration()
            d.FromNanoseconds(int(seconds * 1e9))
            steps.append(dpb.RolloutStep(weight_bp=w, duration=d))
    return dpb.Rollout(
        target_version=V2, endpoints=_endpoints(CANARY), strategy=dpb.ROLLOUT_STRATEGY_CANARY, steps=steps
    )


async def _ready(dep: DeploymentStub, addresses: Sequence[str], ready: bool = True) -> None:
    for a in addresses:
        await dep.ReportEndpointHealth(
            dpb.ReportEndpointHealthRequest(deployment="deployments/chat-prod", address=a, ready=ready),
            timeout=TIMEOUT,
        )


async def _fails(call: object) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return rich(caught.value)


def _weights(table: dpb.TrafficTable) -> tuple[int, int]:
    return table.stable.weight_bp, (table.canary.weight_bp if table.HasField("canary") else -1)


async def _history(dep: DeploymentStub) -> list[dpb.DeploymentHistoryEntry]:
    entries: list[dpb.DeploymentHistoryEntry] = []
    token = ""
    while True:
        page = await dep.ListDeploymentHistory(
            dpb.ListDeploymentHistoryRequest(parent="deployments/chat-prod", page_size=3, page_token=token),
            timeout=TIMEOUT,
        )
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            return entries[::-1]


def _replay(entries: Sequence[dpb.DeploymentHistoryEntry]) -> dpb.TrafficTable:
    """Applies each entry in order, checking it starts from where the previous one ended."""
    table: dpb.TrafficTable | None = None
    for entry in entries:
        if table is None:
            assert not entry.HasField("traffic_before")
        else:
            assert entry.traffic_before == table, entry.name
        table = entry.traffic_after
    assert table is not None
    return table


async def test_canary_rollout_end_to_end(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    created = await _deploy(dep)
    assert _weights(created.traffic) == (10_000, -1)
    alias = await reg.GetAlias(pb.GetAliasRequest(name=f"{MODEL}/aliases/prod"), timeout=TIMEOUT)
    assert alias.alias.version == V1

    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent=created.name, rollout=_canary([1000, 5000])), timeout=TIMEOUT
    )
    assert started.rollout.state == dpb.ROLLOUT_STATE_WAITING_READY
    assert _weights(started.deployment.traffic) == (10_000, 0)
    assert started.deployment.active_rollout == started.rollout.name

    # One of two canary endpoints ready: still waiting, stable keeps everything.
    await _ready(dep, CANARY[:1])
    rollout = (
        await dep.GetRollout(dpb.GetRolloutRequest(name=started.rollout.name), timeout=TIMEOUT)
    ).rollout
    assert rollout.state == dpb.ROLLOUT_STATE_WAITING_READY
    await _ready(dep, CANARY[1:])
    rollout = (
        await dep.GetRollout(dpb.GetRolloutRequest(name=started.rollout.name), timeout=TIMEOUT)
    ).rollout
    assert rollout.state == dpb.ROLLOUT_STATE_PROGRESSING
    current = (
        await dep.GetDeployment(dpb.GetDeploymentRequest(name=created.name), timeout=TIMEOUT)
    ).deployment
    assert _weights(current.traffic) == (9000, 1000)

    promoted = await dep.PromoteRollout(dpb.PromoteRolloutRequest(name=rollout.name), timeout=TIMEOUT)
    assert promoted.rollout.current_step == 1
    assert _weights(promoted.deployment.traffic) == (5000, 5000)

    done = await dep.PromoteRollout(
        dpb.PromoteRolloutRequest(name=rollout.name, reason="looks good"), timeout=TIMEOUT
    )
    assert done.rollout.state == dpb.ROLLOUT_STATE_SUCCEEDED
    assert done.deployment.traffic.stable.model_version == V2
    assert [e.address for e in done.deployment.traffic.stable.endpoints] == CANARY
    assert _weights(done.deployment.traffic) == (10_000, -1)
    assert done.deployment.active_rollout == ""
    alias = await reg.GetAlias(pb.GetAliasRequest(name=f"{MODEL}/aliases/prod"), timeout=TIMEOUT)
    assert alias.alias.version == V2

    entries = await _history(dep)
    assert [e.transition for e in entries] == [
        dpb.DEPLOYMENT_TRANSITION_CREATED,
        dpb.DEPLOYMENT_TRANSITION_ROLLOUT_STARTED,
        dpb.DEPLOYMENT_TRANSITION_HEALTH_CHANGED,
        dpb.DEPLOYMENT_TRANSITION_HEALTH_CHANGED,
        dpb.DEPLOYMENT_TRANSITION_PROMOTED,
        dpb.DEPLOYMENT_TRANSITION_SUCCEEDED,
    ]
    assert _replay(entries) == done.deployment.traffic
    assert entries[-1].reason == "looks good"

    # Every transition after success is illegal, and says from which state.
    for call in (
        dep.PromoteRollout(dpb.PromoteRolloutRequest(name=rollout.name), timeout=TIMEOUT),
        dep.PauseRollout(dpb.PauseRolloutRequest(name=rollout.name), timeout=TIMEOUT),
        dep.ResumeRollout(dpb.ResumeRolloutRequest(name=rollout.name), timeout=TIMEOUT),
        dep.AbortRollout(dpb.AbortRolloutRequest(name=rollout.name), timeout=TIMEOUT),
        dep.RollbackRollout(
            dpb.RollbackRolloutRequest(name=rollout.name, mode=dpb.ROLLBACK_MODE_INSTANT), timeout=TIMEOUT
        ),
    ):
        error = await _fails(call)
        assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION")
        assert error.metadata["state"] == "SUCCEEDED"


async def test_canary_stuck_not_ready_never_gets_traffic(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=_canary([5000])), timeout=TIMEOUT
    )
    await _ready(dep, CANARY[:1])
    await _ready(dep, CANARY[1:], ready=False)
    slots = set()
    for i in range(300):
        route = await dep.ResolveRoute(
            dpb.ResolveRouteRequest(deployment="deployments/chat-prod", routing_key=f"user-{i}"),
            timeout=TIMEOUT,
        )
        slots.add(route.slot)
        assert route.model_version == V1
    assert slots == {common_pb2.TRAFFIC_SLOT_STABLE}
    error = await _fails(
        dep.PromoteRollout(dpb.PromoteRolloutRequest(name=started.rollout.name), timeout=TIMEOUT)
    )
    assert (error.reason, error.metadata["state"]) == ("ILLEGAL_TRANSITION", "WAITING_READY")


async def test_resolve_route_agrees_with_the_shared_routing_function(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, CANARY)
    await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=_canary([3000])), timeout=TIMEOUT
    )
    canary = 0
    for i in range(500):
        key = f"k{i}"
        route = await dep.ResolveRoute(
            dpb.ResolveRouteRequest(deployment="deployments/chat-prod", routing_key=key), timeout=TIMEOUT
        )
        slot = routing.pick_slot(routing.route_point(key), 3000)
        addresses = CANARY if slot == "canary" else STABLE
        assert route.endpoint.address == addresses[routing.pick_endpoint(key, addresses)]
        assert route.slot == (
            common_pb2.TRAFFIC_SLOT_CANARY if slot == "canary" else common_pb2.TRAFFIC_SLOT_STABLE
        )
        canary += slot == "canary"
    assert 100 < canary < 200


async def test_rollback_stepped_walks_down_then_instant(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, CANARY)
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=_canary([1000, 2000, 4000])),
        timeout=TIMEOUT,
    )
    name = started.rollout.name
    await dep.PromoteRollout(dpb.PromoteRolloutRequest(name=name), timeout=TIMEOUT)
    paused = await dep.PauseRollout(dpb.PauseRolloutRequest(name=name, reason="alert"), timeout=TIMEOUT)
    assert paused.rollout.state == dpb.ROLLOUT_STATE_PAUSED
    assert _weights(paused.deployment.traffic) == (8000, 2000)
    error = await _fails(dep.PromoteRollout(dpb.PromoteRolloutRequest(name=name), timeout=TIMEOUT))
    assert error.metadata["state"] == "PAUSED"
    # A stale etag changes nothing.
    error = await _fails(
        dep.ResumeRollout(dpb.ResumeRolloutRequest(name=name, etag="stale"), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    resumed = await dep.ResumeRollout(
        dpb.ResumeRolloutRequest(name=name, etag=paused.rollout.etag), timeout=TIMEOUT
    )
    assert resumed.rollout.state == dpb.ROLLOUT_STATE_PROGRESSING

    bad = await _fails(dep.RollbackRollout(dpb.RollbackRolloutRequest(name=name), timeout=TIMEOUT))
    assert bad.field_paths == ["mode"]
    bad = await _fails(
        dep.RollbackRollout(
            dpb.RollbackRolloutRequest(name=name, mode=dpb.ROLLBACK_MODE_STEPPED), timeout=TIMEOUT
        )
    )
    assert bad.field_paths == ["step_interval"]
    stepped = await dep.RollbackRollout(
        dpb.RollbackRolloutRequest(
            name=name, mode=dpb.ROLLBACK_MODE_STEPPED, step_interval=duration_pb2.Duration(seconds=3600)
        ),
        timeout=TIMEOUT,
    )
    assert stepped.rollout.state == dpb.ROLLOUT_STATE_ROLLING_BACK
    assert _weights(stepped.deployment.traffic) == (9000, 1000)
    again = await _fails(
        dep.RollbackRollout(
            dpb.RollbackRolloutRequest(
                name=name, mode=dpb.ROLLBACK_MODE_STEPPED, step_interval=duration_pb2.Duration(seconds=1)
            ),
            timeout=TIMEOUT,
        )
    )
    assert (again.reason, again.metadata["state"]) == ("ILLEGAL_TRANSITION", "ROLLING_BACK")
    instant = await dep.RollbackRollout(
        dpb.RollbackRolloutRequest(name=name, mode=dpb.ROLLBACK_MODE_INSTANT), timeout=TIMEOUT
    )
    assert instant.rollout.state == dpb.ROLLOUT_STATE_ROLLED_BACK
    assert _weights(instant.deployment.traffic) == (10_000, -1)
    assert instant.deployment.traffic.stable.model_version == V1
    alias = await reg.GetAlias(pb.GetAliasRequest(name=f"{MODEL}/aliases/prod"), timeout=TIMEOUT)
    assert alias.alias.version == V1
    assert _replay(await _history(dep)) == instant.deployment.traffic


async def test_abort_blue_green_and_immediate(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg, versions=3)
    await _deploy(dep)
    blue_green = dpb.Rollout(
        target_version=V2, endpoints=_endpoints(CANARY), strategy=dpb.ROLLOUT_STRATEGY_BLUE_GREEN
    )
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=blue_green), timeout=TIMEOUT
    )
    assert started.rollout.state == dpb.ROLLOUT_STATE_WAITING_READY
    second = await _fails(
        dep.StartRollout(
            dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=blue_green), timeout=TIMEOUT
        )
    )
    assert (second.code, second.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ROLLOUT_IN_PROGRESS")
    deleting = await _fails(
        dep.DeleteDeployment(dpb.DeleteDeploymentRequest(name="deployments/chat-prod"), timeout=TIMEOUT)
    )
    assert deleting.reason == "ROLLOUT_IN_PROGRESS"
    aborted = await dep.AbortRollout(dpb.AbortRolloutRequest(name=started.rollout.name), timeout=TIMEOUT)
    assert aborted.rollout.state == dpb.ROLLOUT_STATE_ABORTED
    assert _weights(aborted.deployment.traffic) == (10_000, -1)

    again = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=blue_green), timeout=TIMEOUT
    )
    assert again.rollout.name.endswith("/rollouts/2")
    await _ready(dep, CANARY)
    switched = (await dep.GetRollout(dpb.GetRolloutRequest(name=again.rollout.name), timeout=TIMEOUT)).rollout
    assert switched.state == dpb.ROLLOUT_STATE_SUCCEEDED

    immediate = dpb.Rollout(
        target_version=f"{MODEL}/versions/3",
        endpoints=_endpoints(["10.0.2.1:8000"]),
        strategy=dpb.ROLLOUT_STRATEGY_IMMEDIATE,
    )
    now = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=immediate), timeout=TIMEOUT
    )
    assert now.rollout.state == dpb.ROLLOUT_STATE_SUCCEEDED
    assert now.deployment.traffic.stable.model_version == f"{MODEL}/versions/3"
    listed = await dep.ListRollouts(
        dpb.ListRolloutsRequest(parent="deployments/chat-prod", page_size=2), timeout=TIMEOUT
    )
    assert [r.name.rsplit("/", 1)[1] for r in listed.rollouts] == ["3", "2"]
    rest = await dep.ListRollouts(
        dpb.ListRolloutsRequest(
            parent="deployments/chat-prod", page_size=2, page_token=listed.next_page_token
        ),
        timeout=TIMEOUT,
    )
    assert [r.name.rsplit("/", 1)[1] for r in rest.rollouts] == ["1"]
    assert _replay(await _history(dep)) == now.deployment.traffic


async def test_invalid_specs_name_their_fields(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg, versions=3)
    await reg.UpdateModelVersion(
        pb.UpdateModelVersionRequest(
            model_version=pb.ModelVersion(name=f"{MODEL}/versions/3", state=pb.MODEL_VERSION_STATE_ARCHIVED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        timeout=TIMEOUT,
    )
    archived = await _fails(
        dep.CreateDeployment(
            dpb.CreateDeploymentRequest(
                deployment_id="chat-prod",
                deployment=dpb.Deployment(
                    environment="prod",
                    model=MODEL,
                    traffic=dpb.TrafficTable(
                        stable=dpb.SlotTraffic(
                            model_version=f"{MODEL}/versions/3", endpoints=_endpoints(STABLE)
                        )
                    ),
                ),
            ),
            timeout=TIMEOUT,
        )
    )
    assert (archived.code, archived.field_paths) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["deployment.traffic.stable.model_version"],
    )
    await _deploy(dep)
    cases: list[tuple[dpb.Rollout, list[str]]] = [
        (_canary([5000, 5000]), ["rollout.steps[1].weight_bp"]),
        (_canary([5000, 12000]), ["rollout.steps[1].weight_bp"]),
        (_canary([]), ["rollout.steps"]),
        (dpb.Rollout(target_version=V2, endpoints=_endpoints(CANARY)), ["rollout.strategy"]),
        (
            dpb.Rollout(
                target_version=V2,
                endpoints=_endpoints(CANARY),
                strategy=dpb.ROLLOUT_STRATEGY_IMMEDIATE,
                steps=[dpb.RolloutStep(weight_bp=100, pause_until_promoted=True)],
            ),
            ["rollout.steps"],
        ),
        (
            dpb.Rollout(
                target_version=V2,
                endpoints=_endpoints(CANARY),
                strategy=dpb.ROLLOUT_STRATEGY_CANARY,
                steps=[dpb.RolloutStep(weight_bp=100)],
            ),
            ["rollout.steps[0]"],
        ),
        (
            dpb.Rollout(
                target_version=f"{MODEL}/versions/3",
                endpoints=_endpoints(CANARY),
                strategy=dpb.ROLLOUT_STRATEGY_IMMEDIATE,
            ),
            ["rollout.target_version"],
        ),
        (
            dpb.Rollout(
                target_version=V2, endpoints=_endpoints(["a b"]), strategy=dpb.ROLLOUT_STRATEGY_IMMEDIATE
            ),
            ["rollout.endpoints[0].address"],
        ),
    ]
    for spec, paths in cases:
        for call in (
            dep.StartRollout(
                dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=spec), timeout=TIMEOUT
            ),
            dep.PlanRollout(
                dpb.PlanRolloutRequest(parent="deployments/chat-prod", rollout=spec), timeout=TIMEOUT
            ),
        ):
            error = await _fails(call)
            assert (error.code, error.field_paths) == (grpc.StatusCode.INVALID_ARGUMENT, paths), spec
    assert not (
        await dep.ListRollouts(dpb.ListRolloutsRequest(parent="deployments/chat-prod"), timeout=TIMEOUT)
    ).rollouts


async def test_plan_update_delete_and_not_found(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    created = await _deploy(dep)
    plan = await dep.PlanRollout(
        dpb.PlanRolloutRequest(parent=created.name, rollout=_canary([1000, 5000])), timeout=TIMEOUT
    )
    assert [(s.state, s.step, _weights(s.traffic)) for s in plan.stages] == [
        (dpb.ROLLOUT_STATE_WAITING_READY, -1, (10_000, 0)),
        (dpb.ROLLOUT_STATE_PROGRESSING, 0, (9000, 1000)),
        (dpb.ROLLOUT_STATE_PROGRESSING, 1, (5000, 5000)),
        (dpb.ROLLOUT_STATE_SUCCEEDED, -1, (10_000, -1)),
    ]
    assert plan.rollout.state == dpb.ROLLOUT_STATE_PENDING
    # Nothing was written.
    assert (
        await dep.GetDeployment(dpb.GetDeploymentRequest(name=created.name), timeout=TIMEOUT)
    ).deployment == created

    update = dpb.UpdateDeploymentRequest(
        deployment=dpb.Deployment(
            name=created.name,
            description="chat in prod",
            traffic=dpb.TrafficTable(stable=dpb.SlotTraffic(endpoints=_endpoints(STABLE[:1]))),
            etag=created.etag,
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["description", "traffic.stable.endpoints"]),
    )
    updated = (await dep.UpdateDeployment(update, timeout=TIMEOUT)).deployment
    assert updated.description == "chat in prod"
    assert [e.address for e in updated.traffic.stable.endpoints] == STABLE[:1]
    stale = await _fails(dep.UpdateDeployment(update, timeout=TIMEOUT))
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    bad_mask = await _fails(
        dep.UpdateDeployment(
            dpb.UpdateDeploymentRequest(
                deployment=dpb.Deployment(name=created.name),
                update_mask=field_mask_pb2.FieldMask(paths=["traffic.stable.weight_bp"]),
            ),
            timeout=TIMEOUT,
        )
    )
    assert bad_mask.field_paths == ["update_mask.paths"]
    duplicate = await _fails(_deploy(dep, "chat-prod-2"))
    assert (duplicate.code, duplicate.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DEPLOYMENT_ALREADY_EXISTS")
    listed = await dep.ListDeployments(dpb.ListDeploymentsRequest(model=MODEL), timeout=TIMEOUT)
    assert [d.name for d in listed.deployments] == [created.name]

    await dep.DeleteDeployment(dpb.DeleteDeploymentRequest(name=created.name), timeout=TIMEOUT)
    for call in (
        dep.GetDeployment(dpb.GetDeploymentRequest(name=created.name), timeout=TIMEOUT),
        dep.ResolveRoute(dpb.ResolveRouteRequest(deployment=created.name), timeout=TIMEOUT),
        dep.ListDeploymentHistory(dpb.ListDeploymentHistoryRequest(parent=created.name), timeout=TIMEOUT),
    ):
        error = await _fails(call)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "DEPLOYMENT_NOT_FOUND")
    missing = await _fails(
        dep.GetRollout(dpb.GetRolloutRequest(name=f"{created.name}/rollouts/1"), timeout=TIMEOUT)
    )
    assert missing.reason == "ROLLOUT_NOT_FOUND"


async def test_no_ready_endpoint(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, STABLE, ready=False)
    error = await _fails(
        dep.ResolveRoute(
            dpb.ResolveRouteRequest(deployment="deployments/chat-prod", routing_key="x"), timeout=TIMEOUT
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_READY_ENDPOINT")
    await _ready(dep, STABLE[1:])
    route = await dep.ResolveRoute(
        dpb.ResolveRouteRequest(deployment="deployments/chat-prod", routing_key="x"), timeout=TIMEOUT
    )
    assert route.endpoint.address == STABLE[1]


async def test_alias_move_and_success_are_atomic(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, CANARY)
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=_canary([1000])), timeout=TIMEOUT
    )
    await reg.UpdateModelVersion(
        pb.UpdateModelVersionRequest(
            model_version=pb.ModelVersion(name=V2, state=pb.MODEL_VERSION_STATE_ARCHIVED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        timeout=TIMEOUT,
    )
    before = (
        await dep.GetDeployment(dpb.GetDeploymentRequest(name="deployments/chat-prod"), timeout=TIMEOUT)
    ).deployment
    history_before = await _history(dep)
    error = await _fails(
        dep.PromoteRollout(dpb.PromoteRolloutRequest(name=started.rollout.name, to_end=True), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_ARCHIVED")
    after = (
        await dep.GetDeployment(dpb.GetDeploymentRequest(name="deployments/chat-prod"), timeout=TIMEOUT)
    ).deployment
    assert after == before
    assert await _history(dep) == history_before
    alias = await reg.GetAlias(pb.GetAliasRequest(name=f"{MODEL}/aliases/prod"), timeout=TIMEOUT)
    assert alias.alias.version == V1
    rollout = (
        await dep.GetRollout(dpb.GetRolloutRequest(name=started.rollout.name), timeout=TIMEOUT)
    ).rollout
    assert rollout.state == dpb.ROLLOUT_STATE_PROGRESSING


async def test_request_id_replays_the_first_result(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    request = dpb.StartRolloutRequest(
        parent="deployments/chat-prod", rollout=_canary([1000]), request_id="r-1"
    )
    first = await dep.StartRollout(request, timeout=TIMEOUT)
    second = await dep.StartRollout(request, timeout=TIMEOUT)
    assert first == second
    listed = await dep.ListRollouts(dpb.ListRolloutsRequest(parent="deployments/chat-prod"), timeout=TIMEOUT)
    assert len(listed.rollouts) == 1


async def test_watch_sends_the_table_then_each_change(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    stream = dep.WatchDeployment(
        dpb.WatchDeploymentRequest(deployment="deployments/chat-prod"), timeout=TIMEOUT
    )
    first = await stream.read()
    assert isinstance(first, dpb.WatchDeploymentResponse)
    assert first.change.kind == pb.CHANGE_KIND_CREATED
    assert _weights(first.change.deployment.traffic) == (10_000, -1)
    await _ready(dep, CANARY)
    started = await dep.StartRollout(
        dpb.StartRolloutRequest(parent="deployments/chat-prod", rollout=_canary([2500])), timeout=TIMEOUT
    )
    while True:
        message = await stream.read()
        assert isinstance(message, dpb.WatchDeploymentResponse)
        if message.HasField("change"):
            break
    assert message.change.deployment == started.deployment
    stream.cancel()

    # Resuming right after the first revision gets the same change again.
    resumed = dep.WatchDeployment(
        dpb.WatchDeploymentRequest(
            deployment="deployments/chat-prod", start_revision=first.change.revision + 1
        ),
        timeout=TIMEOUT,
    )
    assert (await _next_change(resumed)).deployment == started.deployment
    resumed.cancel()


async def _next_change(stream: Any) -> dpb.DeploymentChange:
    """The next change of a deployment watch, past any progress marks."""
    while True:
        message = await stream.read()
        assert isinstance(message, dpb.WatchDeploymentResponse)
        if message.HasField("change"):
            return message.change


async def _current_state(dep: DeploymentStub) -> dpb.DeploymentChange:
    """The first message of a watch from now: the deployment as it is, at the revision of its last change."""
    now = dep.WatchDeployment(dpb.WatchDeploymentRequest(deployment="deployments/chat-prod"), timeout=TIMEOUT)
    try:
        return await _next_change(now)
    finally:
        now.cancel()


async def test_watch_from_revision_1_replays_the_deployment_from_its_creation(
    channel: grpc.aio.Channel,
) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, STABLE[:1], ready=False)
    current = await _current_state(dep)
    stream = dep.WatchDeployment(
        dpb.WatchDeploymentRequest(deployment="deployments/chat-prod", start_revision=1), timeout=TIMEOUT
    )
    created, health = await _next_change(stream), await _next_change(stream)
    stream.cancel()
    assert created.kind == pb.CHANGE_KIND_CREATED
    assert created.deployment.traffic.stable.endpoints[0].health != dpb.ENDPOINT_HEALTH_NOT_READY
    assert created.revision < health.revision == current.revision
    assert health.deployment == current.deployment


async def test_watch_at_revision_n_starts_with_change_n(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, STABLE[:1], ready=False)
    current = await _current_state(dep)
    await _ready(dep, STABLE[:1])
    stream = dep.WatchDeployment(
        dpb.WatchDeploymentRequest(deployment="deployments/chat-prod", start_revision=current.revision),
        timeout=TIMEOUT,
    )
    at_n, after_n = await _next_change(stream), await _next_change(stream)
    stream.cancel()
    assert at_n.revision == current.revision
    assert at_n.deployment == current.deployment
    assert after_n.revision > current.revision
    assert after_n.deployment.traffic.stable.endpoints[0].health == dpb.ENDPOINT_HEALTH_READY


async def test_watch_from_0_sends_the_current_state_then_only_new_changes(channel: grpc.aio.Channel) -> None:
    dep, reg = _stubs(channel)
    await _registry(reg)
    await _deploy(dep)
    await _ready(dep, STABLE[:1], ready=False)
    stream = dep.WatchDeployment(
        dpb.WatchDeploymentRequest(deployment="deployments/chat-prod"), timeout=TIMEOUT
    )
    current = await _next_change(stream)
    await _ready(dep, STABLE[:1])
    after = await _next_change(stream)
    stream.cancel()
    assert current.kind == pb.CHANGE_KIND_CREATED
    assert current.deployment.traffic.stable.endpoints[0].health == dpb.ENDPOINT_HEALTH_NOT_READY
    assert after.revision > current.revision
    assert after.kind == pb.CHANGE_KIND_UPDATED
    assert after.deployment.traffic.stable.endpoints[0].health == dpb.ENDPOINT_HEALTH_READY


async def _wait_state(dep: DeploymentStub, name: str, state: int, within: float = 15.0) -> dpb.Rollout:
    async with asyncio.timeout(within):
        while True:
            rollout = (await dep.GetRollout(dpb.GetRolloutRequest(name=name), timeout=TIMEOUT)).rollout
            if rollout.state == state:
                return rollout
            await asyncio.sleep(0.05)


async def test_timed_steps_survive_a_restart(start_server: StartServer) -> None:
    first = await start_server()
    async with grpc.aio.insecure_channel(first.target) as channel:
        dep, reg = _stubs(channel)
        await _registry(reg)
        await _deploy(dep)
        await _ready(dep, CANARY)
        started = await dep.StartRollout(
            dpb.StartRolloutRequest(
                parent="deployments/chat-prod", rollout=_canary([1000, 2000], seconds=1.0)
            ),
            timeout=TIMEOUT,
        )
        assert started.rollout.current_step == 0
    await first.stop(grace=0)

    second = await start_server()
    async with grpc.aio.insecure_channel(second.target) as channel:
        dep, reg = _stubs(channel)
        done = await _wait_state(dep, started.rollout.name, dpb.ROLLOUT_STATE_SUCCEEDED)
        assert done.end_time.seconds > 0
        entries = await _history(dep)
        steps = [e for e in entries if e.actor == "modelplane-driver"]
        assert [e.transition for e in steps] == [
            dpb.DEPLOYMENT_TRANSITION_STEP_ADVANCED,
            dpb.DEPLOYMENT_TRANSITION_SUCCEEDED,
        ]
        alias = await reg.GetAlias(pb.GetAliasRequest(name=f"{MODEL}/aliases/prod"), timeout=TIMEOUT)
        assert alias.alias.version == V2


async def test_two_replicas_advance_each_step_once(start_server: StartServer) -> None:
    replicas = [await start_server(), await start_server(), await start_server()]
    async with grpc.aio.insecure_channel(replicas[0].target) as channel:
        dep, reg = _stubs(channel)
        await _registry(reg)
        await _deploy(dep)
        await _ready(dep, CANARY)
        started = await dep.StartRollout(
            dpb.StartRolloutRequest(
                parent="deployments/chat-prod", rollout=_canary([1000, 2000, 3000, 4000, 5000], seconds=0.2)
            ),
            timeout=TIMEOUT,
        )
        await _wait_state(dep, started.rollout.name, dpb.ROLLOUT_STATE_SUCCEEDED)
        entries = await _history(dep)
        by_driver = [e for e in entries if e.actor == "modelplane-driver"]
        # Four step advances and the success: each exactly once, whichever replica made it.
        assert len(by_driver) == 5
        assert [_weights(e.traffic_after)[1] for e in by_driver] == [2000, 3000, 4000, 5000, -1]
        assert _replay(entries).stable.model_version == V2
