"""HttpTransport, ServiceCoordinator's transport to endpoints over HTTP, against a real HTTP endpoint on
loopback: JSON in and out with the routing headers, and HTTP statuses mapped to the transport's errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelplane.orchestration import (
    EndpointFailed,
    HttpTransport,
    RequestRejected,
    RouteTarget,
    ServiceCoordinator,
)

DEPLOYMENT = "deployments/chat-prod"


class _Endpoint(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path == "/reject":
            self.send_response(422)
            self.end_headers()
            self.wfile.write(b"bad payload")
            return
        if self.path == "/crash":
            self.send_response(503)
            self.end_headers()
            return
        answer = json.dumps(
            {
                "echo": body,
                "slot": self.headers["x-modelplane-traffic-slot"],
                "rid": self.headers["x-request-id"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_http_transport_posts_json_with_routing_headers(http_endpoint: str) -> None:
    coordinator = ServiceCoordinator(
        static_routes={DEPLOYMENT: [http_endpoint]}, transport=HttpTransport(path="/v1/generate")
    )
    answer = await coordinator.call(DEPLOYMENT, {"prompt": "hello"}, routing_key="u", request_id="r-9")
    assert answer == {"echo": {"prompt": "hello"}, "slot": "stable", "rid": "r-9"}
    await coordinator.aclose()


async def test_http_transport_maps_statuses(http_endpoint: str) -> None:
    target = RouteTarget(DEPLOYMENT, "stable", http_endpoint, "", "", 0, "static")
    rejecting = HttpTransport(path="/reject")
    with pytest.raises(RequestRejected) as rejected:
        await rejecting.call(target, {}, timeout=5, headers={})
    assert rejected.value.status == 422
    await rejecting.aclose()
    crashing = HttpTransport(path="/crash")
    with pytest.raises(EndpointFailed) as failed:
        await crashing.call(target, {}, timeout=5, headers={})
    assert failed.value.status == 503
    await crashing.aclose()
    refused = HttpTransport()
    # Port 9 (discard) has no listener on loopback here: a refused connection is the endpoint's failure.
    gone = RouteTarget(DEPLOYMENT, "stable", "127.0.0.1:9", "", "", 0, "static")
    with pytest.raises(EndpointFailed):
        await refused.call(gone, {}, timeout=5, headers={})
    assert refused.url("http://svc.internal:8000/") == "http://svc.internal:8000/"
    await refused.aclose()
