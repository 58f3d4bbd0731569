"""What each part of a call costs the server: CPU time per grpc.health.v1/Check call at concurrency 16, with
the server's parts switched on one after another, each in a server process of its own.

    python -m bench.call_overhead [--calls N] [--rounds R] [--database-url URL] [--instructions]

Each step adds one part to the one before (see CallParts); the report prints the server's CPU per call
(user + system, read from /proc) and what the step added, and every figure as a ratio of the bare server's
(gRPC with the stock health service alone), measured in the same run. Figures move with the machine's
load; a step's added cost is the difference of two medians. The database is --database-url, else a
throw-away one as bench/run.py makes it (only the server's readiness touches it: Check never does).
With --instructions it counts instead the instructions the server executes per call, under valgrind's
callgrind: a count that the machine's load does not move, at the price of a server tens of times slower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import running
from bench.run import bench_database, free_port

CONCURRENCY = 16
CALL_TIMEOUT = 10.0
READY_TIMEOUT = 60.0
# --instructions: calls made before the counted ones in both servers (the first calls of a process pay for
# its caches), and how much longer than usual a call may take under valgrind.
WARMUP_CALLS = 500
VALGRIND_SLOWDOWN = 30.0


@dataclass(frozen=True)
class Step:
    name: str
    # What the server process builds: "bare", or a full server with these CallParts fields.
    parts: dict[str, object] | None
    # The server traces every call (a span per call, made and dropped: no exporter, so only the tracing's
    # own cost is measured).
    traced: bool = False


STEPS = (
    Step("bare gRPC server, stock Health/Check", None),
    Step("+ the five services, health and reflection", {"scope": False}),
    Step(
        "+ the call scope (request id, caller, status mapping)",
        {"request_id_metadata": False, "metrics": False, "access_log_sample": 0.0},
    ),
    Step("+ x-request-id (a unary call: in its trailers)", {"metrics": False, "access_log_sample": 0.0}),
    Step("+ Prometheus metrics", {"access_log_sample": 0.0}),
    Step("+ the access log, every call (INFO)", {}),
)
SAMPLED = Step("  the access log sampled at 1%, instead", {"access_log_sample": 0.01})
TRACED = Step("  + tracing (OpenTelemetry SDK, spans made, not exported)", {}, traced=True)
# The steps measured beside the last one rather than after it, by the name the runner passes.
VARIANTS = {"sampled": SAMPLED, "traced": TRACED}


# ---------------------------------------------------------------------------------------------------------
# The server process


async def _serve_bare(port: int) -> None:
    # grpc_health ships its asyncio servicer untyped in grpc-stubs.
    from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _until_stopped()
    await server.stop(0)


async def _serve_full(port: int, database_url: str, parts: dict[str, object], *, traced: bool) -> None:
    from modelplane.server.app import build_server
    from modelplane.server.calls import CallParts
    from modelplane.server.config import ServerConfig

    tracing = None
    if traced:
        from opentelemetry.sdk.trace import TracerProvider

        from modelplane.server.tracing import Tracing

        tracing = Tracing(TracerProvider())
        parts = {**parts, "access_log_trace": True}
    config = ServerConfig(address=f"127.0.0.1:{port}", database_url=database_url, auth=False)
    server = build_server(config, parts=CallParts(**parts), tracing=tracing)  # type: ignore[arg-type]
    await server.start()
    await _until_stopped()
    await server.stop(0)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def serve(step_index: int, variant: str, port: int, database_url: str) -> None:
    from modelplane.server.log_lines import configure_logging

    # The access log is written where a server writes it, to stderr (sent to /dev/null by the runner).
    configure_logging("INFO")
    step = VARIANTS.get(variant) or STEPS[step_index]
    if step.parts is None:
        asyncio.run(_serve_bare(port))
    else:
        asyncio.run(_serve_full(port, database_url, step.parts, traced=step.traced))


# ---------------------------------------------------------------------------------------------------------
# The runner


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def _drive(target: str, calls: int, *, slowdown: float = 1.0) -> None:
    """Waits for SERVING, then makes `calls` calls at CONCURRENCY; `slowdown` stretches the timeouts."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        async with asyncio.timeout(READY_TIMEOUT * slowdown):
            while True:
                try:
                    reply = await stub.Check(request, timeout=2 * slowdown, wait_for_ready=True)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.Check(request, timeout=CALL_TIMEOUT * slowdown)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def measure(step_index: int, variant: str, database_url: str, calls: int) -> float:
    """Server CPU microseconds per call of one step (or variant), in a server process of its own."""
    port = free_port()
    command = _server_command(step_index, variant, port, database_url)
    with running(command) as process:
        target = f"127.0.0.1:{port}"
        # The warm-up also waits for SERVING; only the calls after it are billed.
        asyncio.run(_drive(target, calls // 5))
        before = _cpu_seconds(process.pid)
        asyncio.run(_drive(target, calls))
        after = _cpu_seconds(process.pid)
    return (after - before) / calls * 1e6


def _server_command(step_index: int, variant: str, port: int, database_url: str) -> list[str]:
    return [
        sys.executable, "-m", "bench.call_overhead", "--serve", str(step_index), "--port", str(port),
        "--database-url", database_url, *(["--variant", variant] if variant else []),
    ]  # fmt: skip


def _instructions(step_index: int, variant: str, database_url: str, calls: int) -> int:
    """Instructions a server process of one step executes from its start to its stop, having answered the
    warm-up and then `calls` calls, as valgrind's callgrind counts them (every thread of the process)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="call-overhead-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            *_server_command(step_index, variant, port, database_url),
        ]  # fmt: skip
        with running(command):
            asyncio.run(_drive(f"127.0.0.1:{port}", WARMUP_CALLS + calls, slowdown=VALGRIND_SLOWDOWN))
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"callgrind wrote no summary for step {step_index}")


def count_instructions(step_index: int, variant: str, database_url: str, calls: int) -> float:
    """Instructions the server executes per call of one step: the difference between a server that answered
    `calls` calls more than another, divided by `calls` (start-up, warm-up and stop cancel out)."""
    more = _instructions(step_index, variant, database_url, calls)
    fewer = _instructions(step_index, variant, database_url, 0)
    return (more - fewer) / calls


def run_instructions(database_url: str, calls: int) -> str:
    """The report of --instructions: one count a step (a count does not move with the machine's load)."""
    values = [count_instructions(index, "", database_url, calls) for index in range(len(STEPS))]
    lines = [
        f"server instructions per Health/Check call at concurrency {CONCURRENCY} (valgrind's callgrind,"
        f" {calls} calls)",
        f"{'step':<62} {'instr':>8} {'added':>7} {'x bare':>7}",
    ]
    for index, (step, value) in enumerate(zip(STEPS, values, strict=True)):
        added = "" if index == 0 else f"{value - values[index - 1]:+.0f}"
        lines.append(f"{step.name:<62} {value:>8.0f} {added:>7} {value / values[0]:>7.2f}")
    return "\n".join(lines)


def run(database_url: str, calls: int, rounds: int) -> str:
    last = len(STEPS) - 1
    steps = [(index, "", step) for index, step in enumerate(STEPS)]
    steps += [(last, variant, step) for variant, step in VARIANTS.items()]
    samples: dict[str, list[float]] = {step.name: [] for _, _, step in steps}
    # Rounds alternate over the steps, so a change in the machine's load touches every step alike.
    for round_number in range(rounds):
        for index, variant, step in steps:
            print(f"round {round_number + 1}/{rounds}: {step.name.strip()} ...", file=sys.stderr)
            samples[step.name].append(measure(index, variant, database_url, calls))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare = medians[STEPS[0].name]
    lines = [
        f"server CPU per Health/Check call at concurrency {CONCURRENCY}, median of {rounds} rounds of"
        f" {calls} calls",
        f"{'step':<62} {'us/call':>8} {'added':>7} {'x bare':>7}",
    ]
    previous: float | None = None
    for _, variant, step in steps:
        value = medians[step.name]
        # A variant replaces the last step: what it adds is measured against the step before that one
        # (sampling) or against the last step itself (tracing, on top of everything).
        base = (
            medians[STEPS[-2].name]
            if variant == "sampled"
            else medians[STEPS[-1].name]
            if variant
            else previous
        )
        added = "" if base is None else f"{value - base:+.0f}"
        lines.append(f"{step.name:<62} {value:>8.0f} {added:>7} {value / bare:>7.2f}")
        if not variant:
            previous = value
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000, help="calls measured per step and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every step (the median is shown)")
    parser.add_argument("--database-url", help="Postgres for the servers' readiness (default: throw-away)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the server's instructions per call under valgrind's callgrind, one run a step, instead"
        " of its CPU time (slow: about a minute a step for 2,000 calls; needs valgrind)",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", choices=["", *VARIANTS], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.variant, args.port, args.database_url)
        return 0
    with bench_database(args.database_url) as database:
        if args.instructions:
            print(run_instructions(database.url, args.calls))
        else:
            print(run(database.url, args.calls, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
