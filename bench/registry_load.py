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
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.bare_server import FULL_METHOD
from bench.registry_seed import CALL_TIMEOUT, SeededRegistry, new_version_template, remove_seed, seed_registry
from modelplane.client.channel import channel_options
from modelplane.v1 import registry_pb2
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub

if TYPE_CHECKING:
    # Only in the generated type stubs: ModelRegistryServiceStub(aio_channel) is typed as this.
    from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceAsyncStub

# The baseline: one empty unary method on a bare grpc.aio server (bench/bare_server.py) of its own.
BARE = "bare grpc.aio"
HEALTH = "Health/Check"
READS = ("GetModelVersion", "ResolveModel(alias)", "ResolveModel(constraints)")
WRITES = ("CreateModelVersion", "SetAlias")
# The alias the write load moves among each chat model's seeded versions (the seeded aliases stay put).
WRITE_ALIAS = "bench-write"

# How long the server may take to report SERVING (it connects and migrates in the background).
READY_TIMEOUT = 60.0

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Round:
    """One slice of a cell: its throughput and the CPU the server and Postgres spent per call in it."""

    qps: float
    # Microseconds of CPU (user + system) per successful call; None when not measured.
    server_cpu_us: float | None
    postgres_cpu_us: float | None
    # Writes only: the backends waiting on a lock and running, on average over the round.
    lock_waits: LockWaits | None = None
    # The load process's own CPU per successful call (its callers, channel or HTTP client, decoding).
    client_cpu_us: float | None = None


@dataclass(frozen=True)
class Cell:
    """One measurement: one RPC at one concurrency, over all its rounds."""

    rpc: str
    concurrency: int
    calls: int
    errors: dict[str, int]
    seconds: float
    qps: float
    p50_ms: float
    p99_ms: float
    rounds: list[Round]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence (0.0 when it is empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass(frozen=True)
class Slice:
    """What the callers of one stretch of time saw, and the CPU the processes behind the RPC spent."""

    latencies: list[float]
    errors: Counter[str]
    seconds: float
    server_cpu: float | None = None
    postgres_cpu: float | None = None
    lock_waits: LockWaits | None = None
    client_cpu: float | None = None


class CallFailed(Exception):
    """A call of a non-gRPC server (an HTTP API) that did not succeed; `code` names how, as a gRPC
    status name would."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat, in seconds (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _parent_pids() -> dict[int, int]:
    """Every process's parent, from /proc/<pid>/stat (a process that goes away meanwhile is left out)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as stat:
                text = stat.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    return parents


def tree_cpu_seconds(pid: int) -> float:
    """process_cpu_seconds of a process and of every live descendant: a server that serves from worker
    processes (gunicorn's, `serve --workers`) is billed for all of them. A worker that exits within a
    slice takes its CPU with it."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_pids().items():
        children.setdefault(parent, []).append(child)
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += process_cpu_seconds(current)
        pending.extend(children.get(current, ()))
    return total


# How often the backends' lock waits are sampled while a write is driven.
LOCK_SAMPLE_INTERVAL = 0.005


@dataclass(frozen=True)
class LockWaits:
    """Backends of the server's database in the samples: waiting on a lock (the revision counter's row
    lock among them) and running a statement (waiting or not), on average."""

    waiting: float
    active: float


class PostgresCpu:
    """The CPU of the Postgres backends serving the benchmarked server's database (all but this one's
    own connections), read from /proc: so it works only with a Postgres on this machine. A second
    connection samples their lock waits."""

    def __init__(
        self,
        conn: asyncpg.Connection[asyncpg.Record] | None,
        sampler: asyncpg.Connection[asyncpg.Record] | None = None,
    ) -> None:
        self._conn = conn
        self._sampler = sampler

    async def lock_waits(self, until: float) -> LockWaits | None:
        """Samples pg_stat_activity until perf_counter() reaches `until`."""
        if self._sampler is None:
            return None
        samples: list[tuple[int, int]] = []
        while time.perf_counter() < until:
            row = await self._sampler.fetchrow(
                "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting,"
                " count(*) FILTER (WHERE state = 'active') AS active"
                " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND application_name = 'modelplane'"
            )
            assert row is not None
            samples.append((row["waiting"], row["active"]))
            await asyncio.sleep(LOCK_SAMPLE_INTERVAL)
        if not samples:
            return None
        return LockWaits(
            waiting=sum(w for w, _ in samples) / len(samples),
            active=sum(a for _, a in samples) / len(samples),
        )

    async def sample(self) -> dict[int, float] | None:
        if self._conn is None:
            return None
        pids = await self._conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {r["pid"]: process_cpu_seconds(r["pid"]) for r in pids}


async def _drive(
    call: Call,
    concurrency: int,
    seconds: float,
    server_pid: int | None = None,
    postgres: PostgresCpu | None = None,
    sample_locks: bool = False,
) -> Slice:
    """`concurrency` callers, each calling in a loop until `seconds` are up."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    pg_before = None if postgres is None else await postgres.sample()
    cpu_before = None if server_pid is None else tree_cpu_seconds(server_pid)
    client_before = time.process_time()
    started = time.perf_counter()
    end = started + seconds

    async def caller() -> None:
        while time.perf_counter() < end:
            begin = time.perf_counter()
            try:
                await call()
            except (grpc.aio.AioRpcError, CallFailed) as exc:
                code, details = (
                    (exc.code, exc.details)
                    if isinstance(exc, CallFailed)
                    else (exc.code().name, exc.details())
                )
                errors[code] += 1
                if errors.total() == 1:
                    print(f"  first failure: {code}: {details}", file=sys.stderr)
                continue
            latencies.append(time.perf_counter() - begin)

    sampler = postgres.lock_waits(end) if postgres is not None and sample_locks else None
    *_, lock_waits = await asyncio.gather(
        *(caller() for _ in range(concurrency)), sampler or asyncio.sleep(0, None)
    )
    # The callers stop at the first call that ends after `end`, so the slice lasts a little longer.
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    server_cpu = None if server_pid is None else tree_cpu_seconds(server_pid) - (cpu_before or 0.0)
    postgres_cpu = None
    pg_after = None if postgres is None else await postgres.sample()
    if pg_before is not None and pg_after is not None:
        # A backend that appeared during the slice counts from zero; one that went away is not counted.
        postgres_cpu = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in pg_after.items())
    return Slice(latencies, errors, elapsed, server_cpu, postgres_cpu, lock_waits, client_cpu)


def _per_call_us(cpu: float | None, calls: int) -> float | None:
    return None if cpu is None or not calls else cpu / calls * 1e6


def summarize(rpc: str, concurrency: int, slices: Sequence[Slice]) -> Cell:
    """One cell from the slices it was measured in."""
    latencies = sorted(latency for piece in slices for latency in piece.latencies)
    errors: Counter[str] = Counter()
    for piece in slices:
        errors.update(piece.errors)
    seconds = sum(piece.seconds for piece in slices)
    rounds = [
        Round(
            qps=len(piece.latencies) / piece.seconds,
            server_cpu_us=_per_call_us(piece.server_cpu, len(piece.latencies)),
            postgres_cpu_us=_per_call_us(piece.postgres_cpu, len(piece.latencies)),
            lock_waits=piece.lock_waits,
            client_cpu_us=_per_call_us(piece.client_cpu, len(piece.latencies)),
        )
        for piece in slices
    ]
    return Cell(
        rpc=rpc,
        concurrency=concurrency,
        calls=len(latencies),
        errors=dict(errors),
        seconds=seconds,
        qps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        rounds=rounds,
    )


@dataclass(frozen=True)
class Target:
    """An RPC to drive and the processes that serve it (whose CPU is read around each slice)."""

    call: Call
    server_pid: int | None
    postgres: PostgresCpu | None = None
    sample_locks: bool = False


async def measure_level(
    rpcs: Mapping[str, Target | Call], concurrency: int, warmup: float, duration: float, rounds: int
) -> list[Cell]:
    """Measures every RPC of `targets` at one concurrency. Each RPC's time is cut into `rounds` slices taken
    in turn with the others', so a neighbour's load on this machine weighs on the baseline and the RPCs
    alike, and the ratio of round i of an RPC to round i of the baseline compares like with like. A bare
    call function is measured without reading any process's CPU."""
    targets = {rpc: t if isinstance(t, Target) else Target(t, None) for rpc, t in rpcs.items()}
    for target in targets.values():
        # Fills the pool's connections, the prepared statements and the channel before anything counts.
        await _drive(target.call, concurrency, warmup)
    slices: dict[str, list[Slice]] = {rpc: [] for rpc in targets}
    for _ in range(rounds):
        for rpc, t in targets.items():
            piece = await _drive(
                t.call, concurrency, duration / rounds, t.server_pid, t.postgres, t.sample_locks
            )
            slices[rpc].append(piece)
    return [summarize(rpc, concurrency, pieces) for rpc, pieces in slices.items()]


def registry_calls(registry: ModelRegistryServiceAsyncStub, seeded: SeededRegistry) -> dict[str, Call]:
    """One call function per registry RPC of the load; requests are built beforehand, as the baseline's
    is, and rotate over the seeded names so the server does not answer the same row every time."""
    get_requests = itertools.cycle(registry_pb2.GetModelVersionRequest(name=n) for n in seeded.versions)
    alias_requests = itertools.cycle(registry_pb2.ResolveModelRequest(alias=a) for a in seeded.aliases)
    constraint_requests = itertools.cycle(
        registry_pb2.ResolveModelRequest(constraints=c) for c in seeded.constraints
    )
    chat_models = [m for m in seeded.models if "-chat-" in m]
    templates = itertools.cycle((f"models/{m}", new_version_template(m)) for m in chat_models)
    # Each chat model's write alias moves to its versions 1, 2, 3, 1, ... (models interleaved, so the
    # concurrent callers rarely move one alias at once).
    moves = itertools.cycle(
        (f"models/{m}/aliases/{WRITE_ALIAS}", f"models/{m}/versions/{n}")
        for n in (1, 2, 3)
        for m in chat_models
    )

    def create() -> Awaitable[object]:
        parent, version = next(templates)
        # A fresh request id per call, as the typed client sends: the idempotency record is part of the cost.
        request = registry_pb2.CreateModelVersionRequest(
            parent=parent, model_version=version, request_id=uuid.uuid4().hex
        )
        return registry.CreateModelVersion(request, timeout=CALL_TIMEOUT)

    def set_alias() -> Awaitable[object]:
        name, version = next(moves)
        request = registry_pb2.SetAliasRequest(
            name=name, version=version, reason="benchmark", request_id=uuid.uuid4().hex
        )
        return registry.SetAlias(request, timeout=CALL_TIMEOUT)

    return {
        "GetModelVersion": lambda: registry.GetModelVersion(next(get_requests), timeout=CALL_TIMEOUT),
        "ResolveModel(alias)": lambda: registry.ResolveModel(next(alias_requests), timeout=CALL_TIMEOUT),
        "ResolveModel(constraints)": lambda: registry.ResolveModel(
            next(constraint_requests), timeout=CALL_TIMEOUT
        ),
        "CreateModelVersion": create,
        "SetAlias": set_alias,
    }


def _calls(
    channel: grpc.aio.Channel,
    bare_channel: grpc.aio.Channel,
    registry: ModelRegistryServiceAsyncStub,
    seeded: SeededRegistry,
) -> dict[str, Call]:
    """The registry's calls, the bare server's empty call and Health/Check."""
    bare = bare_channel.unary_unary(FULL_METHOD, request_serializer=None, response_deserializer=None)
    health = health_pb2_grpc.HealthStub(channel)
    health_request = health_pb2.HealthCheckRequest(service="")
    return {
        BARE: lambda: bare(b"", timeout=CALL_TIMEOUT),
        HEALTH: lambda: health.Check(health_request, timeout=CALL_TIMEOUT),
    } | registry_calls(registry, seeded)


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
    async with (
        grpc.aio.insecure_channel(args.target, options=channel_options()) as channel,
        grpc.aio.insecure_channel(args.bare_target) as bare_channel,
    ):
        await wait_serving(channel)
        async with asyncio.timeout(READY_TIMEOUT):
            await bare_channel.channel_ready()
        pg_conn = await asyncpg.connect(args.database_url) if args.database_url else None
        sampler_conn = await asyncpg.connect(args.database_url) if args.database_url else None
        postgres = PostgresCpu(pg_conn, sampler_conn)
        registry = ModelRegistryServiceStub(channel)
        print(f"seeding {args.models} models x {args.versions} versions with aliases ...", file=sys.stderr)
        seeded = await seed_registry(registry, models=args.models, versions_per_model=args.versions)
        try:
            calls = _calls(channel, bare_channel, registry, seeded)
            # The baseline is always measured: every ratio is taken against it in the same rounds.
            reads = {BARE: Target(calls[BARE], args.bare_pid)} | {
                rpc: Target(calls[rpc], args.server_pid, postgres)
                for rpc in (HEALTH, *READS)
                if args.only is None or rpc in args.only
            }
            writes = {
                rpc: Target(calls[rpc], args.server_pid, postgres, sample_locks=True)
                for rpc in WRITES
                if args.only is None or rpc in args.only
            }
            cells: list[Cell] = []
            # Reads before the writes: versions published by the writes would add candidates to resolution.
            for concurrency in args.concurrency:
                print(f"  baseline and reads at concurrency {concurrency} ...", file=sys.stderr)
                cells += await measure_level(reads, concurrency, args.warmup, args.duration, args.rounds)
            for concurrency in args.concurrency if writes else ():
                print(f"  writes at concurrency {concurrency} ...", file=sys.stderr)
                cells += await measure_level(writes, concurrency, args.warmup, args.duration, args.rounds)
        finally:
            for conn in (pg_conn, sampler_conn):
                if conn is not None:
                    await conn.close()
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


def rpc_names(value: str) -> frozenset[str]:
    """A comma-separated subset of the benchmark's RPCs (the baseline is always measured)."""
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = names - {HEALTH, *READS, *WRITES}
    if not names or unknown:
        known = ", ".join((HEALTH, *READS, *WRITES))
        raise argparse.ArgumentTypeError(f"expected some of {known}; got {value!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry_load", description=__doc__)
    parser.add_argument(
        "--target", required=True, help="HOST:PORT of a running modelplane server without auth"
    )
    parser.add_argument("--bare-target", required=True, help="HOST:PORT of bench/bare_server.py")
    parser.add_argument("--server-pid", type=int, help="the modelplane server's pid, to read its CPU")
    parser.add_argument("--bare-pid", type=int, help="the bare server's pid, to read its CPU")
    parser.add_argument(
        "--database-url", help="the server's database, to read its backends' CPU (a Postgres on this machine)"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per cell (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of warm-up per cell (default 0.5)")
    parser.add_argument(
        "--concurrency", type=_concurrencies, default=[1, 16], help="callers per cell, e.g. 1,16 (default)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="slices each cell's time is cut into, taken in turn (default 5)"
    )
    parser.add_argument("--models", type=int, default=50, help="models to seed (default 50)")
    parser.add_argument("--versions", type=int, default=3, help="versions per model (default 3)")
    parser.add_argument(
        "--only", type=rpc_names, help="measure only these RPCs, comma-separated (and the bare baseline)"
    )
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
