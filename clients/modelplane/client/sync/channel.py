"""Connecting synchronously: one grpc (sync API) channel with the settings of modelplane.client.connect.

`connect()` returns a `Connection`, a context manager that owns the channel and hands out the synchronous
service clients (`connection.registry`, `.deployments`, `.guardrails`, `.logs`). Token, TLS, keepalive,
message sizes, default deadline and retry policy are those of the async `connect`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from modelplane.client.base import DEFAULT_TIMEOUT
from modelplane.client.channel import TlsOptions, plan_channel
from modelplane.client.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from modelplane.client.sync.clients import DeploymentClient, GuardrailClient, LogClient, ModelRegistryClient

__all__ = ["Connection", "connect"]


class Connection:
    """One sync channel to a modelplane server and the clients of its services; close it, or use `with`.
    The channel and the clients may be shared by threads."""

    def __init__(
        self,
        channel: grpc.Channel,
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
        # Made here rather than on first use, so that threads sharing the connection never race to make them.
        self.registry = ModelRegistryClient(channel, metadata=metadata, timeout=timeout, retry=retry)
        self.deployments = DeploymentClient(channel, metadata=metadata, timeout=timeout, retry=retry)
        self.guardrails = GuardrailClient(channel, metadata=metadata, timeout=timeout, retry=retry)
        self.logs = LogClient(channel, metadata=metadata, timeout=timeout, retry=retry)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Waits until the channel is connected; raises TimeoutError after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"the channel was not ready within {timeout} s") from None

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


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
    """Opens a sync connection to the server at `target` ("host:port"), with the arguments of
    modelplane.client.connect: `tls=True` uses gRPC's bundled roots; `timeout` is the default deadline of
    each unary call, retries included; `retry` governs retries on UNAVAILABLE (NO_RETRY turns them off);
    `options` adds gRPC channel arguments; `balance=True` spreads calls over the target's addresses."""
    plan = plan_channel(token=token, tls=tls, metadata=metadata, options=options, balance=balance)
    if plan.credentials is None:
        channel = grpc.insecure_channel(target, options=plan.options)
    else:
        channel = grpc.secure_channel(target, plan.credentials, options=plan.options)
    return Connection(channel, metadata=plan.metadata, timeout=timeout, retry=retry)
