"""The server's settings: one frozen value the CLI builds from flags and MODELPLANE_* variables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS; with client_ca set, clients must present a certificate it signed (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything build_server needs; defaults are what `make run` wants on a developer's machine."""

    # host:port to listen on; port 0 picks a free port (tests).
    address: str = "127.0.0.1:50051"
    # Postgres to use; None starts the embedded Postgres with its data under data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".modelplane")
    # Bearer-token auth; off is allowed only on loopback unless `insecure` says otherwise.
    auth: bool = True
    insecure: bool = False
    tls: TlsConfig | None = None
    # host:port of the Prometheus endpoint; None: no endpoint.
    metrics_address: str | None = None
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace: float = 10.0
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

    @property
    def host(self) -> str:
        host, _, _ = self.address.rpartition(":")
        return host.strip("[]")

    @property
    def is_loopback(self) -> bool:
        host = self.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
