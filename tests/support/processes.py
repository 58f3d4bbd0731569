"""A modelplane server run as its own process: a free loopback port for it, and waiting till it serves."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# How long a starting server may take before the test gives up; not a performance bound.
STARTUP_LIMIT = 60.0


def wait_serving(process: subprocess.Popen[bytes], channel: grpc.Channel, log_path: Path) -> None:
    """Returns once health answers SERVING on `channel`; fails, showing the server's log, when the process
    exits first or STARTUP_LIMIT passes."""
    health = health_pb2_grpc.HealthStub(channel)
    give_up = time.monotonic() + STARTUP_LIMIT
    while True:
        assert process.poll() is None, f"the server exited early:\n{log_path.read_text()}"
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            reply = None
        if reply is not None and reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        assert time.monotonic() < give_up, f"the server never became SERVING:\n{log_path.read_text()}"
        time.sleep(0.1)
