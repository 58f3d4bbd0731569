"""Every ModelRegistryService RPC against every role and every kind of bad credential, with auth on.

The RPC list comes from the generated descriptor, so a new RPC joins the matrix by itself. The expected
outcome comes from the roles table, and a few expectations are spelled out by hand as well, so that a wrong
table cannot make the matrix agree with itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.auth.roles import Role, allowed_roles, method_path
from modelplane.server.auth.store import create_token, revoke_token
from modelplane.server.config import ServerConfig
from modelplane.server.store.urls import with_database
from modelplane.v1 import registry_pb2 as pb
from tests.support.rich_errors import RichError, rich

# Every async test shares the loop of the module's server.
module_loop = pytest.mark.asyncio(loop_scope="module")

SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)
ROLES: list[Role] = list(Role)

# A call that passes auth must never come back with one of these.
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

# Bounds one call of a test that must not hang; not a performance expectation.
CALL_TIMEOUT = 10.0

MISSING = "models/auth-matrix-missing"


def _version_spec() -> pb.ModelVersion:
    return pb.ModelVersion(
        source_uri="openai:gpt-4o",
        context_window=128_000,
        max_output_tokens=4096,
        capabilities=[pb.CAPABILITY_CHAT],
        pricing=pb.TokenPricing(
            currency_code="USD", input_micros_per_million=2_500_000, output_micros_per_million=10_000_000
        ),
    )


# The smallest request of each RPC that reaches the service without changing anything, and the code it
# gets once auth lets it through: NOT_FOUND on a missing model proves that auth passed and the store ran.
MINIMAL_CALLS: dict[str, tuple[Message, grpc.StatusCode]] = {
    "CreateModel": (
        pb.CreateModelRequest(model_id="Not A Model Id", model=pb.Model(provider="openai")),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "GetModel": (pb.GetModelRequest(name=MISSING), grpc.StatusCode.NOT_FOUND),
    "ListModels": (pb.ListModelsRequest(), grpc.StatusCode.OK),
    "UpdateModel": (
        pb.UpdateModelRequest(
            model=pb.Model(name=MISSING, display_name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "DeleteModel": (pb.DeleteModelRequest(name=MISSING), grpc.StatusCode.NOT_FOUND),
    "CreateModelVersion": (
        pb.CreateModelVersionRequest(parent=MISSING, model_version=_version_spec()),
        grpc.StatusCode.NOT_FOUND,
    ),
    "GetModelVersion": (pb.GetModelVersionRequest(name=f"{MISSING}/versions/1"), grpc.StatusCode.NOT_FOUND),
    "ListModelVersions": (pb.ListModelVersionsRequest(parent="models/-"), grpc.StatusCode.OK),
    "UpdateModelVersion": (
        pb.UpdateModelVersionRequest(
            model_version=pb.ModelVersion(name=f"{MISSING}/versions/1", description="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "DeleteModelVersion": (
        pb.DeleteModelVersionRequest(name=f"{MISSING}/versions/1"),
        grpc.StatusCode.NOT_FOUND,
    ),
    "SetAlias": (
        pb.SetAliasRequest(name=f"{MISSING}/aliases/prod", version=f"{MISSING}/versions/1"),
        grpc.StatusCode.NOT_FOUND,
    ),
    "GetAlias": (pb.GetAliasRequest(name=f"{MISSING}/aliases/prod"), grpc.StatusCode.NOT_FOUND),
    "ListAliases": (pb.ListAliasesRequest(parent=MISSING), grpc.StatusCode.NOT_FOUND),
    "DeleteAlias": (pb.DeleteAliasRequest(name=f"{MISSING}/aliases/prod"), grpc.StatusCode.NOT_FOUND),
    "ListAliasHistory": (pb.ListAliasHistoryRequest(parent=MISSING), grpc.StatusCode.NOT_FOUND),
    "ResolveModel": (
        pb.ResolveModelRequest(alias=f"{MISSING}/aliases/prod"),
        grpc.StatusCode.NOT_FOUND,
    ),
    # start_revision 0: the first message is a progress mark, sent at once.
    "WatchModels": (pb.WatchModelsRequest(start_revision=0), grpc.StatusCode.OK),
}

# Written out independently of roles.py: if the table drifts from these, both the table check and the
# live check below fail.
HAND_WRITTEN_RULES: list[tuple[str, Role, bool]] = [
    ("CreateModel", Role.READER, False),
    ("CreateModel", Role.SERVICE, False),
    ("DeleteModel", Role.SERVICE, False),
    ("SetAlias", Role.READER, False),
    ("SetAlias", Role.OPERATOR, True),
    ("DeleteModelVersion", Role.OPERATOR, True),
    ("ResolveModel", Role.SERVICE, True),
    ("ResolveModel", Role.READER, True),
    ("GetModel", Role.READER, True),
    ("WatchModels", Role.SERVICE, True),
    ("CreateModel", Role.ADMIN, True),
]


def _minimal_request(method: MethodDescriptor) -> Message:
    if method.name in MINIMAL_CALLS:
        return MINIMAL_CALLS[method.name][0]
    # An RPC without an entry still runs through the matrix with an empty request;
    # test_every_rpc_has_a_minimal_call says which entry to add.
    message_class: type[Message] = getattr(pb, method.input_type.name)
    return message_class()


@dataclass
class AuthServer:
    """The module's server with auth on, and one channel per credential."""

    server: ModelplaneServer
    channels: dict[str, grpc.aio.Channel]

    async def call(self, credential: str, method: MethodDescriptor, request: Message) -> RichError | None:
        """None when the call succeeds (the first message, for a stream); the rich error otherwise."""
        channel = self.channels[credential]
        output_class: type[Message] = getattr(pb, method.output_type.name)
        path = method_path(SERVICE, method.name)
        try:
            if method.server_streaming:
                stream = channel.unary_stream(
                    path,
                    request_serializer=_serialize,
                    response_deserializer=output_class.FromString,
                )(request, timeout=CALL_TIMEOUT)
                try:
                    await stream.read()
                finally:
                    stream.cancel()
            else:
                await channel.unary_unary(
                    path,
                    request_serializer=_serialize,
                    response_deserializer=output_class.FromString,
                )(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return rich(error)
        return None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class _Bearer(grpc.AuthMetadataPlugin):
    """Sends a fixed `authorization` value on every call of a channel."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", self._value),), None)


def _channel(target: str, authorization: str | None) -> grpc.aio.Channel:
    if authorization is None:
        return grpc.aio.insecure_channel(target)
    # Call credentials need a secure channel type; local credentials allow them over plaintext loopback.
    credentials = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.metadata_call_credentials(_Bearer(authorization))
    )
    return grpc.aio.secure_channel(target, credentials)


async def _create_database(admin_url: str, template: str) -> str:
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def auth_server(admin_url: str, template_database: str) -> AsyncIterator[AuthServer]:
    """One server with auth on for the whole module, with a token per role, a revoked and two bad ones."""
    name = await _create_database(admin_url, template_database)
    url = with_database(admin_url, name)
    authorizations: dict[str, str | None] = {"none": None}
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for role in ROLES:
            _, secret = await create_token(conn, f"matrix-{role.value}", role.value)
            authorizations[role.value] = f"Bearer {secret}"
        # An admin token, revoked before its first use, so no replica can have it cached.
        _, revoked_secret = await create_token(conn, "matrix-revoked", Role.ADMIN.value)
        await revoke_token(conn, "matrix-revoked")
        authorizations["revoked"] = f"Bearer {revoked_secret}"
    finally:
        await conn.close()
    # Shaped like a real secret, so the server has to look it up to refuse it.
    authorizations["unknown"] = "Bearer mp_" + "A" * 43
    authorizations["malformed"] = "Basic dXNlcjpwYXNz"

    server = build_server(
        ServerConfig(
            address="127.0.0.1:0",
            database_url=url,
            auth=True,
            health_probe_interval=0.1,
            shutdown_grace=1.0,
            watch_progress_interval=0.5,
        )
    )
    await server.start()
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        await server.wait_serving(timeout=30)
        channels = {key: _channel(server.target, value) for key, value in authorizations.items()}
        yield AuthServer(server, channels)
    finally:
        for channel in channels.values():
            await channel.close(grace=None)
        await server.stop(grace=0)
        await _drop_database(admin_url, name)


def _method(name: str) -> MethodDescriptor:
    return SERVICE.methods_by_name[name]


@module_loop
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
async def test_role_matrix(auth_server: AuthServer, method: MethodDescriptor, role: Role) -> None:
    error = await auth_server.call(role.value, method, _minimal_request(method))
    if role in allowed_roles(method_path(SERVICE, method.name)):
        assert error is None or error.code not in AUTH_CODES, f"{role.value} was refused: {error}"
        if method.name in MINIMAL_CALLS:
            expected = MINIMAL_CALLS[method.name][1]
            assert (grpc.StatusCode.OK if error is None else error.code) == expected, error
    else:
        assert error is not None, f"{role.value} may not call {method.name}, yet the call succeeded"
        assert error.code == grpc.StatusCode.PERMISSION_DENIED, error
        assert (error.domain, error.reason) == ("modelplane", "ROLE_NOT_ALLOWED")
        assert error.metadata["role"] == role.value
        assert error.metadata["method"] == method_path(SERVICE, method.name)


@module_loop
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        ("none", "TOKEN_MISSING"),
        ("malformed", "TOKEN_INVALID"),
        ("unknown", "TOKEN_INVALID"),
        ("revoked", "TOKEN_INVALID"),
    ],
)
async def test_no_valid_token_is_unauthenticated(
    auth_server: AuthServer, method: MethodDescriptor, credential: str, reason: str
) -> None:
    error = await auth_server.call(credential, method, _minimal_request(method))
    assert error is not None, f"{method.name} answered without a valid token"
    assert error.code == grpc.StatusCode.UNAUTHENTICATED, error
    assert (error.domain, error.reason) == ("modelplane", reason)


@module_loop
@pytest.mark.parametrize(("method_name", "role", "allowed"), HAND_WRITTEN_RULES)
async def test_hand_written_rules(
    auth_server: AuthServer, method_name: str, role: Role, allowed: bool
) -> None:
    method = _method(method_name)
    assert (role in allowed_roles(method_path(SERVICE, method_name))) is allowed, "the roles table disagrees"
    error = await auth_server.call(role.value, method, _minimal_request(method))
    if allowed:
        assert error is None or error.code not in AUTH_CODES, error
    else:
        assert error is not None
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_every_rpc_has_a_rule_and_a_minimal_call() -> None:
    for method in METHODS:
        path = method_path(SERVICE, method.name)
        # Admin owns the installation: an RPC it cannot call has no rule at all.
        assert Role.ADMIN in allowed_roles(path), f"no rule for {path} in modelplane/server/auth/roles.py"
        assert method.name in MINIMAL_CALLS, f"add a minimal request for {method.name} to MINIMAL_CALLS"


def test_the_matrix_covers_each_kind_of_rpc() -> None:
    # Guards the descriptor walk itself: an empty or truncated method list would make the matrix vacuous.
    names = {method.name for method in METHODS}
    assert {"CreateModel", "GetModel", "SetAlias", "ResolveModel", "WatchModels"} <= names
    assert any(method.server_streaming for method in METHODS)


@module_loop
@pytest.mark.parametrize("credential", ["none", "unknown", "reader"])
async def test_health_answers_without_a_token(auth_server: AuthServer, credential: str) -> None:
    stub = health_pb2_grpc.HealthStub(auth_server.channels[credential])
    for service in ("", SERVICE.full_name):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


@module_loop
@pytest.mark.parametrize("credential", ["none", "unknown"])
async def test_reflection_answers_without_a_token(auth_server: AuthServer, credential: str) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(auth_server.channels[credential])
    requests: list[Any] = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE.full_name),
    ]
    responses = [
        response async for response in stub.ServerReflectionInfo(iter(requests), timeout=CALL_TIMEOUT)
    ]
    assert len(responses) == 2
    listed = {service.name for service in responses[0].list_services_response.service}
    assert SERVICE.full_name in listed
    assert "grpc.health.v1.Health" in listed
    assert responses[1].file_descriptor_response.file_descriptor_proto, responses[1]
