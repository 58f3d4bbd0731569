"""`modelplane serve --workers 2` as a subprocess: both workers serve on the one port (gRPC and HTTP), a
worker still starting leaves new connections waiting rather than failing them, a killed worker is started
again while the other serves, SIGTERM stops them all, the ports stay refused to a
second server, the metrics endpoint adds up every worker, and what holds across replicas (a watch sees a
change made on another connection, compare-and-set, each timed rollout step once) holds across workers; and
a worker count whose connections would not fit Postgres is refused in one line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelplane.v1 import deployments_pb2, registry_pb2, registry_pb2_grpc
from tests.support.loopback import free_port
from tests.support.processes import (
    SHUTDOWN_GRACE,
    STARTUP_LIMIT,
    environment,
    launched,
    modelplane_command,
    wait_for_line,
    wait_serving,
)

# A channel of its own per call: gRPC otherwise shares one connection among channels to the same target,
# and the kernel spreads connections, not calls, over the workers.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)

# Fresh connections made to see both workers; the chance that all of them reach one of two is 2**-39.
CONNECTIONS = 40

_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
_ACCESS = re.compile(r"\[worker (\d+)\] modelplane\.access: /grpc\.health\.v1\.Health/Check OK")


def _started_workers(log_path: Path) -> dict[int, int]:
    """The pid each worker last started with, by worker number."""
    return {int(number): int(pid) for number, pid in _STARTED.findall(log_path.read_text())}


def _check_on_a_new_connection(address: str) -> None:
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _workers_that_answered(log_path: Path) -> set[int]:
    return {int(number) for number in _ACCESS.findall(log_path.read_text())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; its parent reaps it.
    status = Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split(") ")[-1][0] != "Z"


def _metric(body: str, name: str, labels: str) -> float:
    for line in body.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} with {labels} in:\n{body}")


def _scrape(metrics_address: str) -> str:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as reply:
        body: bytes = reply.read()
    return body.decode()


# A running `serve --workers 2`: the process, its address, its metrics address, its log, its HTTP address.
Running = tuple[subprocess.Popen[bytes], str, str, Path, str]


@pytest.fixture
def two_workers(database_url: str, tmp_path: Path) -> Iterator[Running]:
    """`serve --workers 2` without auth; yields the process, its address, its metrics address, its log and
    its HTTP address."""
    address, metrics_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    http_address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = [
        "serve", "--workers", "2", "--address", address, "--metrics-address", metrics_address,
        "--http-address", http_address,
        "--database-url", database_url, "--no-auth", "--shutdown-grace", str(SHUTDOWN_GRACE),
    ]  # fmt: skip
    with launched(args, tmp_path, log_path) as process:
        with grpc.insecure_channel(address) as channel:
            wait_serving(process, channel, log_path)
        # Each worker reports SERVING once it has connected; the first answer says nothing of the other.
        deadline = time.monotonic() + STARTUP_LIMIT
        while log_path.read_text().count("health: SERVING") < 2:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield process, address, metrics_address, log_path, http_address


def test_a_worker_still_starting_leaves_new_connections_waiting_rather_than_failing_them(
    database_url: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = ["serve", "--workers", "2", "--address", address, "--database-url", database_url, "--no-auth"]
    with launched([*args, "--shutdown-grace", str(SHUTDOWN_GRACE)], tmp_path, log_path) as process:
        serving = wait_for_line(process, log_path, "health: SERVING")
        # The other worker may still be connecting or migrating: the connections the kernel gives it wait in
        # its backlog until it serves, so every call is answered, none with UNAVAILABLE.
        for _ in range(CONNECTIONS):
            with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
                stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
                stub.ListModels(registry_pb2.ListModelsRequest(), timeout=10)
        other = "[worker 2]" if "[worker 1]" in serving else "[worker 1]"
        wait_for_line(process, log_path, f"{other} modelplane.server.health: health: SERVING")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=SHUTDOWN_GRACE + 30) == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_two_workers_serve_one_port_restart_when_killed_and_stop_on_sigterm(
    two_workers: Running, database_url: str, tmp_path: Path
) -> None:
    process, address, metrics_address, log_path, _ = two_workers
    first = _started_workers(log_path)
    assert sorted(first) == [1, 2]
    assert len(set(first.values())) == 2

    for _ in range(CONNECTIONS):
        _check_on_a_new_connection(address)
    assert _workers_that_answered(log_path) == {1, 2}

    # One endpoint for both workers: it counts every call, whichever worker answered it.
    body = _scrape(metrics_address)
    checks = 'grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health"'
    assert _metric(body, "grpc_server_handled_total", checks) >= CONNECTIONS

    # A second server on the port fails in one line, workers or not.
    second = subprocess.run(
        [*modelplane_command(), "serve", "--address", address, "--database-url", database_url],
        capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60, check=False,
    )  # fmt: skip
    assert second.returncode == 1
    assert second.stderr == f"modelplane: error: {address} is already in use\n"

    # Worker 1 killed outright: the other keeps answering while the parent starts worker 1 again.
    os.kill(first[1], signal.SIGKILL)
    wait_for_line(process, log_path, f"worker 1 (pid {first[1]}) was killed by SIGKILL; starting it again")
    deadline = time.monotonic() + STARTUP_LIMIT
    while _started_workers(log_path)[1] == first[1]:
        _check_on_a_new_connection(address)
        assert time.monotonic() < deadline, log_path.read_text()
    restarted = _started_workers(log_path)
    assert restarted[2] == first[2]
    assert _alive(restarted[2])
    # Worker 1 started again takes calls only once it serves: a new connection the kernel gives it waits
    # for that instead of being answered NOT_SERVING.
    while log_path.read_text().count("health: SERVING") < 3:
        assert time.monotonic() < deadline, log_path.read_text()
        _check_on_a_new_connection(address)
    # The killed worker's calls stay counted after its death.
    assert _metric(_scrape(metrics_address), "grpc_server_handled_total", checks) >= CONNECTIONS

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=SHUTDOWN_GRACE + 30) == 0, log_path.read_text()
    text = log_path.read_text()
    assert "Traceback" not in text
    assert "all workers stopped" in text
    assert not _alive(restarted[1])
    assert not _alive(restarted[2])


async def test_across_workers_a_watch_sees_every_change_and_compare_and_set_holds(
    two_workers: Running,
) -> None:
    _, address, _, log_path, _ = two_workers
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as watching:
        watch = registry_pb2_grpc.ModelRegistryServiceStub(watching).WatchModels(
            registry_pb2.WatchModelsRequest(start_revision=0), timeout=60
        )
        # The first message is the progress mark at the current revision: the watch is open.
        first = await watch.read()
        assert isinstance(first, registry_pb2.WatchModelsResponse)
        assert first.HasField("progress")

        # Each model made on a connection of its own, so the writes land on both workers.
        names = [f"model-{index}" for index in range(12)]
        models: list[registry_pb2.Model] = []
        for name in names:
            async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
                stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
                reply = await stub.CreateModel(
                    registry_pb2.CreateModelRequest(
                        model_id=name, model=registry_pb2.Model(provider="openai")
                    ),
                    timeout=10,
                )
                models.append(reply.model)
        assert len(_workers_that_wrote(log_path)) == 2

        seen: list[str] = []
        async with asyncio.timeout(30):
            while len(seen) < len(names):
                message = await watch.read()
                assert isinstance(message, registry_pb2.WatchModelsResponse)
                if message.HasField("change"):
                    seen.append(message.change.resource)
        watch.cancel()
    assert seen == [f"models/{name}" for name in names]

    # Compare-and-set: one model updated at once through many connections, all with the same etag.
    model = models[0]

    async def update(index: int) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            changed = registry_pb2.Model(name=model.name, etag=model.etag, display_name=f"writer {index}")
            try:
                await stub.UpdateModel(
                    registry_pb2.UpdateModelRequest(
                        model=changed, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    codes = await asyncio.gather(*(update(index) for index in range(16)))
    assert codes.count(grpc.StatusCode.OK) == 1
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}


def _workers_that_wrote(log_path: Path) -> set[int]:
    return {
        int(number)
        for number in re.findall(
            r"\[worker (\d+)\] modelplane\.access: \S+/CreateModel OK", log_path.read_text()
        )
    }


def test_workers_that_would_not_fit_postgres_connection_limit_are_refused_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [*modelplane_command(), "serve", "--workers", "500", "--address", address,
         "--database-url", database_url],
        capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("modelplane: error: 500 workers may open ")
    assert "max_connections" in result.stderr


async def test_across_workers_each_timed_rollout_step_happens_once(two_workers: Running) -> None:
    # The deployment tests' own steps, here on two workers whose rollout drivers race for every step.
    from tests.api import test_deployments as deployments

    _, address, _, _, _ = two_workers
    async with grpc.aio.insecure_channel(address) as channel:
        dep, reg = deployments._stubs(channel)
        await deployments._registry(reg)
        await deployments._deploy(dep)
        await deployments._ready(dep, deployments.CANARY)
        started = await dep.StartRollout(
            deployments_pb2.StartRolloutRequest(
                parent="deployments/chat-prod",
                rollout=deployments._canary([1000, 2000, 3000, 4000, 5000], seconds=0.2),
            ),
            timeout=deployments.TIMEOUT,
        )
        await deployments._wait_state(dep, started.rollout.name, deployments_pb2.ROLLOUT_STATE_SUCCEEDED)
        entries = await deployments._history(dep)
    by_driver = [entry for entry in entries if entry.actor == "modelplane-driver"]
    assert [deployments._weights(entry.traffic_after)[1] for entry in by_driver] == [
        2000,
        3000,
        4000,
        5000,
        -1,
    ]
    assert deployments._replay(entries).stable.model_version == deployments.V2


_LISTED = re.compile(
    r"\[worker (\d+)\] modelplane\.access: /modelplane\.v1\.ModelRegistryService/ListModels OK"
)


def _list_models_over_http(http_address: str) -> dict[str, object]:
    # urllib opens a new connection for every request, which the kernel may give to either worker.
    with urllib.request.urlopen(f"http://{http_address}/v1/models", timeout=10) as reply:
        assert reply.status == 200
        body: dict[str, object] = json.loads(reply.read())
    return body


def test_both_workers_serve_http_on_one_port(two_workers: Running, database_url: str, tmp_path: Path) -> None:
    """Each worker serves HTTP for its own gRPC server, so each call is logged by the worker whose HTTP took
    it; a second server is refused the HTTP port in one line; SIGTERM still stops everything cleanly."""
    process, _, _, log_path, http_address = two_workers
    assert f"HTTP/JSON on http://{http_address}" in log_path.read_text()
    for _ in range(CONNECTIONS):
        assert _list_models_over_http(http_address) == {"models": [], "nextPageToken": ""}
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
