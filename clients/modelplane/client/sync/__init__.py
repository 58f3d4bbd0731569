"""Typed synchronous clients for the modelplane services, on grpc's sync API: `connect()` and the service
clients, with the methods, errors, retries, request ids and deadlines of the async clients in
modelplane.client (one table of methods serves both)."""

from modelplane.client.channel import TlsOptions
from modelplane.client.errors import FieldViolation, ModelplaneError
from modelplane.client.retry import DEFAULT_RETRY_POLICY, NO_RETRY, RetryPolicy
from modelplane.client.sync.channel import Connection, connect
from modelplane.client.sync.clients import DeploymentClient, GuardrailClient, LogClient, ModelRegistryClient

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "NO_RETRY",
    "Connection",
    "DeploymentClient",
    "FieldViolation",
    "GuardrailClient",
    "LogClient",
    "ModelRegistryClient",
    "ModelplaneError",
    "RetryPolicy",
    "TlsOptions",
    "connect",
]
