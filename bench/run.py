"""`make bench`: the registry benchmark, then the guardrails benchmarks. Starts a modelplane server and a bare
grpc.aio server (bench/bare_server.py, the baseline) in processes of their own, runs the load
(bench/registry_load.py) from a third, and prints per RPC and concurrency the QPS as a ratio of the bare
server's in the same rounds (median and range), latencies, and the CPU the server and Postgres spent a call.

The database is --database-url, else MODELPLANE_BENCH_DATABASE_URL, else a throw-away database on the local
Postgres (127.0.0.1:5432, dropped at the end), else an embedded Postgres under a temporary directory. The
benchmark only prints figures: it never fails because a figure is low.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_ENV = "MODELPLANE_BENCH_DATABASE_URL"
BASELINE = "bare grpc.aio"
HEALTH = "Health/Check"
READS = ("GetModelVersion", "ResolveModel(alias)", "ResolveModel(constraints)")
WRITES = ("CreateModelVersion", "SetAlias")
# The share of the bare server's QPS each should keep at the same concurrency.
TARGETS = {HEALTH: 0.85} | dict.fromkeys(READS, 0.8)
# Writes a second at concurrency 16.
WRITE_TARGET = 1000.0
SERVER_STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class BenchDatabase:
    url: str
    description: str


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _with_database(url: str, database: str) -> str:
    # Imported here: the server half of the package is only needed when the benchmark makes its database.
    from modelplane.server.store.urls import with_database

    return with_database(url, database)


@contextlib.contextmanager
def bench_database(given: str | None, *, embedded_only: bool = False) -> Iterator[BenchDatabase]:
    """The database to run on, made and removed here unless the caller gave one."""
    url = given or os.environ.get(DATABASE_ENV)
    if url:
        yield BenchDatabase(url, "the given database (seeded models are removed at the end)")
        return
    if not embedded_only and asyncio.run(_answers(LOCAL_ADMIN_URL)):
        name = f"mp_bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(_execute(LOCAL_ADMIN_URL, f'CREATE DATABASE "{name}"'))
        try:
            yield BenchDatabase(
                _with_database(LOCAL_ADMIN_URL, name), f"throw-away database {name} on 127.0.0.1:5432"
            )
        finally:
            asyncio.run(_execute(LOCAL_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    from modelplane.server.store.embedded import start_embedded

    # pgserver keeps a lock directory under XDG_RUNTIME_DIR and touches it again at exit, after the
    # temporary directory is gone; the system's temporary directory outlives the process.
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="modelplane-bench-") as tmp:
        embedded = start_embedded(Path(tmp))
        try:
            yield BenchDatabase(embedded.url, f"embedded Postgres in {embedded.data_dir}")
        finally:
            embedded.handle.cleanup()


def free_port() -> int:
    """A port nothing listens on now; the server binds it a moment later (good enough on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Served:
    target: str
    pid: int


@contextlib.contextmanager
def _process(command: list[str], log_file: IO[str]) -> Iterator[int]:
    """Runs command with its output in log_file; SIGTERM at the end (SIGKILL if it does not stop)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def server_process(database_url: str, log_level: str, log_file: IO[str]) -> Iterator[str]:
    """`modelplane serve` without auth on a loopback port; yields its target."""
    with modelplane_server(database_url, log_level, log_file) as served:
        yield served.target


@contextlib.contextmanager
def modelplane_server(database_url: str, log_level: str, log_file: IO[str]) -> Iterator[Served]:
    """`modelplane serve` without auth on a loopback port, one process as the bare server is (the load's one
    channel would reach one worker of several anyway; bench/workers.py measures more); yields its target and
    pid."""
    target = f"127.0.0.1:{free_port()}"
    command = [
        *(sys.executable, "-m", "modelplane.server.cli", "serve", "--address", target, "--workers", "1"),
        *("--database-url", database_url, "--no-auth", "--log-level", log_level),
    ]
    with _process(command, log_file) as pid:
        yield Served(target, pid)


@contextlib.contextmanager
def bare_server_process(log_file: IO[str]) -> Iterator[Served]:
    """The baseline: bench/bare_server.py on a loopback port."""
    target = f"127.0.0.1:{free_port()}"
    with _process([sys.executable, "-m", "bench.bare_server", "--address", target], log_file) as pid:
        yield Served(target, pid)


def run_load(server: Served, bare: Served, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs bench/registry_load.py in a process of its own and returns what it measured."""
    command = [
        *(sys.executable, "-m", "bench.registry_load"),
        *("--target", server.target, "--server-pid", str(server.pid)),
        *("--bare-target", bare.target, "--bare-pid", str(bare.pid)),
        *("--duration", str(args.duration), "--warmup", str(args.warmup), "--rounds", str(args.rounds)),
        *("--concurrency", ",".join(str(level) for level in args.concurrency)),
        *("--models", str(args.models), "--versions", str(args.versions)),
        *(["--only", args.only] if args.only else []),
    ]
    if _is_local(database_url):
        command += ["--database-url", database_url]
    # Progress (stderr) goes straight to the terminal; stdout carries the JSON result.
    finished = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the load process failed with exit code {finished.returncode}")
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def _is_local(database_url: str) -> bool:
    """Postgres's CPU is read from /proc, so only a Postgres on this machine can be measured."""
    from urllib.parse import urlsplit

    host = urlsplit(database_url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("/") or not host


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _spread(values: Sequence[float], fmt: str) -> str:
    """median (min-max) of values."""
    if not values:
        return "-"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}} ({low:{fmt}}-{high:{fmt}})"


def _cpu(cell: dict[str, Any], key: str) -> list[float]:
    return [r[key] for r in cell["rounds"] if r[key] is not None]


def format_report(result: dict[str, Any], args: argparse.Namespace, database: str) -> str:
    """One block per concurrency: QPS, the ratio to the bare server's QPS round by round, CPU per call."""
    seed = result["seed"]
    cells: list[dict[str, Any]] = result["cells"]
    lines = [
        "modelplane registry benchmark",
        f"  registry: {seed['models']} models, {seed['versions']} versions, {seed['aliases']} aliases, "
        f"{seed['constraint_requests']} constraint requests in rotation",
        f"  CPU: {cpu_model()}, {os.cpu_count()} cores; the modelplane server, the bare grpc.aio server "
        "and the load in three processes; one channel per server, asyncio callers",
        f"  database: {database}",
        f"  {args.duration:g} s measured per cell in {args.rounds} rounds taken in turn with the other RPCs, "
        f"after {args.warmup:g} s of warm-up; server log level {args.server_log_level}",
        "  figures: median (min-max) over the rounds; ratio = the RPC's QPS / the bare server's QPS in the "
        "same round; CPU = user+system microseconds per call of the serving process (server) and of the "
        "Postgres backends of its database (pg)",
        "",
    ]
    header = (
        f"{'RPC':<27}{'conc':>5}{'QPS':>8}{'p50 ms':>8}{'p99 ms':>8}  "
        f"{'ratio':<18}{'server us':<19}{'pg us':<19}errors"
    )
    below: list[str] = []
    for concurrency in args.concurrency:
        lines.append(header)
        level = [c for c in cells if c["concurrency"] == concurrency]
        base = next((c for c in level if c["rpc"] == BASELINE), None)
        for cell in level:
            rpc = cell["rpc"]
            ratio = ""
            if base is not None and rpc != BASELINE and rpc not in WRITES:
                ratios = [
                    mine["qps"] / theirs["qps"]
                    for mine, theirs in zip(cell["rounds"], base["rounds"], strict=True)
                    if theirs["qps"]
                ]
                ratio = _spread(ratios, ".2f")
                target = TARGETS.get(rpc)
                if target is not None and ratios and statistics.median(ratios) < target:
                    below.append(f"{rpc} at {concurrency} ({statistics.median(ratios):.2f} < {target:.2f})")
            if rpc in WRITES and concurrency == 16 and cell["qps"] < WRITE_TARGET:
                below.append(f"{rpc} at 16 ({cell['qps']:.0f}/s < {WRITE_TARGET:.0f}/s)")
            errors = ",".join(f"{code}={n}" for code, n in sorted(cell["errors"].items())) or "0"
            lines.append(
                f"{rpc:<27}{concurrency:>5}{cell['qps']:>8.0f}{cell['p50_ms']:>8.2f}{cell['p99_ms']:>8.2f}  "
                f"{ratio:<18}{_spread(_cpu(cell, 'server_cpu_us'), '.0f'):<19}"
                f"{_spread(_cpu(cell, 'postgres_cpu_us'), '.0f'):<19}{errors}"
            )
        lines.append("")
    for cell in (c for c in cells if c["rpc"] in WRITES):
        waits = [r["lock_waits"] for r in cell["rounds"] if r.get("lock_waits")]
        if waits:
            lines.append(
                f"{cell['rpc']} at {cell['concurrency']}: Postgres backends waiting on a lock "
                f"{_spread([w['waiting'] for w in waits], '.1f')} of "
                f"{_spread([w['active'] for w in waits], '.1f')} running a statement (sampled every 5 ms)"
            )
    lines.append("")
    lines.append(
        "targets: Health/Check at 0.85 of the bare server's QPS, reads at 0.80 (median ratio), "
        f"writes {WRITE_TARGET:.0f}/s at concurrency 16"
    )
    lines.append("below target: " + ("; ".join(below) if below else "none"))
    return "\n".join(lines)


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    return seconds


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {value!r}")
    return int(value)


def _concurrencies(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"every concurrency must be 1 or more, got {value!r}")
    return levels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", help=f"Postgres to run on (else ${DATABASE_ENV}, else a throw-away database)"
    )
    parser.add_argument(
        "--embedded", action="store_true", help="use an embedded Postgres even when 127.0.0.1:5432 answers"
    )
    parser.add_argument("--duration", type=_positive, default=5.0, help="seconds measured per cell (5)")
    parser.add_argument("--warmup", type=_positive, default=0.5, help="seconds of warm-up per cell (0.5)")
    parser.add_argument(
        "--concurrency", type=_concurrencies, default=[1, 16], help="callers per cell, comma-separated (1,16)"
    )
    parser.add_argument(
        "--rounds",
        type=_count,
        default=5,
        help="slices each cell is cut into, taken in turn with the others (5)",
    )
    parser.add_argument("--models", type=_count, default=50, help="models to seed (50)")
    parser.add_argument("--versions", type=_count, default=3, help="versions per seeded model (3)")
    parser.add_argument(
        "--server-log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the server's --log-level; INFO (its default) writes an access-log line per call",
    )
    parser.add_argument(
        "--only",
        help="measure only these registry RPCs, comma-separated, e.g. CreateModelVersion,SetAlias (the bare "
        "baseline is always measured)",
    )
    parser.add_argument(
        "--registry-only",
        action="store_true",
        help="run the registry benchmark alone, not the others after it",
    )
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="after the registry benchmark, compare with MLflow's model registry (bench/mlflow_compare.py; "
        "installs MLflow into build/mlflow-venv on first use)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.NamedTemporaryFile("w+", prefix="modelplane-bench-server-", suffix=".log") as log_file:
        try:
            with (
                bench_database(args.database_url, embedded_only=args.embedded) as database,
                modelplane_server(database.url, args.server_log_level, log_file) as server,
                bare_server_process(log_file) as bare,
            ):
                where = f"server on {server.target}, bare server on {bare.target}"
                print(f"{where}; database: {database.description}", file=sys.stderr)
                result = run_load(server, bare, database.url, args)
        except RuntimeError as exc:
            log_file.seek(0)
            tail = log_file.read().splitlines()[-30:]
            print(f"bench: {exc}; the server's last log lines:", *tail, sep="\n  ", file=sys.stderr)
            return 1
    print(format_report(result, args, database.description), flush=True)
    print(flush=True)
    subprocess.run([sys.executable, "-m", "bench.registry_convert"], cwd=REPO, check=False)
    exit_code = run_mlflow_comparison(args) if args.mlflow else 0
    if args.registry_only:
        return exit_code
    exit_code = run_workers_comparison(args) or exit_code
    return run_guardrail_benchmarks(args) or exit_code


def run_mlflow_comparison(args: argparse.Namespace) -> int:
    """bench/mlflow_compare.py in a process of its own, with this run's database and timing options."""
    command = [
        *(sys.executable, "-m", "bench.mlflow_compare"),
        *(["--database-url", args.database_url] if args.database_url else []),
        *(["--embedded"] if args.embedded else []),
        *("--duration", str(args.duration), "--warmup", str(args.warmup), "--rounds", str(args.rounds)),
        *("--models", str(args.models), "--versions", str(args.versions)),
        *("--server-log-level", args.server_log_level),
    ]
    print(flush=True)
    return subprocess.run(command, cwd=REPO, check=False).returncode


# Rounds of bench/workers.py in a `make bench` run: each round starts two servers and measures each on two
# RPCs, so the run's --rounds would make it the longest part of the run.
WORKERS_ROUNDS = 3


def run_workers_comparison(args: argparse.Namespace) -> int:
    """bench/workers.py in processes of its own: `serve --workers 2` against `--workers 1` on GetModelVersion
    and CheckContent, with this run's database, --duration per round and --rounds (at most WORKERS_ROUNDS)."""
    command = [
        *(sys.executable, "-m", "bench.workers"),
        *(["--database-url", args.database_url] if args.database_url else []),
        *(["--embedded"] if args.embedded else []),
        *("--duration", str(args.duration), "--rounds", str(min(args.rounds, WORKERS_ROUNDS))),
    ]
    print(flush=True)
    return subprocess.run(command, cwd=REPO, check=False).returncode


def run_guardrail_benchmarks(args: argparse.Namespace) -> int:
    """The guardrails benchmarks after the registry's, each in processes of its own: the rule engine alone
    (bench/guardrails_engine.py), then CheckContent over gRPC on a server of its own
    (bench/guardrails_grpc.py), then the event loop under hostile policies and texts
    (bench/guardrails_hostile.py)."""
    grpc_options = [
        *(["--database-url", args.database_url] if args.database_url else []),
        *(["--embedded"] if args.embedded else []),
        *("--duration", str(args.duration), "--warmup", str(args.warmup), "--rounds", str(args.rounds)),
        *("--concurrency", ",".join(str(level) for level in args.concurrency)),
        *("--server-log-level", args.server_log_level),
    ]
    exit_code = 0
    database_options = [
        *(["--database-url", args.database_url] if args.database_url else []),
        *(["--embedded"] if args.embedded else []),
    ]
    deployments_command = ["bench.deployments_routing", *database_options, "--duration", str(args.duration)]
    for command in (
        ["bench.guardrails_engine"],
        ["bench.guardrails_grpc", *grpc_options],
        ["bench.guardrails_hostile", *database_options],
        deployments_command,
        ["bench.logs_ingest", *database_options],
    ):
        print(flush=True)
        finished = subprocess.run([sys.executable, "-m", *command], cwd=REPO, check=False)
        exit_code = exit_code or finished.returncode
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
