"""The method-to-roles table: every RPC of every generated service has a rule; anything else is denied."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from google.protobuf.descriptor import ServiceDescriptor
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

import modelplane.v1
from modelplane.server.auth.roles import (
    EVERYONE,
    METHOD_ROLES,
    WRITERS,
    Role,
    allowed_roles,
    is_allowed,
    is_open,
    method_path,
    parse_role,
    stale_rules,
)
from modelplane.server.errors import InvalidArgument

REGISTRY = "/modelplane.v1.ModelRegistryService/"
OTLP_LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]


def _generated_services() -> list[ServiceDescriptor]:
    """Every service in every generated *_pb2 module, so a new .proto's services are found too, and OTLP's
    logs service, which the server runs beside them."""
    services: list[ServiceDescriptor] = [OTLP_LOGS_SERVICE]
    for module_info in pkgutil.iter_modules(modelplane.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"modelplane.v1.{module_info.name}")
        services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def test_every_generated_rpc_has_a_rule() -> None:
    services = _generated_services()
    assert services, "no generated services found"
    missing = [
        method_path(service, method.name)
        for service in services
        for method in service.methods
        if method_path(service, method.name) not in METHOD_ROLES
    ]
    assert missing == [], f"add these RPCs to modelplane/server/auth/roles.py: {missing}"


def test_no_rule_names_a_method_that_does_not_exist() -> None:
    assert stale_rules() == []
    generated = {method_path(s, m.name) for s in _generated_services() for m in s.methods}
    assert set(METHOD_ROLES) <= generated


def test_every_rule_allows_admin() -> None:
    for method, roles in METHOD_ROLES.items():
        assert Role.ADMIN in roles, method


@pytest.mark.parametrize(
    "method",
    [
        "GetModel",
        "ListModels",
        "GetModelVersion",
        "ListModelVersions",
        "GetAlias",
        "ListAliases",
        "ListAliasHistory",
        "ResolveModel",
        "WatchModels",
    ],
)
def test_registry_reads_are_open_to_every_role(method: str) -> None:
    assert allowed_roles(REGISTRY + method) == EVERYONE
    for role in Role:
        assert is_allowed(REGISTRY + method, role)


@pytest.mark.parametrize(
    "method",
    [
        "CreateModel",
        "UpdateModel",
        "CreateModelVersion",
        "UpdateModelVersion",
        "SetAlias",
        "DeleteAlias",
        "DeleteModel",
        "DeleteModelVersion",
    ],
)
def test_registry_writes_need_admin_or_operator(method: str) -> None:
    assert allowed_roles(REGISTRY + method) == WRITERS
    assert is_allowed(REGISTRY + method, "operator")
    assert not is_allowed(REGISTRY + method, "service")
    assert not is_allowed(REGISTRY + method, "reader")


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ],
)
def test_health_and_reflection_are_open(method: str) -> None:
    assert is_open(method)
    assert is_allowed(method, "reader")


@pytest.mark.parametrize(
    "method",
    [
        "/modelplane.v1.ModelRegistryService/DropEverything",
        "/modelplane.v1.SomeOtherService/GetModel",
        "/grpc.healthz/Check",
        "/grpc.health.v1.HealthAdmin/SetStatus",
        "GetModel",
        "",
    ],
)
def test_unknown_methods_are_denied_to_every_role(method: str) -> None:
    assert not is_open(method)
    assert allowed_roles(method) == frozenset()
    for role in Role:
        assert not is_allowed(method, role)


def test_parse_role_accepts_the_four_roles_in_any_case() -> None:
    assert parse_role("admin") is Role.ADMIN
    assert parse_role(" Reader ") is Role.READER
    assert [role.value for role in Role] == ["admin", "operator", "service", "reader"]


def test_parse_role_rejects_others_on_field_role() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_role("root")
    assert [v.field for v in caught.value.violations] == ["role"]
    assert "admin, operator, service, reader" in caught.value.violations[0].description
