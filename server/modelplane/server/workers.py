"""`modelplane serve --workers N`: a parent process that holds the port and supervises N server processes.

Each worker is a whole server (its own event loop, pools, caches and change feed) listening on the same
port with SO_REUSEPORT, so the kernel spreads new connections over the workers. A worker keeps in memory
only what a replica keeps, and that is correct across replicas: read caches are emptied by the change
feed's notifications, watches read the change table, migrations run under an advisory lock, the rollout
driver advances a step under row locks and log maintenance under an advisory try-lock, compiled policies
are keyed by their revision. So it is correct across workers.

The parent starts no gRPC server of its own. It checks the port as a single server does (so a taken port
is one line), then holds a reservation socket with SO_REUSEPORT for its lifetime: the workers bind beside
it, and another server's check (which binds without SO_REUSEPORT) fails even while no worker is up. The
workers are spawned, not forked (gRPC's threads do not survive a fork); a worker that dies is logged and
started again after a backoff; SIGTERM or SIGINT stops them all within the shutdown grace. With a metrics
address, the parent serves one endpoint that adds up every worker's metrics (prometheus_client's
multiprocess mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

from modelplane.server.config import ServerConfig

log = logging.getLogger(__name__)

# prometheus_client reads this variable when it is imported: set before a worker starts, it makes the
# worker's metrics live in files there, which the parent's endpoint adds up.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Connections one server process may hold: its call pool and bulk pool at their largest, plus the change
# feed's LISTEN connection.
FEED_CONNECTIONS = 1

# Seconds before a dead worker is started again: doubled after each death in a row, up to the most, and
# back to the least once a worker has lived for HEALTHY_LIFETIME seconds.
RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 30.0
HEALTHY_LIFETIME = 30.0

# Seconds a worker gets beyond the shutdown grace to finish its stop sequence before it is killed.
STOP_MARGIN = 15.0

# A worker that cannot start for a reason that will not go away (its address, an unreadable file) exits
# with this code; the parent then stops them all instead of restarting it forever.
EXIT_CANNOT_START = 3

# prctl(2): have the kernel send a signal to this process when its parent dies.
_PR_SET_PDEATHSIG = 1


class WorkersError(RuntimeError):
    """The workers cannot run; the message says why in one line."""


def default_worker_count(*, embedded_postgres: bool) -> int:
    """One worker per core this process may run on; with the embedded Postgres on the same machine, one
    core's worth is left to it (a control plane's calls are mostly Postgres round trips). At least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1 if embedded_postgres else cores)


def connections_per_worker() -> int:
    """Postgres connections one worker may hold at once."""
    from modelplane.server.store.pool import PoolSettings

    settings = PoolSettings()
    return settings.max_size + settings.bulk_max_size + FEED_CONNECTIONS


def check_connection_budget(database_url: str, workers: int) -> None:
    """Raises WorkersError when `workers` workers could open more connections than Postgres allows.

    A database that cannot be reached now is not an error: the workers wait for it, and say so, as one
    server does."""
    from modelplane.server.store.capacity import connection_limit

    try:
        limit = asyncio.run(connection_limit(database_url))
    except Exception as exc:
        log.debug("could not check Postgres's connection limit (%s: %s)", type(exc).__name__, exc)
        return
    each = connections_per_worker()
    if workers * each > limit:
        raise WorkersError(
            f"{workers} workers may open {workers * each} Postgres connections ({each} each), over the"
            f" {limit} that Postgres allows (max_connections less its reserved slots): pass --workers"
            f" {max(1, limit // each)} or fewer, or raise max_connections"
        )


@dataclass
class PortReservation:
    """Sockets bound to the server's port with SO_REUSEPORT and never listening: the workers bind beside
    them, and a server that binds without SO_REUSEPORT finds the port taken."""

    address: str
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def reserve_port(address: str) -> PortReservation:
    """Reserves HOST:PORT (port 0: a free port, the same on every address HOST resolves to); the
    reservation's `address` names the port bound. Raises WorkersError when it cannot."""
    host, _, port_text = address.rpartition(":")
    bare_host = host.strip("[]") or None
    port = int(port_text)
    reservation = PortReservation(address)
    candidates = socket.getaddrinfo(bare_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, sockaddr in candidates:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
        except OSError as exc:
            sock.close()
            log.debug("could not reserve %s on %s: %s", address, sockaddr[0], exc)
            continue
        reservation.sockets.append(sock)
        port = sock.getsockname()[1]
    if not reservation.sockets:
        raise WorkersError(f"cannot reserve {address} for the workers")
    reservation.address = f"{host}:{port}"
    return reservation


@dataclass
class _Slot:
    """One worker's place: its process while it runs, and when it may start again after dying."""

    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    backoff: float = RESTART_BACKOFF_MIN
    restart_at: float | None = None


class WorkerSupervisor:
    """Starts the workers, starts again each one that dies, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, config: ServerConfig, workers: int, database: str) -> None:
        # Every worker serves the same address, the one the reservation holds; the parent serves metrics.
        self._worker_config = dataclasses.replace(config, workers=1, shared_port=True, metrics_address=None)
        self._config = config
        self._database = database
        self._slots = [_Slot(index) for index in range(1, workers + 1)]
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False

    def run(self) -> None:
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in stop_signals}
        try:
            for slot in self._slots:
                self._start(slot)
            while not self._stopping:
                self._watch_once()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=run_worker,
            args=(self._worker_config, slot.index, self._database, os.getpid()),
            name=f"modelplane-worker-{slot.index}",
        )
        # Ctrl-C reaches every process of the terminal's group; a worker leaves it to the parent, which
        # stops the workers with SIGTERM. An ignored signal stays ignored across the spawn's exec, so a
        # worker still starting up is not interrupted half-imported.
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, handler)
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _watch_once(self) -> None:
        now = time.monotonic()
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        timeout = max(0.0, min([*due, now + 0.5]) - now)
        sentinels = [slot.process.sentinel for slot in self._slots if slot.process is not None]
        multiprocessing.connection.wait(sentinels, timeout=timeout)
        if self._stopping:
            return
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is not None and not process.is_alive():
                self._buried(slot, process, now)
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    def _buried(self, slot: _Slot, process: BaseProcess, now: float) -> None:
        process.join()
        slot.process = None
        _forget_metrics_of(process.pid)
        if process.exitcode == EXIT_CANNOT_START:
            self._stopping = True
            raise WorkersError(f"worker {slot.index} could not start (its log line above says why)")
        if now - slot.started >= HEALTHY_LIFETIME:
            slot.backoff = RESTART_BACKOFF_MIN
        log.error(
            "worker %d (pid %s) %s; starting it again in %.1f s",
            slot.index,
            process.pid,
            _exit_reason(process.exitcode),
            slot.backoff,
        )
        slot.restart_at = now + slot.backoff
        slot.backoff = min(slot.backoff * 2, RESTART_BACKOFF_MAX)

    def _stop_all(self) -> None:
        running = [slot.process for slot in self._slots if slot.process is not None]
        running = [process for process in running if process.is_alive()]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + self._config.shutdown_grace + STOP_MARGIN
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
        log.info("all workers stopped")


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _forget_metrics_of(pid: int | None) -> None:
    """Drops a dead worker's live gauges from the merged metrics; its counters keep counting in the sum."""
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory and pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _metrics_directory() -> Iterator[str]:
    """A fresh directory for the workers' metric files, named to them by the environment they inherit."""
    directory = tempfile.mkdtemp(prefix="modelplane-metrics-")
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def supervise(config: ServerConfig, workers: int, database: str) -> None:
    """Runs `workers` workers on config.address until SIGTERM or SIGINT. The caller checked the addresses
    and started the embedded Postgres; config.database_url is set."""
    from modelplane.server.app import local_target, log_banner
    from modelplane.server.metrics import MetricsEndpoint, merged_registry

    assert config.database_url is not None
    check_connection_budget(config.database_url, workers)
    _check_readable(config)
    reservation = reserve_port(config.address)
    # The HTTP port is shared by the workers the same way: each one serves HTTP for its own gRPC server.
    http_reservation = reserve_port(config.http_address) if config.http_address is not None else None
    endpoint: MetricsEndpoint | None = None
    try:
        with _metrics_directory() as directory:
            if config.metrics_address is not None:
                endpoint = MetricsEndpoint(merged_registry(directory))
                endpoint.start(config.metrics_address)
            config = dataclasses.replace(config, address=reservation.address)
            http_target = ""
            if http_reservation is not None:
                config = dataclasses.replace(config, http_address=http_reservation.address)
                http_host, _, http_port = http_reservation.address.rpartition(":")
                http_target = local_target(http_host.strip("[]"), int(http_port))
            port = int(reservation.address.rpartition(":")[2])
            log_banner(config, local_target(config.host, port), database, workers, http_target)
            WorkerSupervisor(config, workers, database).run()
    finally:
        if endpoint is not None:
            endpoint.stop()
        if http_reservation is not None:
            http_reservation.close()
        reservation.close()


def _check_readable(config: ServerConfig) -> None:
    """Reads the TLS files once here, so that an unreadable one is one line from the parent (OSError)
    rather than every worker failing on it."""
    if config.tls is not None:
        for path in (config.tls.cert_file, config.tls.key_file, config.tls.client_ca_file):
            if path is not None:
                path.read_bytes()


def _die_with_parent() -> None:
    """Linux: the kernel ends this worker when the parent dies (even by SIGKILL), so none is orphaned."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_worker(config: ServerConfig, index: int, database: str, parent: int) -> None:
    """The body of one worker process: a whole server on the shared port until SIGTERM (SIGINT is the
    parent's to act on), or until its `parent` (the supervisor's pid) dies."""
    from modelplane.server.app import ListenError, run_server
    from modelplane.server.log_lines import configure_logging

    _die_with_parent()
    if os.getppid() != parent:
        # The parent died before the kernel was told to end this worker with it.
        return
    configure_logging(config.log_level, tag=f"worker {index}")
    try:
        asyncio.run(run_server(config, database, (signal.SIGTERM,), worker=index))
    except (ListenError, OSError) as exc:
        log.error("worker %d cannot start: %s", index, exc)
        sys.exit(EXIT_CANNOT_START)


def worker_count(config: ServerConfig) -> int:
    """The workers to run: as configured, else the default for this machine."""
    if config.workers is not None:
        return config.workers
    return default_worker_count(embedded_postgres=config.database_url is None)
