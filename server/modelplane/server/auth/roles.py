"""Which roles may call which RPC: one table from full gRPC method name to the roles allowed.

The table is built from the generated service descriptors, one rule per method, so an RPC added to a
.proto without a rule here has no entry: it is denied to everyone, and tests/unit/test_roles.py fails.
Adding a service is one rules mapping and one line in `_SERVICES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from google.protobuf.descriptor import ServiceDescriptor

from modelplane.server.errors import InvalidArgument
from modelplane.v1 import deployments_pb2, guardrails_pb2, logs_pb2, registry_pb2


class Role(StrEnum):
    """A token's role; the value is the stored form (api_tokens.role)."""

    # Every RPC; whoever owns the installation.
    ADMIN = "admin"
    # Creates, changes and deletes models, versions and aliases; people and pipelines releasing models.
    OPERATOR = "operator"
    # A consumer service: reads and resolves models, ships logs, checks guardrails.
    SERVICE = "service"
    # Reads only; dashboards and people looking around.
    READER = "reader"


EVERYONE: frozenset[Role] = frozenset(Role)
WRITERS: frozenset[Role] = frozenset({Role.ADMIN, Role.OPERATOR})
NOBODY: frozenset[Role] = frozenset()

# Prefixes of the methods that need no token: load balancers probe health, and grpcurl needs reflection
# before it can send the authorization metadata of a real call.
OPEN_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)

REGISTRY_RULES: Mapping[str, frozenset[Role]] = {
    "GetModel": EVERYONE,
    "ListModels": EVERYONE,
    "GetModelVersion": EVERYONE,
    "ListModelVersions": EVERYONE,
    "GetAlias": EVERYONE,
    "ListAliases": EVERYONE,
    "ListAliasHistory": EVERYONE,
    "ResolveModel": EVERYONE,
    "WatchModels": EVERYONE,
    "CreateModel": WRITERS,
    "UpdateModel": WRITERS,
    "CreateModelVersion": WRITERS,
    "UpdateModelVersion": WRITERS,
    "SetAlias": WRITERS,
    "DeleteAlias": WRITERS,
    "DeleteModel": WRITERS,
    "DeleteModelVersion": WRITERS,
}

# What consumer services call (checks, log shipping, routes and endpoint health), besides the writers.
WRITERS_AND_SERVICES: frozenset[Role] = frozenset({Role.ADMIN, Role.OPERATOR, Role.SERVICE})
GUARDRAIL_RULES: Mapping[str, frozenset[Role]] = {
    "GetPolicy": EVERYONE,
    "ListPolicies": EVERYONE,
    "ListPolicyRevisions": EVERYONE,
    "ListViolations": EVERYONE,
    "AggregateViolations": EVERYONE,
    "GetShadowReport": EVERYONE,
    "CreatePolicy": WRITERS,
    "UpdatePolicy": WRITERS,
    "DeletePolicy": WRITERS,
    "SetShadowRevision": WRITERS,
    "ClearShadowRevision": WRITERS,
    "PromoteShadowRevision": WRITERS,
    "CheckContent": WRITERS_AND_SERVICES,
    "CheckStream": WRITERS_AND_SERVICES,
}

# Services ship logs; everyone may read them.
LOG_RULES: Mapping[str, frozenset[Role]] = {
    "WriteLogEvents": WRITERS_AND_SERVICES,
    "StreamLogEvents": WRITERS_AND_SERVICES,
    "QueryLogEvents": EVERYONE,
    "TailLogEvents": EVERYONE,
    "AggregateLogEvents": EVERYONE,
    "GetIngestionStats": EVERYONE,
}

# Deployments: people and pipelines change deployments and drive rollouts; consumer services (the
# ServiceCoordinator) report endpoint health and resolve routes; everyone reads and watches.
DEPLOYMENT_RULES: Mapping[str, frozenset[Role]] = {
    "GetDeployment": EVERYONE,
    "ListDeployments": EVERYONE,
    "GetRollout": EVERYONE,
    "ListRollouts": EVERYONE,
    "PlanRollout": EVERYONE,
    "ListDeploymentHistory": EVERYONE,
    "WatchDeployment": EVERYONE,
    "CreateDeployment": WRITERS,
    "UpdateDeployment": WRITERS,
    "DeleteDeployment": WRITERS,
    "StartRollout": WRITERS,
    "PromoteRollout": WRITERS,
    "PauseRollout": WRITERS,
    "ResumeRollout": WRITERS,
    "RollbackRollout": WRITERS,
    "AbortRollout": WRITERS,
    "ReportEndpointHealth": WRITERS_AND_SERVICES,
    "ResolveRoute": WRITERS_AND_SERVICES,
}

# Every service the server runs with its rules by short method name.
_SERVICES: tuple[tuple[ServiceDescriptor, Mapping[str, frozenset[Role]]], ...] = (
    (registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"], REGISTRY_RULES),
    (guardrails_pb2.DESCRIPTOR.services_by_name["GuardrailService"], GUARDRAIL_RULES),
    (deployments_pb2.DESCRIPTOR.services_by_name["DeploymentService"], DEPLOYMENT_RULES),
    (logs_pb2.DESCRIPTOR.services_by_name["LogService"], LOG_RULES),
)

# OTLP's logs service, which the server runs on the same port: services export their logs as they ship
# modelplane events. By name, since its generated code comes with the server extra and the CLI of the base
# install reads this table too (tests/unit/test_roles.py holds the name to the descriptor's).
OTLP_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
OTLP_RULES: Mapping[str, frozenset[Role]] = {OTLP_EXPORT_METHOD: WRITERS_AND_SERVICES}


def method_path(service: ServiceDescriptor, method: str) -> str:
    """The full gRPC method name as the server sees it: "/modelplane.v1.ModelRegistryService/GetModel"."""
    return f"/{service.full_name}/{method}"


def _build_table(
    services: tuple[tuple[ServiceDescriptor, Mapping[str, frozenset[Role]]], ...],
) -> dict[str, frozenset[Role]]:
    table: dict[str, frozenset[Role]] = {}
    for service, rules in services:
        for method in service.methods:
            # A method without a rule stays out of the table, which denies it; the unit test names it.
            if method.name in rules:
                table[method_path(service, method.name)] = rules[method.name]
    return table


METHOD_ROLES: Mapping[str, frozenset[Role]] = {**_build_table(_SERVICES), **OTLP_RULES}


def stale_rules() -> list[str]:
    """Rules naming a method its service does not have (a renamed or removed RPC); should be empty."""
    stale: list[str] = []
    for service, rules in _SERVICES:
        names = {method.name for method in service.methods}
        stale.extend(method_path(service, name) for name in rules if name not in names)
    return sorted(stale)


def is_open(method: str) -> bool:
    """True for the methods anyone may call without a token (health and reflection)."""
    return method.startswith(OPEN_METHOD_PREFIXES)


def allowed_roles(method: str) -> frozenset[Role]:
    """The roles that may call `method`; empty for an unknown method, so it is denied."""
    return METHOD_ROLES.get(method, NOBODY)


def is_allowed(method: str, role: str) -> bool:
    return is_open(method) or role in allowed_roles(method)


def parse_role(value: str) -> Role:
    """The Role named by `value`; InvalidArgument on field "role" otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        choices = ", ".join(role.value for role in Role)
        raise InvalidArgument.field("role", f"unknown role {value!r}; use one of {choices}") from None
