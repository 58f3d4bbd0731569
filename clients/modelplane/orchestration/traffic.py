"""Traffic tables as the ServiceCoordinator holds them, and the compiled form that routes a request locally.

A `TrafficTable` is the coordinator's own, proto-free copy of a deployment's traffic table (from
WatchDeployment) or of a static route. `CompiledTable` works out once, per table, everything a routing
decision needs (the canary's share as the float `pick_slot` compares with, each slot's `EndpointSet`, and
one ready-made `RouteTarget` per endpoint), so routing a request is one sha256, a comparison and two
lookups, with nothing allocated.

The choice is ResolveRoute's (see DeploymentService in protos/modelplane/v1/deployments.proto): the key's
point picks the slot, then rendezvous hashing picks among the slot's endpoints that are not NOT_READY;
when the chosen slot has none, the other slot serves (a canary only while its weight is above 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.client.routing import EndpointSet, Slot, route_hashes
from modelplane.v1 import deployments_pb2

__all__ = [
    "CompiledTable",
    "NoEndpointError",
    "RouteTarget",
    "SlotTraffic",
    "TrafficTable",
    "static_table",
    "table_from_deployment",
]

_BASIS_POINTS = 10_000


class NoEndpointError(LookupError):
    """No endpoint can take a call for the deployment: it is unknown, or its slots have no endpoints."""

    def __init__(self, deployment: str, message: str) -> None:
        super().__init__(f"{deployment}: {message}")
        self.deployment = deployment


@dataclass(frozen=True)
class SlotTraffic:
    """One slot of a traffic table: the version it serves, its endpoints' addresses and its weight."""

    model_version: str
    endpoints: tuple[str, ...]
    weight_bp: int
    # Endpoints reported NOT_READY: kept in the table, never routed to.
    not_ready: frozenset[str] = frozenset()
    # Labels of each endpoint (by address), as the deployment manager holds them; informational.
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def routable(self) -> tuple[str, ...]:
        """The endpoints a request may go to, in table order."""
        if not self.not_ready:
            return self.endpoints
        return tuple(address for address in self.endpoints if address not in self.not_ready)


@dataclass(frozen=True)
class TrafficTable:
    """A deployment's traffic split: a stable slot, optionally a canary, and where the table came from."""

    deployment: str
    stable: SlotTraffic
    canary: SlotTraffic | None = None
    # The revision of the deployment manager's change that produced this table; 0 for a static route.
    revision: int = 0
    # The resource name of the rollout in progress, "" when none.
    rollout: str = ""
    # "deployment_manager" for a table from WatchDeployment, "static" for a configured route.
    source: str = "static"

    def __post_init__(self) -> None:
        canary_weight = self.canary.weight_bp if self.canary is not None else 0
        for slot in (self.stable, self.canary):
            if slot is not None and not 0 <= slot.weight_bp <= _BASIS_POINTS:
                raise ValueError(f"{self.deployment}: a slot weight must be within 0..10000 basis points")
        if self.stable.weight_bp + canary_weight != _BASIS_POINTS:
            raise ValueError(f"{self.deployment}: the slot weights must add up to 10000 basis points")

    @property
    def canary_weight_bp(self) -> int:
        """The canary's weight in basis points (0 without a canary)."""
        return self.canary.weight_bp if self.canary is not None else 0


def static_table(
    deployment: str,
    stable: Sequence[str],
    *,
    canary: Sequence[str] = (),
    canary_weight_bp: int = 0,
    stable_model_version: str = "",
    canary_model_version: str = "",
) -> TrafficTable:
    """A configured route for a coordinator without a deployment manager: `stable` endpoints, and optionally
    `canary` endpoints taking `canary_weight_bp` of the traffic (same sticky hashing as the server)."""
    if canary_weight_bp and not canary:
        raise ValueError(f"{deployment}: a canary weight needs canary endpoints")
    canary_slot = (
        SlotTraffic(canary_model_version, tuple(canary), canary_weight_bp)
        if canary or canary_model_version
        else None
    )
    return TrafficTable(
        deployment=deployment,
        stable=SlotTraffic(stable_model_version, tuple(stable), _BASIS_POINTS - canary_weight_bp),
        canary=canary_slot,
    )


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Where one request goes: the endpoint, its slot and version, and the table the choice was made with."""

    deployment: str
    slot: Slot
    endpoint: str
    model_version: str
    rollout: str
    revision: int
    source: str


class _CompiledSlot:
    __slots__ = ("endpoints", "name", "targets")

    def __init__(self, table: TrafficTable, slot: Slot, traffic: SlotTraffic) -> None:
        self.name = slot
        routable = traffic.routable
        self.endpoints = EndpointSet(routable)
        self.targets = tuple(
            RouteTarget(
                table.deployment,
                slot,
                address,
                traffic.model_version,
                table.rollout,
                table.revision,
                table.source,
            )
            for address in routable
        )


class CompiledTable:
    """A TrafficTable prepared for routing many requests; build one per table and keep it."""

    __slots__ = ("_canary", "_canary_share", "_stable", "table")

    def __init__(self, table: TrafficTable) -> None:
        self.table = table
        # The same float pick_slot compares with, so the local choice agrees with the server's exactly.
        self._canary_share = table.canary_weight_bp / _BASIS_POINTS
        self._stable = _CompiledSlot(table, "stable", table.stable)
        self._canary = (
            _CompiledSlot(table, "canary", table.canary)
            if table.canary is not None and table.canary.weight_bp > 0
            else None
        )

    def _slot(self, point: float) -> _CompiledSlot:
        canary = self._canary
        first: _CompiledSlot
        other: _CompiledSlot | None
        if canary is not None and point < self._canary_share:
            first, other = canary, self._stable
        else:
            first, other = self._stable, canary
        if first.targets:
            return first
        if other is not None and other.targets:
            return other
        raise NoEndpointError(self.table.deployment, "no slot has an endpoint that is not NOT_READY")

    def route(self, routing_key: str) -> RouteTarget:
        """The target of a request with this routing key (sticky: the same key, the same target)."""
        point, bucket = route_hashes(routing_key)
        slot = self._slot(point)
        return slot.targets[slot.endpoints.pick(bucket)]

    def route_point(self, point: float) -> RouteTarget:
        """The target of a request without a routing key, given its random point: a random endpoint."""
        slot = self._slot(point)
        return slot.targets[slot.endpoints.pick_random()]


def _slot_from_proto(traffic: deployments_pb2.SlotTraffic, weight_bp: int) -> SlotTraffic:
    return SlotTraffic(
        model_version=traffic.model_version,
        endpoints=tuple(endpoint.address for endpoint in traffic.endpoints),
        weight_bp=weight_bp,
        not_ready=frozenset(
            endpoint.address
            for endpoint in traffic.endpoints
            if endpoint.health == deployments_pb2.ENDPOINT_HEALTH_NOT_READY
        ),
        labels={endpoint.address: dict(endpoint.labels) for endpoint in traffic.endpoints if endpoint.labels},
    )


def table_from_deployment(deployment: deployments_pb2.Deployment) -> TrafficTable:
    """The coordinator's copy of a deployment's traffic table, from WatchDeployment or GetDeployment."""
    traffic = deployment.traffic
    canary_weight = traffic.canary.weight_bp if traffic.HasField("canary") else 0
    canary = _slot_from_proto(traffic.canary, canary_weight) if traffic.HasField("canary") else None
    return TrafficTable(
        deployment=deployment.name,
        # The stable slot holds whatever the canary does not; deriving it keeps a table that left the
        # stable weight unset valid.
        stable=_slot_from_proto(traffic.stable, _BASIS_POINTS - canary_weight),
        canary=canary,
        revision=deployment.revision,
        rollout=deployment.active_rollout,
        source="deployment_manager",
    )
