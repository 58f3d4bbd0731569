"""ServiceCoordinator standalone: static routes, the in-process transport, health counts, routing events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelplane.client.events import RoutingEvent
from modelplane.client.routing import pick_endpoint, pick_slot, route_point
from modelplane.orchestration import (
    EndpointFailed,
    InProcessTransport,
    NoEndpointError,
    RequestRejected,
    RouteTarget,
    ServiceCoordinator,
    SlotTraffic,
    TrafficTable,
    static_table,
)

DEPLOYMENT = "deployments/chat-prod"
STABLE = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")
CANARY = ("10.0.1.1:8000", "10.0.1.2:8000")


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


class RaisingSink:
    def emit(self, event: object) -> None:
        raise RuntimeError("sink is broken")


def echo_transport(addresses: tuple[str, ...]) -> InProcessTransport:
    async def echo(payload: Any, target: RouteTarget) -> dict[str, Any]:
        return {"served_by": target.endpoint, "slot": target.slot, "payload": payload}

    return InProcessTransport(dict.fromkeys(addresses, echo))


def canary_table(weight_bp: int, *, not_ready: frozenset[str] = frozenset()) -> TrafficTable:
    return TrafficTable(
        deployment=DEPLOYMENT,
        stable=SlotTraffic("models/chat/versions/1", STABLE, 10_000 - weight_bp),
        canary=SlotTraffic("models/chat/versions/2", CANARY, weight_bp, not_ready=not_ready),
        rollout=f"{DEPLOYMENT}/rollouts/r1",
    )


async def test_static_endpoints_route_sticky_and_spread() -> None:
    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: list(STABLE)}, transport=echo_transport(STABLE)
    )
    first = coordinator.route(DEPLOYMENT, "user-7")
    assert all(coordinator.route(DEPLOYMENT, "user-7") == first for _ in range(20))
    assert first.slot == "stable"
    assert first.source == "static"
    hits = {address: 0 for address in STABLE}
    for index in range(3_000):
        hits[coordinator.route(DEPLOYMENT, f"user-{index}").endpoint] += 1
    assert all(700 < count < 1_300 for count in hits.values())
    keyless = {coordinator.route(DEPLOYMENT).endpoint for _ in range(200)}
    assert keyless == set(STABLE)
    await coordinator.aclose()


async def test_local_choice_is_the_shared_routing_function() -> None:
    coordinator = ServiceCoordinator(static_routes={DEPLOYMENT: canary_table(2_500)})
    canary = 0
    for index in range(10_000):
        key = f"session-{index}"
        target = coordinator.route(DEPLOYMENT, key)
        slot = pick_slot(route_point(key), 2_500)
        endpoints = CANARY if slot == "canary" else STABLE
        assert target.slot == slot
        assert target.endpoint == endpoints[pick_endpoint(key, endpoints)]
        assert target.model_version == (
            "models/chat/versions/2" if slot == "canary" else "models/chat/versions/1"
        )
        canary += slot == "canary"
    assert abs(canary / 10_000 - 0.25) < 0.015
    await coordinator.aclose()


async def test_not_ready_endpoints_get_nothing_and_an_empty_slot_falls_back() -> None:
    one_down = ServiceCoordinator(
        static_routes={DEPLOYMENT: canary_table(5_000, not_ready=frozenset(CANARY[:1]))}
    )
    served = {one_down.route(DEPLOYMENT, f"k{index}").endpoint for index in range(2_000)}
    assert CANARY[0] not in served
    assert CANARY[1] in served
    all_down = ServiceCoordinator(
        static_routes={DEPLOYMENT: canary_table(5_000, not_ready=frozenset(CANARY))}
    )
    assert {all_down.route(DEPLOYMENT, f"k{index}").slot for index in range(2_000)} == {"stable"}
    nothing = TrafficTable(
        deployment=DEPLOYMENT,
        stable=SlotTraffic("models/chat/versions/1", STABLE, 10_000, not_ready=frozenset(STABLE)),
    )
    nowhere = ServiceCoordinator(static_routes={DEPLOYMENT: nothing})
    with pytest.raises(NoEndpointError):
        nowhere.route(DEPLOYMENT, "k")


async def test_a_canary_at_weight_zero_never_serves() -> None:
    coordinator = ServiceCoordinator(static_routes={DEPLOYMENT: canary_table(0)})
    assert {coordinator.route(DEPLOYMENT, f"k{index}").slot for index in range(3_000)} == {"stable"}


async def test_call_returns_the_answer_and_emits_one_event() -> None:
    sink = RecordingSink()
    table = static_table(DEPLOYMENT, STABLE, stable_model_version="models/chat/versions/1")
    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: table}, transport=echo_transport(STABLE), events=sink
    )
    answer = await coordinator.call(
        DEPLOYMENT, {"prompt": "hi"}, routing_key="user-1", trace_id="ab" * 16, request_id="req-1"
    )
    expected = coordinator.route(DEPLOYMENT, "user-1")
    assert answer == {"served_by": expected.endpoint, "slot": "stable", "payload": {"prompt": "hi"}}
    assert len(sink.events) == 1
    event = sink.events[0]
    assert isinstance(event, RoutingEvent)
    assert (event.deployment, event.endpoint, event.traffic_slot) == (DEPLOYMENT, expected.endpoint, "stable")
    assert (event.outcome, event.model_version, event.routed_by) == ("ok", "models/chat/versions/1", "static")
    assert (event.trace_id, event.request_id) == ("ab" * 16, "req-1")
    assert event.latency_seconds >= 0
    await coordinator.aclose()


async def test_a_raising_sink_never_breaks_a_call() -> None:
    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: list(STABLE)}, transport=echo_transport(STABLE), events=RaisingSink()
    )
    for index in range(3):
        answer = await coordinator.call(DEPLOYMENT, index, routing_key=str(index))
        assert answer["payload"] == index
    assert coordinator.sink_errors == 3
    await coordinator.aclose()


async def test_failures_are_counted_per_endpoint_and_rejections_are_not() -> None:
    sink = RecordingSink()
    attempts: list[str] = []

    async def broken(payload: Any, target: RouteTarget) -> Any:
        attempts.append(target.endpoint)
        if payload == "bad request":
            raise RequestRejected(target.endpoint, "no such prompt", status=400)
        raise EndpointFailed(target.endpoint, "model crashed", status=500)

    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: ["only:1"]}, transport=InProcessTransport({"only:1": broken}), events=sink
    )
    for _ in range(4):
        with pytest.raises(EndpointFailed):
            await coordinator.call(DEPLOYMENT, "x", routing_key="k")
    assert coordinator.endpoint_failures(DEPLOYMENT) == {"only:1": 4}
    with pytest.raises(RequestRejected):
        await coordinator.call(DEPLOYMENT, "bad request", routing_key="k")
    # The endpoint answered that one: it is not a failure of the endpoint, and the streak ends.
    assert coordinator.endpoint_failures(DEPLOYMENT) == {}
    outcomes = [event.outcome for event in sink.events if isinstance(event, RoutingEvent)]
    assert outcomes == ["error"] * 5
    assert isinstance(sink.events[0], RoutingEvent)
    assert sink.events[0].error_type == "EndpointFailed"
    assert attempts == ["only:1"] * 5
    await coordinator.aclose()


async def test_a_slow_endpoint_times_out() -> None:
    sink = RecordingSink()
    release = asyncio.Event()

    async def slow(payload: Any, target: RouteTarget) -> Any:
        await release.wait()

    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: ["slow:1"]}, transport=InProcessTransport({"slow:1": slow}), events=sink
    )
    with pytest.raises(TimeoutError):
        await coordinator.call(DEPLOYMENT, "x", timeout=0.05)
    assert [event.outcome for event in sink.events if isinstance(event, RoutingEvent)] == ["timeout"]
    await coordinator.aclose()


async def test_unknown_deployment_and_unserved_address() -> None:
    sink = RecordingSink()
    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: ["gone:1"]}, transport=InProcessTransport(), events=sink
    )
    with pytest.raises(NoEndpointError, match="deployments/other"):
        await coordinator.call("deployments/other", "x")
    with pytest.raises(EndpointFailed, match="no handler"):
        await coordinator.call(DEPLOYMENT, "x")
    outcomes = [event.outcome for event in sink.events if isinstance(event, RoutingEvent)]
    assert outcomes == ["no_endpoint", "error"]
    await coordinator.aclose()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="static_routes"):
        ServiceCoordinator()
    with pytest.raises(ValueError, match="unhealthy_after"):
        ServiceCoordinator(static_routes={DEPLOYMENT: ["a:1"]}, unhealthy_after=0)
    with pytest.raises(ValueError, match="add up"):
        TrafficTable(deployment=DEPLOYMENT, stable=SlotTraffic("", ("a:1",), 9_000))
    with pytest.raises(ValueError, match="canary endpoints"):
        static_table(DEPLOYMENT, ["a:1"], canary_weight_bp=100)


async def test_report_health_without_a_deployment_manager_resets_the_local_count() -> None:
    async def broken(payload: Any, target: RouteTarget) -> Any:
        raise EndpointFailed(target.endpoint, "down")

    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: ["a:1"]}, transport=InProcessTransport({"a:1": broken})
    )
    with pytest.raises(EndpointFailed):
        await coordinator.call(DEPLOYMENT, "x")
    assert coordinator.endpoint_failures(DEPLOYMENT) == {"a:1": 1}
    assert await coordinator.report_health(DEPLOYMENT, "a:1", ready=True) is False
    assert coordinator.endpoint_failures(DEPLOYMENT) == {}
    await coordinator.aclose()
