"""Deployment routing benchmark: the ServiceCoordinator's local routing decision, ResolveRoute over gRPC as a
share of the grpc.health.v1 Check baseline (from a separate client process), and how long a traffic change
takes to reach a watching coordinator. Prints figures; never fails because a figure is low.

Run by `make bench` (bench/run.py) or alone: `python -m bench.deployments_routing [--database-url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.run import REPO, bench_database, server_process

DEPLOYMENT = "deployments/bench-prod"
STABLE = tuple(f"10.0.0.{index}:8000" for index in range(1, 5))
CANARY = ("10.0.1.1:8000", "10.0.1.2:8000")
LOCAL_TARGET_NS = 5_000
RATIO_TARGET = 0.7
PROPAGATION_TARGET_MS = 50.0


def local_decision_ns(keys: int) -> tuple[float, float]:
    """ns per ServiceCoordinator.route() with a routing key, and without one (random point)."""
    from modelplane.orchestration import ServiceCoordinator, SlotTraffic, TrafficTable

    table = TrafficTable(
        deployment=DEPLOYMENT,
        stable=SlotTraffic("models/bench/versions/1", STABLE, 9_000),
        canary=SlotTraffic("models/bench/versions/2", CANARY, 1_000),
    )
    coordinator = ServiceCoordinator(static_routes={DEPLOYMENT: table})
    names = [f"user-{index}" for index in range(keys)]
    route = coordinator.route
    for key in names[:20_000]:
        route(DEPLOYMENT, key)
    started = time.perf_counter_ns()
    for key in names:
        route(DEPLOYMENT, key)
    keyed = (time.perf_counter_ns() - started) / keys
    started = time.perf_counter_ns()
    for _ in range(keys):
        route(DEPLOYMENT)
    keyless = (time.perf_counter_ns() - started) / keys
    return keyed, keyless


async def seed(target: str) -> None:
    from modelplane.client import connect
    from modelplane.v1 import deployments_pb2, registry_pb2

    async with connect(target) as connection:
        registry = connection.registry
        await registry.create_model(model_id="bench", model=registry_pb2.Model(provider="local"))
        versions = [
            await registry.create_model_version(
                parent="models/bench",
                model_version=registry_pb2.ModelVersion(
                    source_uri=f"local:bench-{index}",
                    capabilities=[registry_pb2.CAPABILITY_CHAT],
                    context_window=8_192,
                    max_output_tokens=1_024,
                    pricing=registry_pb2.TokenPricing(currency_code="USD"),
                ),
            )
            for index in (1, 2)
        ]
        await connection.deployments.create_deployment(
            deployment_id="bench-prod",
            deployment=deployments_pb2.Deployment(
                environment="prod",
                model="models/bench",
                traffic=deployments_pb2.TrafficTable(
                    stable=deployments_pb2.SlotTraffic(
                        model_version=versions[0].name,
                        endpoints=[deployments_pb2.Endpoint(address=address) for address in STABLE],
                    )
                ),
            ),
        )


async def load(target: str, duration: float, concurrency: int) -> dict[str, Any]:
    """QPS of Health/Check and of ResolveRoute, in alternating slices, from this process."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from modelplane.client.channel import channel_options
    from modelplane.v1 import deployments_pb2, deployments_pb2_grpc

    async with grpc.aio.insecure_channel(target, options=channel_options()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deployments = deployments_pb2_grpc.DeploymentServiceStub(channel)
        counter = iter(range(10**12))

        async def check() -> None:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)

        async def resolve() -> None:
            request = deployments_pb2.ResolveRouteRequest(
                deployment=DEPLOYMENT, routing_key=f"u{next(counter)}"
            )
            await deployments.ResolveRoute(request, timeout=5)

        async def measure(call: Any, seconds: float) -> int:
            done = 0
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    await call()
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done

        await measure(check, 0.3)
        await measure(resolve, 0.3)
        totals = {"Health/Check": 0, "ResolveRoute": 0}
        rounds = 3
        for _ in range(rounds):
            totals["Health/Check"] += await measure(check, duration / rounds)
            totals["ResolveRoute"] += await measure(resolve, duration / rounds)
    return {name: count / duration for name, count in totals.items()}


async def propagation_ms(target: str, changes: int) -> list[float]:
    """Milliseconds from sending a health report that changes the table to the watching coordinator
    routing with the new table."""
    from modelplane.client import connect
    from modelplane.orchestration import ServiceCoordinator

    async with connect(target) as connection:
        coordinator = ServiceCoordinator(deployments=connection.deployments, watch=[DEPLOYMENT])
        async with coordinator:
            samples: list[float] = []
            for index in range(changes):
                ready = index % 2 == 1
                started = time.perf_counter()
                await connection.deployments.report_endpoint_health(
                    deployment=DEPLOYMENT, address=STABLE[0], ready=ready
                )
                while True:
                    table = coordinator.table(DEPLOYMENT)
                    if table is not None and (STABLE[0] in table.stable.not_ready) != ready:
                        break
                    await asyncio.sleep(0.0002)
                samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/deployments_routing.py", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per RPC (3)")
    parser.add_argument("--concurrency", type=int, default=16, help="callers in the load process (16)")
    parser.add_argument("--keys", type=int, default=200_000, help="routing decisions timed locally (200000)")
    parser.add_argument("--changes", type=int, default=100, help="traffic changes timed (100)")
    parser.add_argument("--load-target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_target:
        print(json.dumps(asyncio.run(load(args.load_target, args.duration, args.concurrency))))
        return 0

    keyed, keyless = local_decision_ns(args.keys)
    print("modelplane deployment routing benchmark")
    print(
        f"  local routing decision (ServiceCoordinator.route, {args.keys} keys, 4+2 endpoints, 10% canary):"
    )
    print(
        f"    with a routing key  {keyed:8.0f} ns   target < {LOCAL_TARGET_NS} ns  "
        f"{_mark(keyed < LOCAL_TARGET_NS)}"
    )
    print(f"    without a key       {keyless:8.0f} ns")
    with (
        tempfile.NamedTemporaryFile("w+", prefix="modelplane-bench-server-", suffix=".log") as log_file,
        bench_database(args.database_url, embedded_only=args.embedded) as database,
        server_process(database.url, "WARNING", log_file) as target,
    ):
        asyncio.run(_wait_and_seed(target))
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.deployments_routing",
                "--load-target",
                target,
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if finished.returncode != 0:
            print("  load process failed", file=sys.stderr)
            return 1
        qps = json.loads(finished.stdout)
        samples = asyncio.run(propagation_ms(target, args.changes))
    ratio = qps["ResolveRoute"] / qps["Health/Check"] if qps["Health/Check"] else 0.0
    print(
        f"  over gRPC from a separate process, concurrency {args.concurrency}; "
        f"database: {database.description}"
    )
    print(f"    Health/Check        {qps['Health/Check']:8.0f} QPS (baseline)")
    print(
        f"    ResolveRoute        {qps['ResolveRoute']:8.0f} QPS   {ratio:.2f} of baseline, "
        f"target {RATIO_TARGET}  "
        f"{_mark(ratio >= RATIO_TARGET)}"
    )
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    print(f"  traffic change -> watching coordinator ({len(samples)} changes, from the RPC's start):")
    print(
        f"    p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   target < {PROPAGATION_TARGET_MS:g} ms  "
        f"{_mark(p99 < PROPAGATION_TARGET_MS)}"
    )
    return 0


async def _wait_and_seed(target: str) -> None:
    from modelplane.client import connect

    async with connect(target) as connection:
        await connection.wait_ready(timeout=60)
        # The server answers before its schema is ready; retry the first write until it is SERVING.
        for _ in range(600):
            try:
                await seed(target)
                return
            except Exception:
                await asyncio.sleep(0.1)
        await seed(target)


def _mark(ok: bool) -> str:
    return "ok" if ok else "<-"


if __name__ == "__main__":
    sys.exit(main())
