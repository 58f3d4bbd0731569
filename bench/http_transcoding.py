"""What HTTP/JSON costs beside gRPC: GetModel and ListModels on one `modelplane serve` (one worker), called
over gRPC and over HTTP/JSON in the same run, at concurrency 1 (latency) and 16 (throughput).

    python -m bench.http_transcoding [--calls N] [--database-url URL]

Every HTTP call is a gRPC call of the same server over its private channel, plus JSON both ways; the report
prints each figure and HTTP's as a ratio of gRPC's, measured in the same run. Figures move with the
machine's load: compare ratios, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc

from bench.http_client import LeanHttp
from bench.processes import running
from bench.run import bench_database, free_port
from modelplane.v1 import registry_pb2, registry_pb2_grpc

READY_TIMEOUT = 60.0
CALL_TIMEOUT = 10.0
MODELS = 20

Call = Callable[[], Awaitable[None]]


async def _ready(target: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with grpc.aio.insecure_channel(target) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        while True:
            try:
                await stub.ListModels(registry_pb2.ListModelsRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _seed(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        for i in range(MODELS):
            await stub.CreateModel(
                registry_pb2.CreateModelRequest(
                    model_id=f"bench-{i}", model=registry_pb2.Model(provider="openai", labels={"n": str(i)})
                ),
                timeout=CALL_TIMEOUT,
            )


async def _measure(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """Calls per second, and the median latency in milliseconds."""
    latencies: list[float] = []
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return calls / elapsed, statistics.median(latencies) * 1000


async def _run(target: str, http_target: str, calls: int) -> None:
    await _ready(target)
    await _seed(target)
    http = LeanHttp(f"http://{http_target}")
    get_http, list_http = http.get("/v1/models/bench-7"), http.get("/v1/models?pageSize=20")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        get_request = registry_pb2.GetModelRequest(name="models/bench-7")
        list_request = registry_pb2.ListModelsRequest(page_size=20)

        async def grpc_get() -> None:
            await stub.GetModel(get_request, timeout=CALL_TIMEOUT)

        async def grpc_list() -> None:
            await stub.ListModels(list_request, timeout=CALL_TIMEOUT)

        async def http_get() -> None:
            status, _ = await http.send(get_http)
            assert status == 200

        async def http_list() -> None:
            status, _ = await http.send(list_http)
            assert status == 200

        print(
            f"{'call':<24}{'gRPC calls/s':>14}{'HTTP calls/s':>14}{'ratio':>8}{'gRPC ms':>10}{'HTTP ms':>10}"
        )
        for name, over_grpc, over_http in (
            ("GetModel", grpc_get, http_get),
            ("ListModels (20)", grpc_list, http_list),
        ):
            for concurrency in (1, 16):
                await _measure(over_grpc, calls // 10, concurrency)  # warm-up
                await _measure(over_http, calls // 10, concurrency)
                grpc_rate, grpc_ms = await _measure(over_grpc, calls, concurrency)
                http_rate, http_ms = await _measure(over_http, calls, concurrency)
                label = f"{name} x{concurrency}"
                print(
                    f"{label:<24}{grpc_rate:>14.0f}{http_rate:>14.0f}{http_rate / grpc_rate:>8.2f}"
                    f"{grpc_ms:>10.2f}{http_ms:>10.2f}"
                )
    await http.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--database-url", help="Postgres to use; default: a throw-away database")
    args = parser.parse_args(argv)
    target, http_target = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with bench_database(args.database_url) as database:
        command = [
            sys.executable, "-m", "modelplane.server.cli", "serve", "--address", target,
            "--http-address", http_target, "--database-url", database.url, "--no-auth",
            "--workers", "1", "--access-log-sample", "0",
        ]  # fmt: skip
        with running(command):
            print(f"one worker, {database.description}")
            asyncio.run(_run(target, http_target, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
