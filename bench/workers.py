"""`serve --workers 2` against `--workers 1`: GetModelVersion and CheckContent of a clean 2 KB text at
concurrency 64, from client processes of their own, on the same seeded database, in alternating rounds.

    python -m bench.workers [--duration S] [--rounds R] [--clients C] [--database-url URL | --embedded]

CheckContent checks the guardrails benchmark's clean text against its policy (bench/guardrails_grpc.py: 5,000
banned terms, 20 regular expressions, every PII detector, a length limit): the text passes, so a call is the
check alone, nothing stored. Each server is measured on one RPC, then the other.

Prints per RPC each server's QPS per round and the median ratio of 2 workers to 1, with the CPU a call costs
the server (all its processes) and the client processes, and the cores both kept busy together. The kernel
spreads connections, not calls, over the workers, so each client process opens several connections. The
clients share the machine with the server: on a 2-core machine they take CPU the second worker would use, so
the ratio there is a floor, and the CPU figures say where it lies: with the server's CPU a call S and the
clients' C, two workers make at most 2/(S + C) calls a second on two cores of their own, whatever one worker
made. The servers run at --log-level WARNING (no access log), the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.guardrails_grpc import BANNED_TERMS, REGEXES, TEXT_CHARS, bench_policy, bench_text
from bench.processes import running
from bench.registry_load import tree_cpu_seconds
from bench.registry_seed import new_version_template
from bench.run import bench_database, free_port
from modelplane.v1 import guardrails_pb2, guardrails_pb2_grpc, registry_pb2, registry_pb2_grpc

CONCURRENCY = 64
# Connections each client process opens (a channel each), so that both workers get some.
CONNECTIONS_PER_CLIENT = 4
VERSIONS = 20
CALL_TIMEOUT = 10.0
# Creating the policy compiles its 5,000 terms.
POLICY_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
MODEL = "bench-workers"
POLICY = "bench-workers"
READ = "GetModelVersion"
CHECK = "CheckContent"
RPCS = (READ, CHECK)


@contextmanager
def server(workers: int, database_url: str) -> Iterator[tuple[str, int]]:
    """`modelplane serve --workers N` without auth on a free loopback port; yields its address and pid."""
    address = f"127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "modelplane.server.cli", "serve", "--workers", str(workers),
        "--address", address, "--database-url", database_url, "--no-auth", "--log-level", "WARNING",
    ]  # fmt: skip
    with running(command) as process:
        asyncio.run(_wait_serving(address, workers))
        yield address, process.pid


async def _wait_serving(address: str, workers: int) -> None:
    """Until `workers` fresh connections in a row answer SERVING (each worker connects on its own)."""
    options = (("grpc.use_local_subchannel_pool", 1),)
    serving_in_a_row = 0
    async with asyncio.timeout(READY_TIMEOUT):
        while serving_in_a_row < 4 * workers:
            async with grpc.aio.insecure_channel(address, options=options) as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=True
                    )
                    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.aio.AioRpcError:
                    serving = False
            serving_in_a_row = serving_in_a_row + 1 if serving else 0
            if not serving:
                await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Seeded:
    versions: list[str]
    policy: str


async def _seed(address: str) -> Seeded:
    """The model's versions and the policy, made by the first server and found by the others; confirms the
    text is clean (ALLOW, no violation) under the policy."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        try:
            await stub.CreateModel(
                registry_pb2.CreateModelRequest(model_id=MODEL, model=registry_pb2.Model(provider="bench")),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        listed = await stub.ListModelVersions(
            registry_pb2.ListModelVersionsRequest(parent=f"models/{MODEL}", page_size=VERSIONS),
            timeout=CALL_TIMEOUT,
        )
        names = [version.name for version in listed.model_versions]
        while len(names) < VERSIONS:
            reply = await stub.CreateModelVersion(
                registry_pb2.CreateModelVersionRequest(
                    parent=f"models/{MODEL}", model_version=new_version_template(MODEL)
                ),
                timeout=CALL_TIMEOUT,
            )
            names.append(reply.model_version.name)
        guardrails = guardrails_pb2_grpc.GuardrailServiceStub(channel)
        try:
            await guardrails.CreatePolicy(
                guardrails_pb2.CreatePolicyRequest(policy_id=POLICY, policy=bench_policy()),
                timeout=POLICY_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        policy = f"policies/{POLICY}"
        checked = await guardrails.CheckContent(
            guardrails_pb2.CheckContentRequest(policy=policy, text=bench_text()), timeout=POLICY_TIMEOUT
        )
        verdict = checked.verdict
        if verdict.decision != guardrails_pb2.DECISION_ALLOW or verdict.violations:
            raise RuntimeError(f"the text is not clean under {policy}: {verdict}")
        return Seeded(names, policy)


def _calls(rpc: str, channel: grpc.aio.Channel, seeded: Seeded) -> Iterator[Callable[[], Awaitable[object]]]:
    """The calls one loop makes, endlessly: GetModelVersion over the versions in turn, or CheckContent of
    the clean text with a fresh request id each (as the typed client sends)."""
    if rpc == READ:
        registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        requests = [registry_pb2.GetModelVersionRequest(name=name) for name in seeded.versions]
        for request in itertools.cycle(requests):
            yield functools.partial(registry.GetModelVersion, request, timeout=CALL_TIMEOUT)
    else:
        guardrails = guardrails_pb2_grpc.GuardrailServiceStub(channel)
        text = bench_text()
        while True:
            check = guardrails_pb2.CheckContentRequest(
                policy=seeded.policy, text=text, request_id=uuid.uuid4().hex
            )
            yield functools.partial(guardrails.CheckContent, check, timeout=CALL_TIMEOUT)


async def _client_load(
    address: str, rpc: str, seeded: Seeded, concurrency: int, start: float, stop: float
) -> tuple[int, float]:
    """Calls of `rpc` completed between `start` and `stop` (time.time()) by `concurrency` loops over the
    channels, and the CPU seconds this process spent from `start` on."""
    options = (("grpc.use_local_subchannel_pool", 1),)
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(CONNECTIONS_PER_CLIENT)]
    counted = failed = 0
    cpu_at_start: float | None = None

    async def loop(index: int) -> None:
        nonlocal counted, failed, cpu_at_start
        for call in _calls(rpc, channels[index % len(channels)], seeded):
            now = time.time()
            if now >= stop:
                return
            if now >= start and cpu_at_start is None:
                cpu_at_start = time.process_time()
            try:
                await call()
            except grpc.aio.AioRpcError as error:
                # An overloaded server may answer UNAVAILABLE (its pool's acquire timeout): not a good call.
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                failed += 1
                continue
            if now >= start:
                counted += 1

    try:
        await asyncio.gather(*(loop(index) for index in range(concurrency)))
    finally:
        cpu = 0.0 if cpu_at_start is None else time.process_time() - cpu_at_start
        for channel in channels:
            await channel.close(grace=None)
    if failed:
        print(f"  {failed} {rpc} calls answered UNAVAILABLE (not counted)", file=sys.stderr)
    return counted, cpu


def _client_process(
    address: str, rpc: str, seeded: Seeded, concurrency: int, start: float, stop: float
) -> tuple[int, float]:
    return asyncio.run(_client_load(address, rpc, seeded, concurrency, start, stop))


@dataclass(frozen=True)
class Measured:
    qps: float
    # CPU microseconds a call: the server's processes, the client processes.
    server_us: float
    client_us: float

    @property
    def cores(self) -> float:
        """Cores the server and the clients kept busy together."""
        return self.qps * (self.server_us + self.client_us) / 1e6


def measure(
    address: str, pid: int, rpc: str, seeded: Seeded, clients: int, duration: float, warmup: float
) -> Measured:
    """`rpc`'s QPS over `duration` seconds after `warmup`, from `clients` processes, with the CPU the server
    and the clients spent a call meanwhile."""
    start = time.time() + warmup + 1.0  # one more second for the client processes to start
    stop = start + duration
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        pending = pool.starmap_async(
            _client_process, [(address, rpc, seeded, CONCURRENCY // clients, start, stop)] * clients
        )
        time.sleep(max(0.0, start - time.time()))
        server_before = tree_cpu_seconds(pid)
        time.sleep(max(0.0, stop - time.time()))
        server_cpu = tree_cpu_seconds(pid) - server_before
        results = pending.get()
    calls = sum(count for count, _ in results)
    client_cpu = sum(cpu for _, cpu in results)
    per_call = 1e6 / calls if calls else 0.0
    return Measured(calls / duration, server_cpu * per_call, client_cpu * per_call)


def _row(workers: int, figures: Sequence[Measured]) -> str:
    return f"  --workers {workers}: " + ", ".join(
        f"{m.qps:.0f} QPS (server {m.server_us:.0f} us, clients {m.client_us:.0f} us a call;"
        f" {m.cores:.2f} cores)"
        for m in figures
    )


def _block(title: str, measured: dict[int, list[Measured]]) -> list[str]:
    """One RPC's rows, its ratios of 2 workers to 1 and its ceilings, round by round."""
    ratios = [two.qps / one.qps for one, two in zip(measured[1], measured[2], strict=True) if one.qps]
    # The most two workers could make of one with two cores of their own, the clients on them too (see above).
    ceilings = [
        2e6 / (two.server_us + two.client_us) / one.qps
        for one, two in zip(measured[1], measured[2], strict=True)
        if one.qps and two.server_us + two.client_us
    ]
    return [
        title,
        _row(1, measured[1]),
        _row(2, measured[2]),
        f"  ratio 2 workers / 1: median {statistics.median(ratios or [0.0]):.2f}"
        f" (rounds: {', '.join(f'{ratio:.2f}' for ratio in ratios)})",
        "  the most 2 workers could make of 1 with 2 cores for server and clients, 2 / (S2 + C2) / QPS1:"
        f" median {statistics.median(ceilings or [0.0]):.2f}"
        f" (rounds: {', '.join(f'{ceiling:.2f}' for ceiling in ceilings)})",
    ]


def run(database_url: str, duration: float, warmup: float, rounds: int, clients: int) -> str:
    measured: dict[str, dict[int, list[Measured]]] = {rpc: {1: [], 2: []} for rpc in RPCS}
    for round_number in range(rounds):
        for workers in (1, 2):
            with server(workers, database_url) as (address, pid):
                seeded = asyncio.run(_seed(address))
                for rpc in RPCS:
                    figure = measure(address, pid, rpc, seeded, clients, duration, warmup)
                    measured[rpc][workers].append(figure)
                    print(
                        f"round {round_number + 1}/{rounds}: {workers} workers: {rpc} {figure.qps:.0f} QPS",
                        file=sys.stderr,
                    )
    return "\n".join(
        [
            f"modelplane serve --workers 2 against --workers 1: concurrency {CONCURRENCY} from {clients}"
            f" client processes, {duration:g} s rounds after {warmup:g} s of warm-up, {os.cpu_count()} cores",
            *_block(f"{READ} ({VERSIONS} versions in turn)", measured[READ]),
            *_block(
                f"{CHECK} of a clean {TEXT_CHARS}-character text ({BANNED_TERMS} banned terms, {REGEXES}"
                " regular expressions, every PII detector, a length limit; ALLOW, nothing stored)",
                measured[CHECK],
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per round, server and RPC"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 1 worker then 2")
    parser.add_argument("--clients", type=int, default=2, help="client processes sharing the concurrency")
    parser.add_argument("--database-url", help="Postgres to use (default: a throw-away one)")
    parser.add_argument(
        "--embedded", action="store_true", help="use an embedded Postgres even when 127.0.0.1:5432 answers"
    )
    args = parser.parse_args(argv)
    with bench_database(args.database_url, embedded_only=args.embedded) as database:
        print(run(database.url, args.duration, args.warmup, args.rounds, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
