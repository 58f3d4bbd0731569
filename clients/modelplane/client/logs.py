"""The typed async client of log collection (modelplane.v1.LogService): writing, querying, tailing and
aggregating log events, and reading the per-client ingestion counters.

Methods take keyword arguments and return the protobuf messages of modelplane.v1.logs_pb2. Every unary call
has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to override it),
and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass.

Retries: a unary call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter
within its one deadline, as in the registry client. WriteLogEvents is retried too: the server stores an
event once per event id, so a batch written twice is stored once.

Services ship their events with `modelplane.client.log_shipper.LogShipper`, which streams batches and never
blocks; `write_log_events` is the plain unary way, for tools and tests. TailLogEvents is not retried: open
it with `async for event in client.tail_log_events(filter=...)`; it ends only when the caller stops or
the server goes away (then the error is raised, and a new tail starts from that moment).

The methods are those of `modelplane.client.methods.logs.LogMethods`, which the sync client
(modelplane.client.sync) shares; here they are coroutines and async iterators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from modelplane.client.base import ServiceClient
from modelplane.client.methods.logs import LogMethods
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import logs_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection

__all__ = ["LogClient"]


class LogClient(LogMethods, ServiceClient):
    """Client of LogService, built from a `Connection` or from a grpc.aio channel.

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
        self._stub = logs_pb2_grpc.LogServiceStub(self._channel)
