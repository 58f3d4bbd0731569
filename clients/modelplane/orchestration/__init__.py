"""Orchestration: ServiceCoordinator routes each request through a deployment's traffic table and calls it."""

from modelplane.orchestration.coordinator import ServiceCoordinator
from modelplane.orchestration.traffic import (
    CompiledTable,
    NoEndpointError,
    RouteTarget,
    SlotTraffic,
    TrafficTable,
    static_table,
    table_from_deployment,
)
from modelplane.orchestration.transport import (
    EndpointFailed,
    EndpointHandler,
    HttpTransport,
    InProcessTransport,
    RequestRejected,
    Transport,
    routing_headers,
)

__all__ = [
    "CompiledTable",
    "EndpointFailed",
    "EndpointHandler",
    "HttpTransport",
    "InProcessTransport",
    "NoEndpointError",
    "RequestRejected",
    "RouteTarget",
    "ServiceCoordinator",
    "SlotTraffic",
    "TrafficTable",
    "Transport",
    "routing_headers",
    "static_table",
    "table_from_deployment",
]
