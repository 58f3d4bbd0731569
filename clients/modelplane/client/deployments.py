"""The typed async client of the deployment manager (modelplane.v1.DeploymentService).

Methods take keyword arguments and return the protobuf messages of modelplane.v1.deployments_pb2. Every
unary call has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to
override it), and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass
(DeploymentNotFound, RolloutInProgress, IllegalTransition, NoReadyEndpoint, ...).

Retries: a unary call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter
within its one deadline, as in the registry client. Reads are safe to repeat; every mutation (rollout
actions and health reports included) carries a request id, a random UUID unless the caller gives one, sent
unchanged on each retry, so the server runs it once. PlanRollout is a dry run and changes nothing.

`watch_deployment` streams a deployment's state: first the current one, then every change; with `resume`,
a stream broken by UNAVAILABLE is reopened where it stopped (modelplane.client.resumable_stream).

The methods are those of `modelplane.client.methods.deployments.DeploymentMethods`, which the sync client
(modelplane.client.sync) shares; here they are coroutines and async iterators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from modelplane.client.base import ServiceClient
from modelplane.client.methods.deployments import DeploymentMethods
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import deployments_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection

__all__ = ["DeploymentClient"]


class DeploymentClient(DeploymentMethods, ServiceClient):
    """Client of DeploymentService, built from a `Connection` or from a grpc.aio channel.

    Used as `async with`, it closes what it was built from (the connection or the channel) on exit; do not
    do that with a channel other code still uses.
    """

    def __init__(
        self,
        source: Connection | grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(source, metadata=metadata, timeout=timeout, retry=retry)
        self._stub = deployments_pb2_grpc.DeploymentServiceStub(self._channel)
