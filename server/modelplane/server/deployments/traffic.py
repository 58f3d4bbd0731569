"""Traffic tables as values: readiness, the tables a rollout produces, and routing one request.

Routing follows clients/modelplane/client/routing.py exactly (the function a client routes with
locally), so ResolveRoute and a client's local choice agree key for key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from modelplane.client import routing
from modelplane.server.deployments.domain import (
    FULL_WEIGHT_BP,
    Endpoint,
    EndpointHealth,
    SlotTraffic,
    TrafficTable,
)


def all_ready(endpoints: Iterable[Endpoint]) -> bool:
    """True when there is at least one endpoint and every one reported READY."""
    seen = False
    for endpoint in endpoints:
        if endpoint.health is not EndpointHealth.READY:
            return False
        seen = True
    return seen


def canary_ready(table: TrafficTable) -> bool:
    return table.canary is not None and all_ready(table.canary.endpoints)


def with_canary_weight(table: TrafficTable, weight_bp: int) -> TrafficTable:
    """The table with the canary at weight_bp and the stable slot at the rest."""
    assert table.canary is not None
    return TrafficTable(
        stable=dataclasses.replace(table.stable, weight_bp=FULL_WEIGHT_BP - weight_bp),
        canary=dataclasses.replace(table.canary, weight_bp=weight_bp),
    )


def without_canary(table: TrafficTable) -> TrafficTable:
    """The canary removed: the stable slot takes all the traffic back."""
    return TrafficTable(stable=dataclasses.replace(table.stable, weight_bp=FULL_WEIGHT_BP), canary=None)


def promoted(table: TrafficTable) -> TrafficTable:
    """The canary's version on the canary's endpoints becomes the stable slot with all the traffic."""
    assert table.canary is not None
    return TrafficTable(stable=dataclasses.replace(table.canary, weight_bp=FULL_WEIGHT_BP), canary=None)


def with_health(table: TrafficTable, address: str, health: EndpointHealth) -> TrafficTable:
    """The table with `address` (in whichever slot lists it) at `health`."""

    def slot(s: SlotTraffic) -> SlotTraffic:
        endpoints = tuple(
            dataclasses.replace(e, health=health) if e.address == address else e for e in s.endpoints
        )
        return dataclasses.replace(s, endpoints=endpoints)

    return TrafficTable(
        stable=slot(table.stable), canary=None if table.canary is None else slot(table.canary)
    )


def addresses(table: TrafficTable) -> set[str]:
    found = {e.address for e in table.stable.endpoints}
    if table.canary is not None:
        found |= {e.address for e in table.canary.endpoints}
    return found


def routable(slot: SlotTraffic) -> tuple[Endpoint, ...]:
    """The endpoints a request may go to: every one that has not reported NOT_READY."""
    return tuple(e for e in slot.endpoints if e.health is not EndpointHealth.NOT_READY)


class RoutingTable:
    """A traffic table prepared for routing many requests: the routable endpoints of each slot."""

    __slots__ = ("canary", "canary_set", "canary_weight_bp", "stable", "stable_set", "table")

    def __init__(self, table: TrafficTable) -> None:
        self.table = table
        self.stable = routable(table.stable)
        self.stable_set = routing.EndpointSet([e.address for e in self.stable])
        self.canary = () if table.canary is None else routable(table.canary)
        self.canary_set = routing.EndpointSet([e.address for e in self.canary])
        self.canary_weight_bp = 0 if table.canary is None else table.canary.weight_bp

    def route(self, routing_key: str) -> tuple[str, Endpoint, str] | None:
        """(slot, endpoint, model version) for one request; None when no slot has a routable endpoint."""
        if routing_key:
            point, bucket = routing.route_hashes(routing_key)
        else:
            point, bucket = routing.random_point(), -1
        first = routing.pick_slot(point, self.canary_weight_bp)
        # The stable slot backs up a canary without routable endpoints; a canary backs up the stable slot
        # only while it has weight, so a canary at weight 0 (not ready yet) never gets a request.
        order = ("canary", "stable") if first == "canary" else ("stable", "canary")
        for slot in order:
            if slot == "canary" and self.canary_weight_bp <= 0:
                continue
            endpoints, endpoint_set = (
                (self.canary, self.canary_set) if slot == "canary" else (self.stable, self.stable_set)
            )
            if not endpoints:
                continue
            index = endpoint_set.pick(bucket) if bucket >= 0 else endpoint_set.pick_random()
            version = self.table.canary.model_version if slot == "canary" else self.table.stable.model_version  # type: ignore[union-attr]
            return slot, endpoints[index], version
        return None
