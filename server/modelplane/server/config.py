"""The server's settings: one frozen value the CLI builds from flags and MODELPLANE_* variables, with the
defaults of every setting and the one rule for what may listen beyond loopback."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A setting, or a combination of settings, that the server refuses to run with."""


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS; with client_ca set, clients must present a certificate it signed (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def split_host(address: str) -> str:
    """The host of HOST:PORT, without the brackets of an IPv6 literal."""
    host, _, _ = address.rpartition(":")
    return host.strip("[]")


def is_loopback(address: str) -> bool:
    """True when HOST:PORT can be reached from this machine only."""
    host = split_host(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(address: str, *, what: str, risk: str, remedy: str, override: str) -> None:
    """The rule for anything that answers without a token: it listens on loopback, unless the operator
    passed `override` to accept `risk` in so many words. Raises ConfigError naming every way out."""
    if not is_loopback(address):
        raise ConfigError(
            f"refusing to listen on {address} {what}: anyone who can reach it could {risk}."
            f" Listen on a loopback address (127.0.0.1, [::1], localhost), {remedy}, or pass {override}"
            " to accept the risk"
        )


@dataclass(frozen=True)
class ServerConfig:
    """Everything build_server needs; defaults are what `make run` wants on a developer's machine, and the
    CLI takes its defaults from here. Building one that breaks the loopback rule raises ConfigError."""

    # host:port to listen on; port 0 picks a free port (tests).
    address: str = "127.0.0.1:50051"
    # Postgres to use; None starts the embedded Postgres with its data under data_dir.
    database_url: str | None = None
    # The server's own files: the embedded Postgres keeps its data in data_dir/pgdata.
    data_dir: Path = Path(".modelplane")
    # Create the database of database_url when it does not exist (else the log says how to create it).
    create_database: bool = False
    # Bearer-token auth; off is allowed only on loopback unless `insecure` says otherwise.
    auth: bool = True
    insecure: bool = False
    tls: TlsConfig | None = None
    # host:port of the Prometheus endpoint; None: no endpoint. It has no auth, so it listens beyond
    # loopback only with `metrics_insecure`.
    metrics_address: str | None = None
    metrics_insecure: bool = False
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace: float = 10.0
    # Seconds a client connection lives (gRPC adds up to 10% either way) before the server asks the client to
    # reconnect (GOAWAY), so that long-lived connections spread over replicas added since; 0 keeps them
    # forever. Calls in flight then get max_connection_age_grace seconds; streams open longer end UNAVAILABLE
    # (a watch resumes where it stopped).
    max_connection_age: float = 600.0
    max_connection_age_grace: float = 60.0
    # Lowest level of the log lines written (one of LOG_LEVELS).
    log_level: str = "INFO"
    # Seconds between progress messages on an idle watch stream.
    watch_progress_interval: float = 5.0
    # Seconds between database health probes (health turns NOT_SERVING when one fails).
    health_probe_interval: float = 1.0
    # Largest message accepted or sent, in bytes; model artifacts never travel in messages.
    max_message_bytes: int = 4 * 1024 * 1024
    # Log collection: days events are kept (whole daily partitions older are dropped; 0 keeps all),
    # days of partitions created ahead, and the batches one StreamLogEvents call queues before it
    # stops reading from the client (flow control).
    log_retention_days: int = 30
    log_partition_lead_days: int = 3
    log_stream_queue_batches: int = 8
    # Server processes on the one port (`serve --workers`); None: one per core this process may run on,
    # less one core's worth for an embedded Postgres (see modelplane.server.workers.default_worker_count).
    workers: int | None = None
    # Set by the worker supervisor in each worker: bind the port with SO_REUSEPORT, beside its siblings and
    # the supervisor's reservation, instead of refusing a port that is in use.
    shared_port: bool = False
    # host:port of the HTTP/JSON face of the RPCs (and of the web console); None: no HTTP. It takes the
    # same tokens and TLS as the gRPC address, and the same rule: with auth off, loopback only.
    http_address: str | None = None
    # Share of successful calls written to the access log, from 0 (failed calls only) to 1 (every call).
    # A failed call is always written.
    access_log_sample: float = 1.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be 1 or more, got {self.workers}")
        if self.max_connection_age < 0 or self.max_connection_age_grace < 0:
            raise ConfigError("the connection age and its grace are seconds, 0 or more")
        if not 0.0 <= self.access_log_sample <= 1.0:
            raise ConfigError(f"the access log sample must be between 0 and 1, got {self.access_log_sample}")
        if not self.auth and not self.insecure:
            require_loopback(
                self.address,
                what="with auth off",
                risk="call every RPC",
                remedy="turn auth on (drop --no-auth)",
                override="--insecure",
            )
        if self.http_address is not None and not self.auth and not self.insecure:
            require_loopback(
                self.http_address,
                what="for HTTP with auth off",
                risk="call every RPC",
                remedy="turn auth on (drop --no-auth)",
                override="--insecure",
            )
        if self.metrics_address is not None and not self.metrics_insecure:
            require_loopback(
                self.metrics_address,
                what="for the metrics endpoint, which has no auth",
                risk="read the call counts of every method",
                remedy="drop --metrics-address",
                override="--metrics-insecure",
            )

    @property
    def host(self) -> str:
        return split_host(self.address)


def default_of(setting: str) -> Any:
    """The default of one ServerConfig field: the CLI shows and uses it, so it is written once, above."""
    for field in dataclasses.fields(ServerConfig):
        if field.name == setting:
            return field.default
    raise KeyError(setting)
