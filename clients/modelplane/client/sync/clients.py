"""The synchronous service clients: the methods of modelplane.client.methods' tables, blocking; CheckStream.

Each takes the same keyword arguments as its async twin in modelplane.client and returns what the awaited
call returns there; the all-pages Lists and the watches are plain iterators (a watch blocks between
messages and resumes on UNAVAILABLE as the async one does; close it, or break out of the loop, to cancel).
"""

from __future__ import annotations

from modelplane.client.guardrails import DEFAULT_STREAM_TIMEOUT
from modelplane.client.methods.deployments import DeploymentMethods
from modelplane.client.methods.guardrails import GuardrailMethods, check_stream_start
from modelplane.client.methods.logs import LogMethods
from modelplane.client.methods.registry import RegistryMethods
from modelplane.client.sync.base import SyncServiceClient
from modelplane.client.sync.check_stream import CheckStreamSession
from modelplane.v1 import (
    common_pb2,
    deployments_pb2_grpc,
    guardrails_pb2_grpc,
    logs_pb2_grpc,
    registry_pb2_grpc,
)

__all__ = ["DeploymentClient", "GuardrailClient", "LogClient", "ModelRegistryClient"]


class ModelRegistryClient(RegistryMethods, SyncServiceClient):
    """Synchronous client of ModelRegistryService, built from a sync `Connection` or a grpc.Channel."""

    _stub_class = registry_pb2_grpc.ModelRegistryServiceStub


class DeploymentClient(DeploymentMethods, SyncServiceClient):
    """Synchronous client of DeploymentService, built from a sync `Connection` or a grpc.Channel."""

    _stub_class = deployments_pb2_grpc.DeploymentServiceStub


class GuardrailClient(GuardrailMethods, SyncServiceClient):
    """Synchronous client of GuardrailService, built from a sync `Connection` or a grpc.Channel."""

    _stub_class = guardrails_pb2_grpc.GuardrailServiceStub

    def check_stream(
        self,
        *,
        policy: str,
        policy_revision: int = 0,
        links: common_pb2.EventLinks | None = None,
        request_id: str | None = None,
        timeout: float | None = DEFAULT_STREAM_TIMEOUT,
    ) -> CheckStreamSession:
        """A CheckStream to use as `with`; `timeout` (None: no deadline) bounds the whole stream. Its errors
        (PolicyNotFound, TextTooLarge, ...) are raised by `send`, `wait_blocked` or `finish`."""
        start = check_stream_start(
            policy=policy, policy_revision=policy_revision, links=links, request_id=request_id
        )
        return CheckStreamSession(self._stub, start, metadata=self.metadata, timeout=timeout)


class LogClient(LogMethods, SyncServiceClient):
    """Synchronous client of LogService, built from a sync `Connection` or a grpc.Channel (to ship events
    without blocking, use LogShipper)."""

    _stub_class = logs_pb2_grpc.LogServiceStub
