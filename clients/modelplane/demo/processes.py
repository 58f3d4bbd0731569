"""The demo's processes as the story sees them: the modelplane server (`modelplane serve`) and the consumer
services, each started as a process of its own, spoken to in JSON lines, and stopped in order.

Every process writes its log to a file of its own in the run's directory; when a process fails, the error
quotes the end of that log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import grpc

# Bounds on waiting for a process; none is a performance expectation, each keeps a hang from lasting.
STARTUP_LIMIT = 90.0
REPLY_LIMIT = 60.0
STOP_LIMIT = 30.0
LOG_TAIL_LINES = 30


class DemoProcessError(RuntimeError):
    """A process of the demo failed to start, to answer or to stop; the message quotes its log."""


def _environment() -> dict[str, str]:
    # The developer's MODELPLANE_* settings must not change the servers the demo starts.
    return {key: value for key, value in os.environ.items() if not key.startswith("MODELPLANE_")}


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def modelplane_command() -> list[str]:
    """The `modelplane` console script beside this Python, else the module."""
    script = Path(sys.executable).with_name("modelplane")
    return [str(script)] if script.exists() else [sys.executable, "-m", "modelplane.server.cli"]


class ServerProcess:
    """`modelplane serve` on a free loopback port, auth off: with no database URL, an embedded Postgres in
    `data_dir`. `extra` adds flags."""

    def __init__(
        self, log_path: Path, *, data_dir: Path, database_url: str | None, extra: tuple[str, ...] = ()
    ):
        self.log_path = log_path
        self.target = f"127.0.0.1:{free_port()}"
        args = ["serve", "--address", self.target, "--no-auth", "--workers", "1", "--data-dir", str(data_dir)]
        args += ["--access-log-sample", "0", *extra]
        if database_url is not None:
            args += ["--database-url", database_url, "--create-database"]
        self._args = args
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *modelplane_command(), *self._args, stdout=log, stderr=log, env=_environment()
            )
        await self._wait_serving()

    async def _wait_serving(self) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        give_up = time.monotonic() + STARTUP_LIMIT
        async with grpc.aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._process is None or self._process.returncode is not None:
                    raise DemoProcessError(f"the server exited at start:\n{_tail(self.log_path)}")
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > give_up:
                    raise DemoProcessError(f"the server never became SERVING:\n{_tail(self.log_path)}")
                await asyncio.sleep(0.1)

    async def stop(self) -> int | None:
        """SIGTERM, as an operator stops it (the embedded Postgres stops with it); its exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_LIMIT)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode


class ServiceProcess:
    """One consumer service (`python -m modelplane.demo.<name>_service`), spoken to as service_runtime
    says."""

    def __init__(self, name: str, log_path: Path, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.log_path = log_path
        self._process = process
        self.ready: dict[str, Any] = {}

    @classmethod
    async def start(cls, name: str, log_path: Path, *args: str) -> ServiceProcess:
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"modelplane.demo.{name}_service",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=_environment(),
            )
        service = cls(name, log_path, process)
        service.ready = await service._read("ready", STARTUP_LIMIT)
        return service

    async def _read(self, key: str, limit: float) -> Any:
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), limit)
        except TimeoutError:
            raise DemoProcessError(f"{self.name} gave no {key!r} line:\n{_tail(self.log_path)}") from None
        if not line:
            raise DemoProcessError(f"{self.name} exited:\n{_tail(self.log_path)}")
        message = json.loads(line)
        if key not in message:
            raise DemoProcessError(f"{self.name} said {message!r}, not {key!r}")
        return message[key]

    async def request(self, command: dict[str, Any], limit: float = REPLY_LIMIT) -> Any:
        """Sends one command and returns the reply."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read("reply", limit)

    async def stop(self) -> dict[str, int]:
        """Closes its stdin (it stops taking work, ships what is left and closes); its shipper's counters."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        stopped: dict[str, int] = await self._read("stopped", STOP_LIMIT)
        try:
            await asyncio.wait_for(self._process.wait(), STOP_LIMIT)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self._process.returncode != 0:
            raise DemoProcessError(f"{self.name} exited {self._process.returncode}:\n{_tail(self.log_path)}")
        return stopped

    def kill(self) -> None:
        """For a story that failed: ends the process without ceremony."""
        if self._process.returncode is None:
            self._process.kill()
