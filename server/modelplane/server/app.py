"""The server process: `build_server` wires the parts together, `serve` runs them until a signal stops them.

Start-up never fails because Postgres is away: the server listens at once, answers UNAVAILABLE and
NOT_SERVING, and connects and migrates in the background; health turns SERVING when that is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

# grpcio-reflection's asyncio servicer, which enable_server_reflection picks for a grpc.aio server.
from grpc_reflection.v1alpha.reflection import aio as reflection_aio  # type: ignore[attr-defined]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from modelplane.server.auth.service import Authenticator
from modelplane.server.calls import CallParts, CallWrapper, MethodTable
from modelplane.server.config import ServerConfig, TlsConfig
from modelplane.server.deployments.driver import RolloutDriver
from modelplane.server.deployments.manager import DeploymentManager, LogGateReader
from modelplane.server.deployments.servicer import DeploymentServicer
from modelplane.server.guardrails.service import GuardrailService
from modelplane.server.guardrails.servicer import GuardrailServicer
from modelplane.server.health import HealthReporter
from modelplane.server.log_lines import configure_logging
from modelplane.server.logs.maintenance import LogMaintenance
from modelplane.server.logs.otlp_servicer import OtlpLogsServicer
from modelplane.server.logs.service import LogService, LogSettings
from modelplane.server.logs.servicer import LogServicer
from modelplane.server.metrics import LogIngestionMetrics, ServerMetrics
from modelplane.server.registry.service import RegistryService
from modelplane.server.registry.servicer import ModelRegistryServicer
from modelplane.server.store.migrations import migrate
from modelplane.server.store.pool import Database
from modelplane.server.store.provision import DatabaseMissing, create_database, redacted_url
from modelplane.server.store.watch import ChangeFeed
from modelplane.server.tasks import cancel_and_wait
from modelplane.server.tracing import Tracing, provider_from_environment
from modelplane.v1 import (
    deployments_pb2,
    deployments_pb2_grpc,
    guardrails_pb2,
    guardrails_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

    from modelplane.server.http.face import HttpFace

log = logging.getLogger(__name__)

# Server side of the keepalive settings the clients use: a client may ping every 10 s at the most
# (a faster one gets GOAWAY "too_many_pings"), and the server pings idle connections every 30 s so a
# dead peer behind a NAT or load balancer is noticed within 40 s.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_CLIENT_PING_INTERVAL_MS = 10_000

# Seconds between attempts to connect and migrate while Postgres is unreachable at start.
CONNECT_RETRY_INTERVAL = 1.0

# Seconds between looks for a database that does not exist: an operator creates it, then the server
# goes on by itself.
MISSING_DATABASE_RECHECK_INTERVAL = 5.0

# Seconds a worker waits at most to be ready before it takes calls (see ModelplaneServer.start).
ACCEPT_WAIT_LIMIT = 5.0

# Seconds between turning NOT_SERVING and ending open streams, so health watchers hear it first.
HEALTH_PROPAGATION_DELAY = 0.2

# Longest any other step of the stop sequence may take: a stop never hangs on one part.
STOP_STEP_LIMIT = 10.0

# Longest wait for open streams to end after they were told to, before server.stop(grace) takes over.
STREAM_END_WAIT = 2.0

# Seconds the steps after the drain (background jobs, the change feed, the pool) share, and the least any
# one of them gets: a stop ends within grace + this, whatever Postgres does.
STOP_AFTER_GRACE = 2.0
STOP_STEP_FLOOR = 0.1

# Every modelplane service this server runs: health reports each one, reflection lists each one.
MODELPLANE_SERVICES: tuple[str, ...] = (
    registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name,
    guardrails_pb2.DESCRIPTOR.services_by_name["GuardrailService"].full_name,
    deployments_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name,
    logs_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
OTLP_LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        *_connection_age(config),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        # With SO_REUSEPORT (gRPC's default) a second server on a taken port binds silently and steals
        # half the connections; without it, the second one fails to start, which is what an operator expects.
        # Workers (modelplane.server.workers) share their port on purpose, beside their parent's reservation,
        # which keeps that guarantee for them.
        ("grpc.so_reuseport", 1 if config.shared_port else 0),
    ]


def _connection_age(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC's connection age settings; none when connections live forever (max_connection_age 0)."""
    if not config.max_connection_age:
        return []
    return [
        ("grpc.max_connection_age_ms", max(1, round(config.max_connection_age * 1000))),
        ("grpc.max_connection_age_grace_ms", round(config.max_connection_age_grace * 1000)),
    ]


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """TLS from the configured files; mutual TLS when a client CA is given."""
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def local_target(host: str, port: int) -> str:
    """host:port a client on this machine dials to reach a server listening on `host`."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ListenError(RuntimeError):
    """An address the server cannot listen on; the message names it and why, in one line."""


def check_can_listen(address: str, what: str = "") -> None:
    """Binds HOST:PORT for a moment, the way gRPC will, and raises ListenError saying why it cannot.

    gRPC's own bind error says only "Failed to bind ...; set GRPC_VERBOSITY=debug" after writing a line of
    its own to stderr; this check runs first so that an operator reads one line naming the cause.
    """
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        return
    label = f"{what} {address}".strip()
    try:
        candidates = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {label}: {exc.strerror}") from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in candidates:
        with socket.socket(family, kind, proto) as probe:
            # gRPC sets SO_REUSEADDR too, so a port in TIME_WAIT counts as free, as it will for gRPC.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ListenError(f"{label} is already in use") from None
                failures.append(exc)
    if len(failures) == len(candidates):
        reason = failures[0].strerror or str(failures[0])
        raise ListenError(f"cannot listen on {label}: {reason}")


class ModelplaneServer:
    """One running modelplane server: gRPC, health, metrics, the pool and the change feed."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        database: Database,
        feed: ChangeFeed,
        health: HealthReporter,
        metrics: ServerMetrics,
        calls: CallWrapper,
        methods: MethodTable,
        grpc_server: grpc.aio.Server,
        guardrails: GuardrailService | None = None,
        rollout_driver: RolloutDriver | None = None,
        logs: LogService | None = None,
        log_maintenance: LogMaintenance | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.database = database
        self.feed = feed
        self.health = health
        self.metrics = metrics
        self.calls = calls
        self.methods = methods
        self.grpc_server = grpc_server
        self.guardrails = guardrails
        self.rollout_driver = rollout_driver
        self.logs = logs
        self.log_maintenance = log_maintenance
        self.tracing = tracing
        # False in every worker but the first: a database that is missing or away at start is said once, by
        # worker 1, while the others retry quietly (DEBUG lines).
        self.reports_start_problems = True
        self._accepting: asyncio.Task[None] | None = None
        # Set when connecting or migrating first fails: the database is away or missing, not just slow.
        self._start_problem = asyncio.Event()
        self._port: int | None = None
        self.http: HttpFace | None = None
        self._background: asyncio.Task[None] | None = None
        self._stopped = False

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        """Serves more methods (tests, future capabilities), in the call's scope like every other; only
        before start()."""
        self.methods.add_generic_rpc_handlers(handlers)

    @property
    def port(self) -> int:
        """The bound port (the real one when the address asked for port 0); only after start()."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def target(self) -> str:
        """host:port a client on this machine dials."""
        return local_target(self.config.host, self.port)

    async def start(self) -> None:
        """Binds and serves at once; connecting to Postgres and migrating continue in the background.

        A worker (config.shared_port) binds and listens at once too, but takes the connections the kernel
        gives it (they wait in its backlog meanwhile) only once its health is SERVING; or as soon as
        connecting or migrating fails, since calls then fail alike on every worker and health should say
        NOT_SERVING; or after ACCEPT_WAIT_LIMIT seconds. So a worker still starting never answers UNAVAILABLE
        to a call that the workers already serving would have answered.

        Raises ListenError, with a one-line reason, when the address or the metrics address is taken."""
        if self._port is not None:
            raise RuntimeError("the server is already started")
        address = self.config.address
        if not self.config.shared_port:
            check_can_listen(address)
        try:
            if self.config.tls is not None:
                port = self.grpc_server.add_secure_port(address, server_credentials(self.config.tls))
            else:
                port = self.grpc_server.add_insecure_port(address)
        except RuntimeError:
            # Taken between the check and now, or refused for a reason the check could not see.
            log.debug("gRPC could not bind %s", address, exc_info=True)
            port = 0
        if not port:
            raise ListenError(f"cannot listen on {address}")
        self._port = port
        if self.config.http_address is not None:
            # Imported here: starlette and uvicorn come with the `http` extra, needed only when asked for.
            from modelplane.server.http.face import HttpFace

            self.http = HttpFace.bind(self.config, self.grpc_server)
        if self.config.metrics_address is not None:
            check_can_listen(self.config.metrics_address, "the metrics address")
            self.metrics.start_endpoint(self.config.metrics_address)
        await self.health.set_serving(False)
        await self.health.set_alive()
        if not self.config.shared_port:
            await self._accept()
        else:
            self._accepting = asyncio.create_task(self._accept_when_ready(), name="modelplane-accept")
        await self.feed.start()
        self._background = asyncio.create_task(self._become_ready(), name="modelplane-readiness")
        log.debug("listening on %s", self.target)

    async def _accept(self) -> None:
        await self.grpc_server.start()
        if self.http is not None:
            await self.http.start(MODELPLANE_SERVICES)

    async def _accept_when_ready(self) -> None:
        ready = asyncio.ensure_future(self.health.wait_serving())
        failed = asyncio.ensure_future(self._start_problem.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, failed}, timeout=ACCEPT_WAIT_LIMIT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            failed.cancel()
        if not done:
            log.debug("not SERVING after %.0f s; taking calls anyway", ACCEPT_WAIT_LIMIT)
        await self._accept()

    async def _connect_and_migrate(self) -> None:
        if not self.database.is_open:
            try:
                await self.database.open()
            except DatabaseMissing as exc:
                if not self.config.create_database:
                    raise
                await create_database(exc.url)
                await self.database.open()
        async with self.database.connection() as conn:
            applied = await migrate(conn)
        if applied:
            log.info("migrated the database: %s", ", ".join(applied))

    async def _become_ready(self) -> None:
        # Each problem is logged once, when it first shows or changes; the retries between are DEBUG lines.
        problem: str | None = None
        say_error = log.error if self.reports_start_problems else log.debug
        say_warning = log.warning if self.reports_start_problems else log.debug
        while True:
            try:
                await self._connect_and_migrate()
                break
            except asyncio.CancelledError:
                raise
            except DatabaseMissing as exc:
                self._start_problem.set()
                seen, problem = problem, str(exc)
                if problem != seen:
                    say_error("%s; health stays NOT_SERVING and calls fail until it exists", exc)
                else:
                    log.debug("database still missing: %s", exc)
                delay = MISSING_DATABASE_RECHECK_INTERVAL
            except Exception as exc:
                # Postgres down, refusing or still starting: keep the process up, answer UNAVAILABLE
                # meanwhile, and try again.
                self._start_problem.set()
                seen, problem = problem, f"{type(exc).__name__}: {exc}"
                if problem != seen:
                    say_warning("database not ready (%s); retrying", problem)
                else:
                    log.debug("database still not ready (%s)", problem)
                delay = CONNECT_RETRY_INTERVAL
            await asyncio.sleep(delay)
        if problem is not None:
            log.info("database ready")
        # Log partitions are kept and timed rollout steps advance only once the schema is there.
        if self.log_maintenance is not None:
            self.log_maintenance.start()
        if self.rollout_driver is not None:
            self.rollout_driver.start()
        await self.health.run()

    async def wait_serving(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a plain bound for tests
        """Returns once health is SERVING; raises TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            await self.health.wait_serving()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful, ordered stop: NOT_SERVING, refuse new calls, end streams, drain, close storage.

        In-flight calls get `grace` seconds from the moment new calls are refused; the steps after the drain
        share STOP_AFTER_GRACE seconds whatever Postgres does, and the pool's connections are terminated
        when a graceful close does not finish in time (a hung Postgres never answers one)."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace if grace is None else grace
        loop = asyncio.get_running_loop()
        await cancel_and_wait(self._accepting)
        await cancel_and_wait(self._background)
        await self.health.shut_down()
        # Health watchers (load balancers, orchestrators) get the NOT_SERVING update written to them
        # before their own stream is ended below.
        await asyncio.sleep(HEALTH_PROPAGATION_DELAY)
        grace_ends = loop.time() + grace
        await self.calls.end_streams(wait=min(grace, STREAM_END_WAIT))
        drain = max(grace_ends - loop.time(), 0.0)
        # HTTP requests are gRPC calls of this server: both drain together, and the HTTP listener refuses
        # new connections as the gRPC server refuses new calls.
        steps = [_bounded("the gRPC server", self.grpc_server.stop(drain), drain + STOP_STEP_LIMIT)]
        if self.http is not None:
            steps.append(_bounded("the HTTP listener", self.http.stop(), drain + STOP_STEP_LIMIT))
        await asyncio.gather(*steps)
        stop_ends = loop.time() + STOP_AFTER_GRACE

        def left() -> float:
            return max(stop_ends - loop.time(), STOP_STEP_FLOOR)

        if self.rollout_driver is not None:
            await _bounded("the rollout driver", self.rollout_driver.stop(), left())
        if self.guardrails is not None:
            await _bounded("the guardrails monitor", self.guardrails.close(), left())
        if self.log_maintenance is not None:
            await _bounded("log maintenance", self.log_maintenance.stop(), left())
        await _bounded("the change feed", self.feed.stop(), left())
        await _bounded("the metrics endpoint", asyncio.to_thread(self.metrics.stop_endpoint), left())
        # Given its own bound, inside which it terminates what it could not close: never skipped.
        await self.database.close(timeout=left())
        if self.tracing is not None:
            # Spans still batched go out now; the exporter's own timeout bounds it.
            await _bounded("tracing", asyncio.to_thread(self.tracing.shutdown), left())
        log.info("stopped")


async def _bounded(what: str, step: Awaitable[None], seconds: float | None = None) -> None:
    """One step of the stop sequence; a step that hangs is logged and left, so a stop always ends."""
    try:
        await asyncio.wait_for(step, STOP_STEP_LIMIT if seconds is None else seconds)
    except TimeoutError:
        log.error("stopping %s took over %.1f s; going on without it", what, seconds or STOP_STEP_LIMIT)


def build_server(
    config: ServerConfig, *, parts: CallParts | None = None, tracing: Tracing | None = None
) -> ModelplaneServer:
    """Wires a server from `config`; does no I/O (start() binds, reads TLS files and connects). `parts`
    (default: every part, the access log sampled as configured) is for the call-overhead benchmark;
    `tracing` (default: none) traces every call and SQL statement."""
    if config.database_url is None:
        raise ValueError(
            "config.database_url is required: serve() starts the embedded Postgres and passes its URL"
        )
    # ServerConfig itself refuses auth off, or a metrics endpoint, beyond loopback unless told otherwise.
    database = Database(config.database_url)
    feed = ChangeFeed(config.database_url)
    registry = RegistryService(database, feed, progress_interval=config.watch_progress_interval)
    guardrails = GuardrailService(database, feed)
    health = HealthReporter(database, MODELPLANE_SERVICES, probe_interval=config.health_probe_interval)
    metrics = ServerMetrics()
    log_settings = LogSettings(
        retention_days=config.log_retention_days,
        partition_lead_days=config.log_partition_lead_days,
        stream_queue_batches=config.log_stream_queue_batches,
    )
    logs = LogService(database, log_settings, observer=LogIngestionMetrics(metrics.registry))
    deployments = DeploymentManager.build(
        database,
        feed,
        registry,
        LogGateReader(logs, guardrails),
        progress_interval=config.watch_progress_interval,
    )
    calls = CallWrapper(
        Authenticator(database, enabled=config.auth),
        metrics,
        text_checked_by_handler=LogServicer.TEXT_CHECKED_METHODS | OtlpLogsServicer.TEXT_CHECKED_METHODS,
        max_response_bytes=config.max_message_bytes,
        parts=parts
        or CallParts(access_log_sample=config.access_log_sample, access_log_trace=tracing is not None),
    )
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if tracing is not None:
        # The span holds the whole call (the handler it finds is the one wrapped in the call's scope), and
        # the call's scope runs with it current.
        interceptors.append(tracing.server_interceptor())
        tracing.instrument_storage()
    methods = MethodTable(calls)
    methods.add_service(
        _service(registry_pb2, "ModelRegistryService"),
        registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
        ModelRegistryServicer(registry),
    )
    methods.add_service(
        _service(guardrails_pb2, "GuardrailService"),
        guardrails_pb2_grpc.add_GuardrailServiceServicer_to_server,
        GuardrailServicer(guardrails),
    )
    methods.add_service(
        _service(deployments_pb2, "DeploymentService"),
        deployments_pb2_grpc.add_DeploymentServiceServicer_to_server,
        DeploymentServicer(deployments),
    )
    methods.add_service(
        _service(logs_pb2, "LogService"), logs_pb2_grpc.add_LogServiceServicer_to_server, LogServicer(logs)
    )
    methods.add_service(
        _service(logs_service_pb2, "LogsService"),
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server,
        OtlpLogsServicer(logs),
    )
    methods.add_service(
        _service(health_pb2, "Health"), health_pb2_grpc.add_HealthServicer_to_server, health.servicer
    )
    methods.add_service(
        _service(reflection_pb2, "ServerReflection"),
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
        reflection_aio.ReflectionServicer(  # type: ignore[attr-defined]
            [*MODELPLANE_SERVICES, OTLP_LOGS_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME]
        ),
    )
    grpc_server = grpc.aio.server(
        handlers=(methods,), interceptors=interceptors or None, options=server_options(config)
    )
    return ModelplaneServer(
        config,
        database=database,
        feed=feed,
        health=health,
        metrics=metrics,
        calls=calls,
        methods=methods,
        grpc_server=grpc_server,
        guardrails=guardrails,
        rollout_driver=RolloutDriver(deployments.rollouts),
        logs=logs,
        log_maintenance=LogMaintenance(database, log_settings),
        tracing=tracing,
    )


def _service(module: ModuleType, name: str) -> ServiceDescriptor:
    return module.DESCRIPTOR.services_by_name[name]  # type: ignore[no-any-return]


def log_banner(
    config: ServerConfig, target: str, database: str, workers: int = 1, http_target: str = ""
) -> None:
    """The lines an operator reads first: where the server listens, its database, whether auth is on."""
    security = "TLS" if config.tls is not None else "plaintext"
    processes = f", {workers} worker processes" if workers > 1 else ""
    log.info("modelplane serving on %s (%s%s)", target, security, processes)
    if config.http_address is not None:
        scheme = "https" if config.tls is not None else "http"
        log.info("HTTP/JSON on %s://%s (the RPCs under /v1/, /healthz, /openapi.json)", scheme, http_target)
    log.info("database: %s", database)
    if config.auth:
        log.info("auth is on: every RPC but health and reflection needs a bearer token")
    else:
        log.warning("auth is OFF: anyone who can reach %s may call every RPC", target)


# Allocations (net of frees) between young-generation collections. Log ingestion holds a few thousand
# rows of a batch alive at once; with Python's default of 700 it ran hundreds of collections a second,
# about 7% of the server's time at 60,000 events/s, while finding almost no cycles to free.
GC_YOUNG_THRESHOLD = 50_000


def _tune_garbage_collection() -> None:
    """Moves everything made at start-up out of the collector's sight (gc.freeze: it lives as long as the
    process and would be walked by every full collection) and collects the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def run_server(
    config: ServerConfig, database: str, stop_signals: Sequence[signal.Signals], *, worker: int | None = None
) -> None:
    """Runs one server process until one of `stop_signals`. A single server logs the operator's first lines;
    a `worker` leaves them to its parent and logs one line of its own. Traced as OTEL_* says (each worker
    sets its own exporter up: an exporter's thread does not survive the fork)."""
    provider = provider_from_environment()
    server = build_server(config, tracing=Tracing(provider) if provider is not None else None)
    server.reports_start_problems = worker in (None, 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in stop_signals:
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    _tune_garbage_collection()
    if worker is None:
        log_banner(config, server.target, database, http_target=server.http.target if server.http else "")
    else:
        log.info("serving on %s", server.target)
    try:
        await stop.wait()
        log.info("stopping: in-flight calls get %.0f s", config.shutdown_grace)
    finally:
        for signum in stop_signals:
            loop.remove_signal_handler(signum)
        await server.stop(config.shutdown_grace)


def serve(config: ServerConfig) -> None:
    """Runs the server until SIGTERM or SIGINT; starts the embedded Postgres when no database URL is given.

    With more than one worker (config.workers, else one per core) a parent process supervises that many
    server processes on the one port (modelplane.server.workers).

    Raises ListenError when an address is taken, EmbeddedPostgresError when the embedded Postgres cannot
    run, WorkersError when the workers cannot; all before anything else has started."""
    from modelplane.server.workers import supervise, worker_count

    configure_logging(config.log_level)
    check_can_listen(config.address)
    if config.http_address is not None:
        check_can_listen(config.http_address, "the HTTP address")
    if config.metrics_address is not None:
        check_can_listen(config.metrics_address, "the metrics address")
    workers = worker_count(config)
    if config.database_url is None:
        # Imported here: the embedded Postgres wheel is needed only by a server started without a URL.
        from modelplane.server.store.embedded import start_embedded

        embedded = start_embedded(config.data_dir)
        config = dataclasses.replace(config, database_url=embedded.url)
        database = f"embedded Postgres, data in {embedded.data_dir}"
    else:
        database = redacted_url(config.database_url)
    if workers > 1:
        supervise(config, workers, database)
    else:
        asyncio.run(run_server(config, database, (signal.SIGTERM, signal.SIGINT)))
