"""The load of the registry benchmark: the client process that seeds a running server, drives each RPC at
each concurrency for a fixed time, and prints the measurements as one JSON object on stdout.

Run by bench/run.py as `python -m bench.registry_load --target HOST:PORT`, in a process of its own, so the
client's work is not billed to the server. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.registry_seed import CALL_TIMEOUT, SeededRegistry, new_version_template, remove_seed, seed_registry
from modelplane.client.channel import channel_options
from modelplane.v1 import registry_pb2
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub

# The RPC that does nothing: what the gRPC stack, the interceptor and Python cost on their own.
BASELINE = "Health/Check"
READS = ("GetModelVersion", "ResolveModel(alias)", "ResolveModel(constraints)")
WRITE = "CreateModelVersion"
RPCS = (BASELINE, *READS, WRITE)

# How long the server may take to report SERVING (it connects and migrates in the background).
READY_TIMEOUT = 60.0

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Cell:
    """One measurement: one RPC at one concurrency."""

    rpc: str
    concurrency: int
    calls: int
    errors: dict[str, int]
    seconds: float
    qps: float
    p50_ms: float
    p99_ms: float


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence (0.0 when it is empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def _drive(call: Call, concurrency: int, seconds: float) -> tuple[list[float], Counter[str], float]:
    """`concurrency` callers, each calling in a loop until `seconds` are up: latencies of successful
    calls, counts of failed ones by status code, and the time the callers really ran."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    started = time.perf_counter()
    end = started + seconds

    async def caller() -> None:
        while time.perf_counter() < end:
            begin = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                if errors.total() == 1:
                    print(f"  first failure: {exc.code().name}: {exc.details()}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def measure(rpc: str, call: Call, concurrency: int, warmup: float, duration: float) -> Cell:
    """Warms the path up (connections in the pool, prepared statements, caches), then measures it."""
    if warmup > 0:
        await _drive(call, concurrency, warmup)
    latencies, errors, elapsed = await _drive(call, concurrency, duration)
    latencies.sort()
    return Cell(
        rpc=rpc,
        concurrency=concurrency,
        calls=len(latencies),
        errors=dict(errors),
        seconds=elapsed,
        qps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def _calls(
    channel: grpc.aio.Channel, registry: ModelRegistryServiceStub, seeded: SeededRegistry
) -> dict[str, Call]:
    """One call function per RPC; requests are built beforehand, as the baseline's is, and rotate over
    the seeded names so the server does not answer the same row every time."""
    health = health_pb2_grpc.HealthStub(channel)
    health_request = health_pb2.HealthCheckRequest(service="")
    get_requests = itertools.cycle(registry_pb2.GetModelVersionRequest(name=n) for n in seeded.versions)
    alias_requests = itertools.cycle(registry_pb2.ResolveModelRequest(alias=a) for a in seeded.aliases)
    constraint_requests = itertools.cycle(
        registry_pb2.ResolveModelRequest(constraints=c) for c in seeded.constraints
    )
    templates = itertools.cycle(
        (f"models/{m}", new_version_template(m)) for m in seeded.models if "-chat-" in m
    )

    def create() -> Awaitable[object]:
        parent, version = next(templates)
        # A fresh request id per call, as the typed client sends: the idempotency record is part of the cost.
        request = registry_pb2.CreateModelVersionRequest(
            parent=parent, model_version=version, request_id=uuid.uuid4().hex
        )
        return registry.CreateModelVersion(request, timeout=CALL_TIMEOUT)

    return {
        BASELINE: lambda: health.Check(health_request, timeout=CALL_TIMEOUT),
        "GetModelVersion": lambda: registry.GetModelVersion(next(get_requests), timeout=CALL_TIMEOUT),
        "ResolveModel(alias)": lambda: registry.ResolveModel(next(alias_requests), timeout=CALL_TIMEOUT),
        "ResolveModel(constraints)": lambda: registry.ResolveModel(
            next(constraint_requests), timeout=CALL_TIMEOUT
        ),
        WRITE: create,
    }


async def wait_serving(channel: grpc.aio.Channel) -> None:
    """Returns once the server's health is SERVING; TimeoutError after READY_TIMEOUT seconds."""
    health = health_pb2_grpc.HealthStub(channel)
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            try:
                response = await health.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2.0, wait_for_ready=True
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            await asyncio.sleep(0.1)


async def run_load(args: argparse.Namespace) -> dict[str, object]:
    async with grpc.aio.insecure_channel(args.target, options=channel_options()) as channel:
        await wait_serving(channel)
        registry = ModelRegistryServiceStub(channel)
        print(
            f"seeding {args.models} models x {args.versions} versions with aliases ...", file=sys.stderr
        )
        seeded = await seed_registry(registry, models=args.models, versions_per_model=args.versions)
        try:
            calls = _calls(channel, registry, seeded)
            cells: list[Cell] = []
            # Reads before the write: versions published by the write would add candidates to resolution.
            for rpc in RPCS:
                for concurrency in args.concurrency:
                    print(f"  {rpc} at concurrency {concurrency} ...", file=sys.stderr)
                    cells.append(await measure(rpc, calls[rpc], concurrency, args.warmup, args.duration))
        finally:
            if not args.keep_seed:
                await remove_seed(registry, seeded)
    return {
        "seed": {
            "models": len(seeded.models),
            "versions": len(seeded.versions),
            "aliases": len(seeded.aliases),
            "constraint_requests": len(seeded.constraints),
        },
        "cells": [asdict(cell) for cell in cells],
    }


def _concurrencies(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"every concurrency must be 1 or more, got {value!r}")
    return levels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry_load", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of a running modelplane server without auth")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per cell (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per cell (default 0.5)")
    parser.add_argument(
        "--concurrency", type=_concurrencies, default=[1, 16], help="callers per cell, e.g. 1,16 (default)"
    )
    parser.add_argument("--models", type=int, default=50, help="models to seed (default 50)")
    parser.add_argument("--versions", type=int, default=3, help="versions per model (default 3)")
    parser.add_argument("--keep-seed", action="store_true", help="leave the seeded models in the database")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(run_load(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
