"""modelplane's registry beside MLflow's model registry, on the same Postgres, the same registry and the same
machine: reads by alias and by version, and version creation, at concurrency 16 in interleaved rounds.

    python -m bench.mlflow_compare [--duration S] [--rounds R] [--database-url URL]

or as part of `bench/run.py --mlflow`.

MLflow is installed on first use into a virtualenv of its own (build/mlflow-venv; never into .venv) and
served by `mlflow server` (4 gunicorn workers by default) on loopback, with a throw-away database beside
modelplane's, dropped at the end, as the server process group is always stopped. The same models, versions
(their fields as MLflow tags) and aliases as bench/registry_seed.py writes are written into both. The load
runs in this process: gRPC through the generated stubs, MLflow's REST API through bench/http_client.py
(asyncio streams, keep-alive; httpx only seeds), each response decoded. Prints QPS per call, the ratio of
modelplane's to MLflow's in the same round, and the CPU per call of each server (all its processes), of
the Postgres backends of its database and of this client. It only prints figures: it never fails because
a figure is low.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import grpc
import httpx

from bench.http_client import HttpError, LeanHttp
from bench.registry_load import (
    Call,
    CallFailed,
    Cell,
    PostgresCpu,
    Target,
    measure_level,
    registry_calls,
    wait_serving,
)
from bench.registry_seed import (
    CALL_TIMEOUT,
    SeededRegistry,
    new_version_template,
    remove_seed,
    seed_registry,
)
from bench.run import (
    REPO,
    _count,
    _execute,
    _is_local,
    _positive,
    _spread,
    _with_database,
    bench_database,
    cpu_model,
    free_port,
    modelplane_server,
)
from modelplane.client.channel import channel_options
from modelplane.v1 import registry_pb2
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub

if TYPE_CHECKING:
    # Only in the generated type stubs: ModelRegistryServiceStub(aio_channel) is typed as this.
    from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceAsyncStub

# The newest MLflow whose every dependency the package index here has (3.18.0 lacks mlflow-tracing 3.18.0).
MLFLOW_VERSION = "3.17.2"
PSYCOPG2_VERSION = "2.9.13"
VENV = REPO / "build" / "mlflow-venv"
CONCURRENCY = 16
WORKERS = 4
# modelplane's QPS as a multiple of MLflow's, median over the rounds.
READ_TARGET = 12.0
WRITE_TARGET = 3.0
INSTALL_TIMEOUT = 900.0
# MLflow creates its tables at the first start; on a loaded 2-core machine that takes a while.
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
# Beyond the measured time: servers ready, both registries seeded, removal of the seed.
LOAD_SLACK = 600.0
API = "/api/2.0/mlflow"

MLFLOW_ALIAS = "MLflow get-model-version-by-alias"
MLFLOW_GET = "MLflow get-model-version"
MLFLOW_CREATE = "MLflow create-model-version"
# Each modelplane call and the MLflow call it is held against, with the target ratio.
PAIRS = (
    ("ResolveModel(alias)", MLFLOW_ALIAS, READ_TARGET),
    ("GetModelVersion", MLFLOW_GET, READ_TARGET),
    ("CreateModelVersion", MLFLOW_CREATE, WRITE_TARGET),
)


def ensure_mlflow(venv: Path) -> Path:
    """The venv's `mlflow` executable, installing MLflow and psycopg2 (its Postgres driver) first if the venv
    lacks this version."""
    marker = venv / f".installed-mlflow-{MLFLOW_VERSION}"
    if not marker.exists():
        print(f"installing mlflow=={MLFLOW_VERSION} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT)
        subprocess.run(
            [
                *(str(venv / "bin" / "python"), "-m", "pip", "install", "-q"),
                *(f"mlflow=={MLFLOW_VERSION}", f"psycopg2-binary=={PSYCOPG2_VERSION}"),
            ],
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
        marker.touch()
    return venv / "bin" / "mlflow"


@contextlib.contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    """A new, empty database in the Postgres of `url`, dropped (connections and all) at the end."""
    name = f"mp_mlflow_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(url, name)
    finally:
        asyncio.run(_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlalchemy_url(url: str) -> str:
    """A libpq URL as SQLAlchemy takes it with psycopg2 (its default Postgres driver is now psycopg 3)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


@dataclass(frozen=True)
class MlflowServer:
    url: str
    pid: int


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's whole process group (the CLI, gunicorn's arbiter and workers), SIGKILL to
    what is left of it after STOP_TIMEOUT."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def mlflow_server(mlflow: Path, backend_url: str, server: str, log_file: IO[str]) -> Iterator[MlflowServer]:
    """`mlflow server` on a loopback port with `backend_url` as its store, until the block ends."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="modelplane-bench-mlflow-") as workdir:
        command = [
            *(str(mlflow), "server", "--backend-store-uri", sqlalchemy_url(backend_url)),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)),
            *("--no-serve-artifacts", "--default-artifact-root", str(Path(workdir) / "artifacts")),
        ]
        # gunicorn writes no access log by default; uvicorn does unless told not to.
        if server == "gunicorn":
            command += ["--gunicorn-opts", "--log-level warning"]
        else:
            command += ["--uvicorn-opts", "--no-access-log --log-level warning"]
        # No background job runner and no usage reporting: neither is part of the registry.
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        # A session of its own: Ctrl-C in the terminal reaches this process, which stops the whole group.
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(process, url)
            yield MlflowServer(url, process.pid)
        finally:
            _stop_group(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode} before serving")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer /health within {START_TIMEOUT:.0f} s")


def _tags(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in pairs.items()]


def version_payload(model: str, version: registry_pb2.ModelVersion) -> dict[str, Any]:
    """A create-model-version request carrying what modelplane's version holds: MLflow has no fields for
    capabilities, context, prices or labels, so they become tags."""
    fields = {
        "capabilities": ",".join(registry_pb2.Capability.Name(c) for c in version.capabilities),
        "context_window": str(version.context_window),
        "max_output_tokens": str(version.max_output_tokens),
        "pricing.currency_code": version.pricing.currency_code,
        "pricing.input_micros_per_million": str(version.pricing.input_micros_per_million),
        "pricing.output_micros_per_million": str(version.pricing.output_micros_per_million),
    }
    if version.pricing.HasField("cached_input_micros_per_million"):
        fields["pricing.cached_input_micros_per_million"] = str(
            version.pricing.cached_input_micros_per_million
        )
    if version.source_sha256:
        fields["source_sha256"] = version.source_sha256
    if version.state:
        fields["state"] = registry_pb2.ModelVersionState.Name(version.state)
    fields |= {f"label.{key}": value for key, value in version.labels.items()}
    return {
        "name": model,
        "source": version.source_uri,
        "description": version.description,
        "tags": _tags(fields),
    }


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"{API}/{path}", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"MLflow {path}: HTTP {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


async def mirror(
    stub: ModelRegistryServiceAsyncStub, http: httpx.AsyncClient, seeded: SeededRegistry
) -> None:
    """Writes into MLflow the models, versions and aliases seeded into modelplane, read back from it."""
    by_model: dict[str, list[str]] = {m: [] for m in seeded.models}
    for name in seeded.versions:
        by_model[name.split("/")[1]].append(name)
    for model_id, versions in by_model.items():
        got = await stub.GetModel(
            registry_pb2.GetModelRequest(name=f"models/{model_id}"), timeout=CALL_TIMEOUT
        )
        model = got.model
        tags = {"provider": model.provider, "display_name": model.display_name}
        tags |= {f"label.{key}": value for key, value in model.labels.items()}
        await _post(
            http,
            "registered-models/create",
            {"name": model_id, "description": model.description, "tags": _tags(tags)},
        )
        for name in versions:
            read = await stub.GetModelVersion(
                registry_pb2.GetModelVersionRequest(name=name), timeout=CALL_TIMEOUT
            )
            created = await _post(
                http, "model-versions/create", version_payload(model_id, read.model_version)
            )
            number = created["model_version"]["version"]
            if number != name.rsplit("/", 1)[1]:
                raise RuntimeError(f"MLflow numbered {name} as version {number}")
    for alias_name in seeded.aliases:
        answer = await stub.ResolveModel(
            registry_pb2.ResolveModelRequest(alias=alias_name), timeout=CALL_TIMEOUT
        )
        _, model_id, _, alias = alias_name.split("/")
        number = answer.model_version.name.rsplit("/", 1)[1]
        await _post(http, "registered-models/alias", {"name": model_id, "alias": alias, "version": number})


def mlflow_calls(http: LeanHttp, seeded: SeededRegistry) -> dict[str, Call]:
    """MLflow's REST calls matching modelplane's, over the same names in the same order; requests are built
    beforehand as the gRPC requests are, and every answer is decoded as a gRPC client decodes its reply."""
    alias_requests = itertools.cycle(
        http.get(f"{API}/registered-models/alias?name={quote(model)}&alias={quote(alias)}")
        for _, model, _, alias in (name.split("/") for name in seeded.aliases)
    )
    version_requests = itertools.cycle(
        http.get(f"{API}/model-versions/get?name={quote(model)}&version={number}")
        for _, model, _, number in (name.split("/") for name in seeded.versions)
    )
    chat_models = [m for m in seeded.models if "-chat-" in m]
    creates = itertools.cycle(
        http.post_json(
            f"{API}/model-versions/create", json.dumps(version_payload(m, new_version_template(m))).encode()
        )
        for m in chat_models
    )

    async def decoded(request: bytes) -> object:
        try:
            status, body = await http.send(request)
        except (OSError, HttpError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise CallFailed(type(exc).__name__, str(exc)) from exc
        if status != 200:
            raise CallFailed(f"HTTP_{status}", body[:200].decode(errors="replace"))
        return json.loads(body)

    return {
        MLFLOW_ALIAS: lambda: decoded(next(alias_requests)),
        MLFLOW_GET: lambda: decoded(next(version_requests)),
        MLFLOW_CREATE: lambda: decoded(next(creates)),
    }


async def _postgres_cpu(database_url: str) -> tuple[PostgresCpu, asyncpg.Connection[asyncpg.Record] | None]:
    """The CPU of the backends of that database, when its Postgres runs on this machine."""
    if not _is_local(database_url):
        return PostgresCpu(None), None
    conn = await asyncpg.connect(database_url)
    return PostgresCpu(conn), conn


async def run_load(
    served_target: str,
    served_pid: int,
    mlflow: MlflowServer,
    database_url: str,
    mlflow_database_url: str,
    args: argparse.Namespace,
) -> tuple[list[Cell], str]:
    """Seeds both registries, then measures reads and writes of both at CONCURRENCY in interleaved rounds."""
    async with (
        grpc.aio.insecure_channel(served_target, options=channel_options()) as channel,
        httpx.AsyncClient(base_url=mlflow.url, timeout=CALL_TIMEOUT) as http,
    ):
        await wait_serving(channel)
        stub = ModelRegistryServiceStub(channel)
        print(
            f"seeding {args.models} models x {args.versions} versions with aliases into both ...",
            file=sys.stderr,
        )
        seeded = await seed_registry(stub, models=args.models, versions_per_model=args.versions)
        connections: list[asyncpg.Connection[asyncpg.Record] | None] = []
        closing: list[LeanHttp] = []
        try:
            await mirror(stub, http, seeded)
            mine, mine_conn = await _postgres_cpu(database_url)
            theirs, theirs_conn = await _postgres_cpu(mlflow_database_url)
            connections += [mine_conn, theirs_conn]
            ours = registry_calls(stub, seeded)
            lean = LeanHttp(mlflow.url)
            closing.append(lean)
            other = mlflow_calls(lean, seeded)
            reads = {
                MLFLOW_ALIAS: Target(other[MLFLOW_ALIAS], mlflow.pid, theirs),
                "ResolveModel(alias)": Target(ours["ResolveModel(alias)"], served_pid, mine),
                MLFLOW_GET: Target(other[MLFLOW_GET], mlflow.pid, theirs),
                "GetModelVersion": Target(ours["GetModelVersion"], served_pid, mine),
            }
            writes = {
                MLFLOW_CREATE: Target(other[MLFLOW_CREATE], mlflow.pid, theirs),
                "CreateModelVersion": Target(ours["CreateModelVersion"], served_pid, mine),
            }
            print(f"  reads of both at concurrency {CONCURRENCY} ...", file=sys.stderr)
            cells = await measure_level(reads, CONCURRENCY, args.warmup, args.duration, args.rounds)
            print(f"  writes of both at concurrency {CONCURRENCY} ...", file=sys.stderr)
            cells += await measure_level(writes, CONCURRENCY, args.warmup, args.duration, args.rounds)
        finally:
            for conn in connections:
                if conn is not None:
                    await conn.close()
            for client in closing:
                await client.aclose()
            await remove_seed(stub, seeded)
    described = (
        f"{len(seeded.models)} models, {len(seeded.versions)} versions, {len(seeded.aliases)} aliases, "
        "the same names and contents"
    )
    return cells, described


def format_report(cells: Sequence[Cell], args: argparse.Namespace, database: str, seeded: str) -> str:
    """A line per call, then each modelplane call's QPS as a multiple of MLflow's, round by round."""
    server = (
        f"{WORKERS} gunicorn sync workers"
        if args.mlflow_server == "gunicorn"
        else f"{WORKERS} uvicorn workers"
    )
    lines = [
        f"modelplane beside MLflow {MLFLOW_VERSION}'s model registry (`mlflow server`, {server}, SQLAlchemy "
        "on psycopg2)",
        f"  registry in each: {seeded}",
        f"  CPU: {cpu_model()}, {os.cpu_count()} cores; each server and the load in processes of their own; "
        f"concurrency {CONCURRENCY}; MLflow through bench/http_client.py (keep-alive where the server "
        "allows it: gunicorn's sync workers close each connection), modelplane through one gRPC channel",
        f"  database: {database}; MLflow's in a throw-away database on the same Postgres",
        f"  {args.duration:g} s measured per call in {args.rounds} rounds taken in turn, after "
        f"{args.warmup:g} s of warm-up; modelplane at log level {args.server_log_level}",
        "  figures: median (min-max) over the rounds; CPU = user+system microseconds per call of the "
        "server (all its processes), of the Postgres backends of its database (pg) and of this load process "
        "(client)",
        "",
        f"{'call':<36}{'QPS':>7}{'p50 ms':>8}{'p99 ms':>8}  "
        f"{'server us':<19}{'pg us':<19}{'client us':<19}errors",
    ]
    by_name = {cell.rpc: cell for cell in cells}
    for cell in cells:
        errors = ",".join(f"{code}={n}" for code, n in sorted(cell.errors.items())) or "0"
        cpu = [
            _spread([value for r in cell.rounds if (value := getattr(r, key)) is not None], ".0f")
            for key in ("server_cpu_us", "postgres_cpu_us", "client_cpu_us")
        ]
        lines.append(
            f"{cell.rpc:<36}{cell.qps:>7.0f}{cell.p50_ms:>8.2f}{cell.p99_ms:>8.2f}  "
            f"{cpu[0]:<19}{cpu[1]:<19}{cpu[2]:<19}{errors}"
        )
    lines.append("")
    below: list[str] = []
    for ours, theirs, target in PAIRS:
        ratios = [
            mine.qps / other.qps
            for mine, other in zip(by_name[ours].rounds, by_name[theirs].rounds, strict=True)
            if other.qps
        ]
        lines.append(f"{ours} / {theirs}: {_spread(ratios, '.1f')} x (target {target:g} x)")
        if not ratios or statistics.median(ratios) < target:
            below.append(ours)
    lines.append("below target: " + (", ".join(below) if below else "none"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mlflow_compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--database-url", help="Postgres to run on (else a throw-away database, as bench/run.py)"
    )
    parser.add_argument("--embedded", action="store_true", help="use an embedded Postgres")
    parser.add_argument("--duration", type=_positive, default=5.0, help="seconds measured per call (5)")
    parser.add_argument("--warmup", type=_positive, default=0.5, help="seconds of warm-up per call (0.5)")
    parser.add_argument("--rounds", type=_count, default=5, help="slices each call's time is cut into (5)")
    parser.add_argument("--models", type=_count, default=50, help="models to seed into each registry (50)")
    parser.add_argument("--versions", type=_count, default=3, help="versions per seeded model (3)")
    parser.add_argument(
        "--server-log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="modelplane's",
    )
    parser.add_argument(
        "--mlflow-server",
        choices=("gunicorn", "uvicorn"),
        default="gunicorn",
        help="what serves MLflow's API: gunicorn's sync workers with its Flask app (default), or uvicorn "
        "with its FastAPI app (MLflow's own default)",
    )
    parser.add_argument(
        "--venv", type=Path, default=VENV, help=f"MLflow's virtualenv ({VENV.relative_to(REPO)})"
    )
    return parser


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    # Unwinds like Ctrl-C does, so the servers are stopped and the databases dropped.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        mlflow = ensure_mlflow(args.venv)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"mlflow_compare: installing MLflow into {args.venv} failed: {exc}", file=sys.stderr)
        return 1
    # Six calls, each warmed up once and measured for --duration over its rounds.
    measured = 6 * (args.duration + args.warmup)
    with tempfile.NamedTemporaryFile("w+", prefix="modelplane-bench-mlflow-", suffix=".log") as log_file:
        try:
            with (
                bench_database(args.database_url, embedded_only=args.embedded) as database,
                throwaway_database(database.url) as mlflow_database_url,
                modelplane_server(database.url, args.server_log_level, log_file) as served,
                mlflow_server(mlflow, mlflow_database_url, args.mlflow_server, log_file) as other,
            ):
                print(f"modelplane on {served.target}, MLflow on {other.url}", file=sys.stderr)
                cells, seeded = asyncio.run(
                    asyncio.wait_for(
                        run_load(served.target, served.pid, other, database.url, mlflow_database_url, args),
                        measured + LOAD_SLACK,
                    )
                )
        except (RuntimeError, TimeoutError, OSError, asyncpg.PostgresError, grpc.aio.AioRpcError) as exc:
            log_file.seek(0)
            tail = log_file.read().splitlines()[-30:]
            print(
                f"mlflow_compare: {exc!r}; the servers' last log lines:", *tail, sep="\n  ", file=sys.stderr
            )
            return 1
    print(format_report(cells, args, database.description, seeded), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
