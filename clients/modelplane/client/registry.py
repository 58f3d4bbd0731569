"""The typed async client of the model registry (modelplane.v1.ModelRegistryService).

Methods take keyword arguments and return the protobuf messages of modelplane.v1.registry_pb2. Every call
has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to override it),
and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass.

Retries: a call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter, at least
as late as the server's RetryInfo asks, all within the call's one deadline. Reads are safe to repeat. So are
mutations: every mutating request carries a request id, and the server runs a request id at most once,
answering a repeat with the first response. When the caller gives no `request_id`, the client makes a
random UUID for the call and sends the same one on each retry; pass your own to make a retry of your own
(after a crash, say) safe as well.

The methods are those of `modelplane.client.methods.registry.RegistryMethods`, which the sync client
(modelplane.client.sync) shares; here they are coroutines and async iterators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from modelplane.client.base import ServiceClient
from modelplane.client.methods.registry import RegistryMethods
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import registry_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection

__all__ = ["ModelRegistryClient"]


class ModelRegistryClient(RegistryMethods, ServiceClient):
    """Client of ModelRegistryService, built from a `Connection` or from a grpc.aio channel.

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
        self._stub = registry_pb2_grpc.ModelRegistryServiceStub(self._channel)
