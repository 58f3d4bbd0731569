"""Connecting to a modelplane server: one grpc.aio channel with the server's keepalive and size limits.

`connect()` returns a `Connection`, an async context manager that owns the channel and hands out the typed
service clients (`connection.registry`, `connection.guardrails`, `connection.deployments`). The bearer
token travels as `authorization: Bearer <token>`: as call credentials over TLS, and as per-call metadata
on a plaintext channel, because gRPC refuses call credentials on an insecure channel. A token sent in
plaintext is readable on the wire: use TLS beyond loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc

from modelplane.client.base import DEFAULT_TIMEOUT
from modelplane.client.deployments import DeploymentClient
from modelplane.client.guardrails import GuardrailClient
from modelplane.client.logs import LogClient
from modelplane.client.registry import ModelRegistryClient
from modelplane.client.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from modelplane.client.service_config import balancing_channel_options

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MAX_MESSAGE_BYTES",
    "ChannelPlan",
    "Connection",
    "TlsOptions",
    "channel_options",
    "connect",
    "plan_channel",
]

# These match the server: it allows a keepalive ping every 30 s even with no call in flight, and it neither
# accepts nor sends messages above 4 MiB (model artifacts travel as URIs, never in messages).
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings: PEM bytes. No root certificates means gRPC's bundled roots; a certificate chain and a
    private key together make it mutual TLS; server_name overrides the name checked in the server's
    certificate (for a server reached through an address its certificate does not name)."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("certificate_chain and private_key go together (mutual TLS) or not at all")

    @classmethod
    def from_files(
        cls,
        *,
        root_certificates: str | Path | None = None,
        certificate_chain: str | Path | None = None,
        private_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> TlsOptions:
        """TLS settings read from PEM files."""

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(root_certificates), read(certificate_chain), read(private_key), server_name)


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The channel arguments every modelplane client uses; `extra` adds to or overrides them."""
    options: dict[str, Any] = {
        "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
        "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
        "grpc.keepalive_permit_without_calls": 1,
        # Without this, gRPC stops pinging an idle connection after two pings and the keepalive above
        # no longer detects a dead peer on a long-lived watch.
        "grpc.http2.max_pings_without_data": 0,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    }
    options.update(dict(extra))
    return list(options.items())


class Connection:
    """One channel to a modelplane server and the clients of its services; close it, or use `async with`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.channel = channel
        # Sent with every call (on a plaintext channel this includes the bearer token).
        self.metadata: tuple[tuple[str, str], ...] = tuple(metadata)
        self.timeout = timeout
        self.retry = retry
        self._registry: ModelRegistryClient | None = None
        self._guardrails: GuardrailClient | None = None
        self._deployments: DeploymentClient | None = None
        self._logs: LogClient | None = None

    @property
    def registry(self) -> ModelRegistryClient:
        """The model registry's client on this connection."""
        if self._registry is None:
            self._registry = ModelRegistryClient(
                self.channel, metadata=self.metadata, timeout=self.timeout, retry=self.retry
            )
        return self._registry

    @property
    def guardrails(self) -> GuardrailClient:
        """The guardrails monitor's client on this connection."""
        if self._guardrails is None:
            self._guardrails = GuardrailClient(
                self.channel, metadata=self.metadata, timeout=self.timeout, retry=self.retry
            )
        return self._guardrails

    @property
    def deployments(self) -> DeploymentClient:
        """The deployment manager's client on this connection."""
        if self._deployments is None:
            self._deployments = DeploymentClient(
                self.channel, metadata=self.metadata, timeout=self.timeout, retry=self.retry
            )
        return self._deployments

    @property
    def logs(self) -> LogClient:
        """Log collection's client on this connection (to ship events, use LogShipper)."""
        if self._logs is None:
            self._logs = LogClient(
                self.channel, metadata=self.metadata, timeout=self.timeout, retry=self.retry
            )
        return self._logs

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Waits until the channel is connected; raises TimeoutError after `timeout` seconds."""
        await asyncio.wait_for(self.channel.channel_ready(), timeout)

    async def close(self, grace: float | None = None) -> None:
        """Closes the channel; calls in flight are cancelled after `grace` seconds (at once with None)."""
        await self.channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def connect(
    target: str,
    *,
    token: str | None = None,
    tls: bool | TlsOptions = False,
    timeout: float = DEFAULT_TIMEOUT,
    retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    metadata: Sequence[tuple[str, str]] = (),
    options: Sequence[tuple[str, Any]] = (),
    balance: bool = False,
) -> Connection:
    """Opens a connection to the server at `target` ("host:port"). `tls=True` uses gRPC's bundled roots;
    `timeout` is the default deadline of each unary call, retries included; `retry` governs retries on
    UNAVAILABLE (NO_RETRY turns them off); `options` adds gRPC channel arguments. `balance=True` spreads
    calls over every address of `target` ("ipv4:10.0.0.2:50051,10.0.0.3:50051", or a DNS name with many
    records, "dns:///replicas.example:50051") with round_robin, healthy replicas only."""
    plan = plan_channel(token=token, tls=tls, metadata=metadata, options=options, balance=balance)
    if plan.credentials is None:
        channel = grpc.aio.insecure_channel(target, options=plan.options)
    else:
        channel = grpc.aio.secure_channel(target, plan.credentials, options=plan.options)
    return Connection(channel, metadata=plan.metadata, timeout=timeout, retry=retry)


@dataclass(frozen=True)
class ChannelPlan:
    """How a channel is opened, the same for grpc.aio and grpc's sync API: its credentials (None: plaintext),
    its channel arguments and the metadata sent with every call."""

    credentials: grpc.ChannelCredentials | None
    options: list[tuple[str, Any]]
    metadata: list[tuple[str, str]]


def plan_channel(
    *,
    token: str | None,
    tls: bool | TlsOptions,
    metadata: Sequence[tuple[str, str]],
    options: Sequence[tuple[str, Any]],
    balance: bool = False,
) -> ChannelPlan:
    """The channel settings `connect` uses (see there): the token as call credentials over TLS, as call
    metadata in plaintext."""
    call_metadata = list(metadata)
    channel_args = channel_options([*(balancing_channel_options() if balance else ()), *options])
    if tls is False:
        if token is not None:
            call_metadata.append(("authorization", f"Bearer {token}"))
        return ChannelPlan(None, channel_args, call_metadata)
    settings = TlsOptions() if tls is True else tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.root_certificates,
        private_key=settings.private_key,
        certificate_chain=settings.certificate_chain,
    )
    if token is not None:
        # access_token_call_credentials sends exactly "authorization: Bearer <token>".
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    if settings.server_name is not None:
        channel_args.append(("grpc.ssl_target_name_override", settings.server_name))
    return ChannelPlan(credentials, channel_args, call_metadata)
