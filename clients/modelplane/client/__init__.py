"""Typed async clients for the modelplane services: `connect()`, the service clients and their errors."""

from modelplane.client.channel import Connection, TlsOptions, connect
from modelplane.client.deployments import DeploymentClient
from modelplane.client.errors import FieldViolation, ModelplaneError, from_rpc_error
from modelplane.client.guardrails import CheckStreamSession, GuardrailClient
from modelplane.client.log_shipper import LogShipper, ShipperStats
from modelplane.client.logs import LogClient
from modelplane.client.registry import ModelRegistryClient
from modelplane.client.retry import DEFAULT_RETRY_POLICY, NO_RETRY, BackoffPolicy, RetryPolicy

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "NO_RETRY",
    "BackoffPolicy",
    "CheckStreamSession",
    "Connection",
    "DeploymentClient",
    "FieldViolation",
    "GuardrailClient",
    "LogClient",
    "LogShipper",
    "ModelRegistryClient",
    "ModelplaneError",
    "RetryPolicy",
    "ShipperStats",
    "TlsOptions",
    "connect",
    "from_rpc_error",
]
