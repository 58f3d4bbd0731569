"""`modelplane serve --workers 2 --http-address ...` as a subprocess: both workers serve HTTP on the one
port (each for its own gRPC server, so each call is logged by the worker whose HTTP took it), a second
server is refused the HTTP port in one line, and SIGTERM stops everything cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc

from tests.support.loopback import free_port
from tests.support.processes import (
    SHUTDOWN_GRACE,
    STARTUP_LIMIT,
    environment,
    launched,
    modelplane_command,
    wait_serving,
)

# Fresh connections made to see both workers; the chance that all of them reach one of two is 2**-39.
CONNECTIONS = 40
_LISTED = re.compile(
    r"\[worker (\d+)\] modelplane\.access: /modelplane\.v1\.ModelRegistryService/ListModels OK"
)


def _list_models(http_address: str) -> dict[str, object]:
    # urllib opens a new connection for every request, which the kernel may give to either worker.
    with urllib.request.urlopen(f"http://{http_address}/v1/models", timeout=10) as reply:
        assert reply.status == 200
        body: dict[str, object] = json.loads(reply.read())
    return body


def test_two_workers_serve_http_on_one_port(database_url: str, tmp_path: Path) -> None:
    address, http_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = [
        "serve", "--workers", "2", "--address", address, "--http-address", http_address,
        "--database-url", database_url, "--no-auth", "--shutdown-grace", str(SHUTDOWN_GRACE),
    ]  # fmt: skip
    with launched(args, tmp_path, log_path) as process:
        with grpc.insecure_channel(address) as channel:
            wait_serving(process, channel, log_path)
        deadline = time.monotonic() + STARTUP_LIMIT
        while log_path.read_text().count("health: SERVING") < 2:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert f"HTTP/JSON on http://{http_address}" in log_path.read_text()

        for _ in range(CONNECTIONS):
            assert _list_models(http_address) == {"models": [], "nextPageToken": ""}
        assert {int(n) for n in _LISTED.findall(log_path.read_text())} == {1, 2}

        second = subprocess.run(
            [*modelplane_command(), "serve", "--address", f"127.0.0.1:{free_port()}",
             "--http-address", http_address, "--database-url", database_url, "--no-auth"],
            capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr == f"modelplane: error: the HTTP address {http_address} is already in use\n"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=SHUTDOWN_GRACE + 30) == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
