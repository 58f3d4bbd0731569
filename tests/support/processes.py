"""A modelplane server run as its own process: the command that starts it, an environment free of the
developer's settings, running it in the background, and waiting till it serves or logs a line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# How long a starting server may take before the test gives up; not a performance bound.
STARTUP_LIMIT = 60.0

# The --shutdown-grace tests pass when they stop a server; the bounds on waiting for it are generous.
SHUTDOWN_GRACE = 2.0


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without MODELPLANE_* settings, so the developer's shell cannot leak in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODELPLANE_")}
    env.update(extra or {})
    return env


def modelplane_command() -> list[str]:
    """The `modelplane` console script beside this Python (what `make run` runs), else the module."""
    script = Path(sys.executable).with_name("modelplane")
    return [str(script)] if script.exists() else [sys.executable, "-m", "modelplane.server.cli"]


@contextmanager
def launched(args: list[str], cwd: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`modelplane ARGS` in the background, its output in log_path; stopped (TERM, then KILL) at the end."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*modelplane_command(), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=environment(),
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            # TERM first: the embedded Postgres is stopped by its last user's exit handler, which KILL skips.
            process.terminate()
            try:
                process.wait(timeout=SHUTDOWN_GRACE + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def wait_for_line(process: subprocess.Popen[bytes], log_path: Path, *fragments: str) -> str:
    """Waits until the log holds a line with one of `fragments`; returns that line."""
    give_up = time.monotonic() + STARTUP_LIMIT
    while True:
        for line in log_path.read_text().splitlines():
            if any(fragment in line for fragment in fragments):
                return line
        assert process.poll() is None, f"exited early:\n{log_path.read_text()}"
        assert time.monotonic() < give_up, f"no line with {fragments}:\n{log_path.read_text()}"
        time.sleep(0.1)


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
