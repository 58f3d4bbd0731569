"""Prometheus metrics of one server: calls started and handled by method and code, unary call latencies.

Each server owns a private CollectorRegistry, so several servers can run in one process (tests) without
clashing over metric names; capabilities register their own counters on `ServerMetrics.registry`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

log = logging.getLogger(__name__)


class IngestionCounts(Protocol):
    """What one log ingestion commit counted (modelplane.server.logs.store.Stored)."""

    @property
    def accepted(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def gaps(self) -> int: ...


# Unary control-plane calls are short; the top buckets catch slow storage. Streams are not timed here: a
# watch open for an hour would only ever land in +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# grpc_type of a method, by (request_streaming, response_streaming), as go-grpc-prometheus names them.
GRPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
UNARY = "unary"


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


class MethodMetrics:
    """The series of one method, looked up once: a call then costs an increment or two and no label lookup."""

    def __init__(self, metrics: ServerMetrics, grpc_type: str, service: str, method: str) -> None:
        self._handled = metrics.handled
        self._labels = (grpc_type, service, method)
        self._started = metrics.started.labels(*self._labels)
        self._handling = metrics.handling_seconds.labels(*self._labels) if grpc_type == UNARY else None
        self._by_code: dict[str, Any] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: str, seconds: float) -> None:
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = self._handled.labels(*self._labels, code)
        counter.inc()
        if self._handling is not None:
            self._handling.observe(seconds)


class ServerMetrics:
    """The RPC metrics, named as go-grpc-prometheus and py-grpc-prometheus name them, and once
    `start_endpoint` ran, the HTTP endpoint that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            labels,
            registry=self.registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by final status code, whatever it was.",
            [*labels, "grpc_code"],
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of a unary RPC to its final status (streams are not timed).",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._methods: dict[str, MethodMetrics] = {}
        self._endpoint = MetricsEndpoint(self.registry)

    def method(self, full_method: str, grpc_type: str) -> MethodMetrics:
        """The series of "/package.Service/Method" (its grpc_type one of GRPC_TYPES' values)."""
        found = self._methods.get(full_method)
        if found is None:
            service, _, name = full_method.lstrip("/").rpartition("/")
            found = self._methods[full_method] = MethodMetrics(self, grpc_type, service, name)
        return found

    def start_endpoint(self, address: str) -> int:
        """Serves /metrics on `address` (port 0 picks one); returns the bound port."""
        return self._endpoint.start(address)

    @property
    def endpoint_port(self) -> int | None:
        return self._endpoint.port

    def stop_endpoint(self) -> None:
        self._endpoint.stop()


class MetricsEndpoint:
    """An HTTP endpoint that serves one registry as /metrics, on a thread of its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, address: str) -> int:
        """Serves on `address` (port 0 picks one); returns the bound port."""
        host, port = split_address(address)
        self._http, self._thread = start_http_server(port, addr=host, registry=self._registry)
        bound = int(self._http.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    @property
    def port(self) -> int | None:
        return None if self._http is None else int(self._http.server_port)

    def stop(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            http.shutdown()
            http.server_close()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.join(timeout=5)


def merged_registry(directory: str) -> CollectorRegistry:
    """A registry that adds up the metrics every worker process writes into `directory` (prometheus_client's
    multiprocess mode): counters and histograms are summed over the workers, dead ones included."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


class LogIngestionMetrics:
    """The log collector's ingestion counters per client, as this replica committed them.

    Every replica counts what it stored; sum over replicas for the fleet (GetIngestionStats reads the
    shared totals from the store). Client ids past `max_clients` are counted under "other", so a
    misbehaving fleet of shippers cannot blow up the number of series.
    """

    def __init__(self, registry: CollectorRegistry, *, max_clients: int = 1000) -> None:
        labels = ["client_id"]
        self.received = Counter(
            "modelplane_log_events_received",
            "Log events received, resends included.",
            labels,
            registry=registry,
        )
        self.accepted = Counter(
            "modelplane_log_events_accepted", "Log events stored.", labels, registry=registry
        )
        self.duplicates = Counter(
            "modelplane_log_events_duplicates",
            "Log events received that were already stored.",
            labels,
            registry=registry,
        )
        self.dropped = Counter(
            "modelplane_log_events_dropped_by_clients",
            "Log events clients reported dropping before sending (dropped_since_last).",
            labels,
            registry=registry,
        )
        self.gaps = Counter(
            "modelplane_log_batch_sequence_gaps",
            "Batch sequence numbers skipped by clients.",
            labels,
            registry=registry,
        )
        self._max_clients = max_clients
        self._clients: set[str] = set()

    def _label(self, client_id: str) -> str:
        if client_id in self._clients:
            return client_id
        if len(self._clients) < self._max_clients:
            self._clients.add(client_id)
            return client_id
        return "other"

    def observe(self, client_id: str, received: int, stored: IngestionCounts) -> None:
        label = self._label(client_id)
        self.received.labels(label).inc(received)
        self.accepted.labels(label).inc(stored.accepted)
        self.duplicates.labels(label).inc(stored.duplicates)
        self.dropped.labels(label).inc(stored.dropped)
        self.gaps.labels(label).inc(stored.gaps)
