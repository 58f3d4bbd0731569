"""Every RPC of every modelplane service against every role and every kind of bad credential, with auth on.

The services come from the server's own list (`MODELPLANE_SERVICES`) and their RPCs from the descriptor pool,
so a new service or RPC joins the matrix by itself and fails it until it has a rule and a minimal call. The
expected outcome comes from the roles table, and a few expectations are spelled out by hand as well, so
that a wrong table cannot make the matrix agree with itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_logs
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
from opentelemetry.proto.logs.v1 import logs_pb2 as otlp_records
from opentelemetry.proto.resource.v1 import resource_pb2 as otlp_resource

from modelplane.server.app import MODELPLANE_SERVICES, ModelplaneServer, build_server
from modelplane.server.auth.roles import Role, allowed_roles, method_path
from modelplane.server.auth.store import create_token, revoke_token
from modelplane.server.config import ServerConfig
from modelplane.server.store.urls import with_database
from modelplane.v1 import common_pb2
from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import logs_pb2 as lpb
from tests.support.live_server import client_core_race, create_database, drop_database
from tests.support.minimal_calls import MINIMAL_CALLS, MISSING, MISSING_DEPLOYMENT
from tests.support.rich_errors import RichError, rich

# Every async test shares the loop of the module's server.
module_loop = pytest.mark.asyncio(loop_scope="module")

# The server registers its services' generated modules, which puts their descriptors in the default pool.
OTLP_LOGS_SERVICE = otlp_logs.DESCRIPTOR.services_by_name["LogsService"]
SERVICES: list[ServiceDescriptor] = [
    *(descriptor_pool.Default().FindServiceByName(name) for name in MODELPLANE_SERVICES),
    # OTLP's logs service runs on the same port, behind the same auth.
    OTLP_LOGS_SERVICE,
]
METHODS: list[tuple[ServiceDescriptor, MethodDescriptor]] = [
    (service, method) for service in SERVICES for method in service.methods
]
ROLES: list[Role] = list(Role)

# A call that passes auth must never come back with one of these.
AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

# Bounds one call of a test that must not hang; not a performance expectation.
CALL_TIMEOUT = 10.0

# Written out independently of roles.py and the README: if the table drifts from these, both the table
# check and the live check below fail.
HAND_WRITTEN_RULES: list[tuple[str, str, Role, bool]] = [
    ("ModelRegistryService", "CreateModel", Role.READER, False),
    ("ModelRegistryService", "CreateModel", Role.SERVICE, False),
    ("ModelRegistryService", "DeleteModel", Role.SERVICE, False),
    ("ModelRegistryService", "SetAlias", Role.READER, False),
    ("ModelRegistryService", "SetAlias", Role.OPERATOR, True),
    ("ModelRegistryService", "DeleteModelVersion", Role.OPERATOR, True),
    ("ModelRegistryService", "ResolveModel", Role.SERVICE, True),
    ("ModelRegistryService", "ResolveModel", Role.READER, True),
    ("ModelRegistryService", "GetModel", Role.READER, True),
    ("ModelRegistryService", "WatchModels", Role.SERVICE, True),
    ("ModelRegistryService", "CreateModel", Role.ADMIN, True),
    # README "Guardrails": policy writes need admin or operator; checks admin, operator or service;
    # reads anyone.
    ("GuardrailService", "CheckContent", Role.READER, False),
    ("GuardrailService", "CheckContent", Role.SERVICE, True),
    ("GuardrailService", "CheckStream", Role.READER, False),
    ("GuardrailService", "CheckStream", Role.SERVICE, True),
    ("GuardrailService", "CreatePolicy", Role.READER, False),
    ("GuardrailService", "CreatePolicy", Role.SERVICE, False),
    ("GuardrailService", "CreatePolicy", Role.OPERATOR, True),
    ("GuardrailService", "UpdatePolicy", Role.OPERATOR, True),
    ("GuardrailService", "UpdatePolicy", Role.SERVICE, False),
    ("GuardrailService", "DeletePolicy", Role.SERVICE, False),
    ("GuardrailService", "GetPolicy", Role.READER, True),
    ("GuardrailService", "ListViolations", Role.READER, True),
    ("GuardrailService", "AggregateViolations", Role.READER, True),
    ("GuardrailService", "CheckContent", Role.ADMIN, True),
    # README "Guardrails", shadow revisions: set, clear and promote need admin or operator; the report
    # anyone.
    ("GuardrailService", "SetShadowRevision", Role.READER, False),
    ("GuardrailService", "SetShadowRevision", Role.SERVICE, False),
    ("GuardrailService", "SetShadowRevision", Role.OPERATOR, True),
    ("GuardrailService", "SetShadowRevision", Role.ADMIN, True),
    ("GuardrailService", "ClearShadowRevision", Role.SERVICE, False),
    ("GuardrailService", "ClearShadowRevision", Role.OPERATOR, True),
    ("GuardrailService", "PromoteShadowRevision", Role.READER, False),
    ("GuardrailService", "PromoteShadowRevision", Role.SERVICE, False),
    ("GuardrailService", "PromoteShadowRevision", Role.OPERATOR, True),
    ("GuardrailService", "GetShadowReport", Role.READER, True),
    ("GuardrailService", "GetShadowReport", Role.SERVICE, True),
    # README "Deployments": rollout control needs admin or operator; health reports and routes admin,
    # operator or service; reads anyone.
    ("DeploymentService", "StartRollout", Role.SERVICE, False),
    ("DeploymentService", "PromoteRollout", Role.READER, False),
    ("DeploymentService", "PromoteRollout", Role.OPERATOR, True),
    ("DeploymentService", "ReportEndpointHealth", Role.SERVICE, True),
    ("DeploymentService", "ReportEndpointHealth", Role.READER, False),
    ("DeploymentService", "ResolveRoute", Role.SERVICE, True),
    ("DeploymentService", "ResolveRoute", Role.READER, False),
    ("DeploymentService", "WatchDeployment", Role.READER, True),
    ("DeploymentService", "CreateDeployment", Role.SERVICE, False),
    # README "Logs": writes need admin, operator or service; reads anyone.
    ("LogService", "WriteLogEvents", Role.READER, False),
    ("LogService", "StreamLogEvents", Role.READER, False),
    ("LogService", "StreamLogEvents", Role.SERVICE, True),
    ("LogService", "WriteLogEvents", Role.OPERATOR, True),
    ("LogService", "QueryLogEvents", Role.READER, True),
    ("LogService", "TailLogEvents", Role.READER, True),
    ("LogService", "GetIngestionStats", Role.READER, True),
    # README "Tracing and OTLP": OTLP's Export is a write, as WriteLogEvents is.
    ("LogsService", "Export", Role.READER, False),
    ("LogsService", "Export", Role.SERVICE, True),
]


# Scoped tokens of the module's server: (credential, role, scopes). "scoped-in" names exactly what the
# minimal calls name; "scoped-out" names other resources of each kind.
SCOPED_TOKENS: list[tuple[str, Role, list[str]]] = [
    (
        "scoped-in",
        Role.ADMIN,
        ["deployments/auth-matrix-missing", "models/auth-matrix-missing", "services/auth-matrix"],
    ),
    ("scoped-out", Role.ADMIN, ["deployments/elsewhere", "models/elsewhere", "services/elsewhere"]),
    ("scoped-service", Role.SERVICE, ["deployments/web"]),
    ("scoped-reader", Role.READER, ["deployments/auth-matrix-missing"]),
]

# Written out by hand from MINIMAL_CALLS, independently of auth/scopes.py: the RPCs whose minimal request
# names a deployment or a model (a name, a parent, a target or an id to create). The rest name neither.
NAMES_A_SCOPED_RESOURCE: frozenset[str] = frozenset(
    {
        *(
            f"ModelRegistryService.{name}"
            for name in (
                "CreateModel",
                "GetModel",
                "UpdateModel",
                "DeleteModel",
                "CreateModelVersion",
                "GetModelVersion",
                "ListModelVersions",
                "UpdateModelVersion",
                "DeleteModelVersion",
                "SetAlias",
                "GetAlias",
                "ListAliases",
                "DeleteAlias",
                "ListAliasHistory",
                "ResolveModel",
            )
        ),
        *(
            f"DeploymentService.{name}"
            for name in (
                "CreateDeployment",
                "GetDeployment",
                "UpdateDeployment",
                "DeleteDeployment",
                "StartRollout",
                "PlanRollout",
                "GetRollout",
                "ListRollouts",
                "PromoteRollout",
                "PauseRollout",
                "ResumeRollout",
                "RollbackRollout",
                "AbortRollout",
                "ReportEndpointHealth",
                "ListDeploymentHistory",
                "ResolveRoute",
                "WatchDeployment",
            )
        ),
    }
)
# Minimal calls that name what no scope holds: an id to create ("Not A Model Id"), or every model at once
# (parent "models/-"), which a token scoped to some models may not ask for.
OUTSIDE_EVERY_SCOPE = frozenset(
    {
        "ModelRegistryService.CreateModel",
        "ModelRegistryService.ListModelVersions",
        "DeploymentService.CreateDeployment",
    }
)


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _minimal_request(service: ServiceDescriptor, method: MethodDescriptor) -> Message:
    entry = MINIMAL_CALLS.get(service.name, {}).get(method.name)
    if entry is not None:
        return entry[0]
    # An RPC without an entry still runs through the matrix with an empty request;
    # test_every_rpc_has_a_rule_and_a_minimal_call says which entry to add.
    return _message_class(method.input_type)()


def _expected_code(service: ServiceDescriptor, method: MethodDescriptor) -> grpc.StatusCode | None:
    entry = MINIMAL_CALLS.get(service.name, {}).get(method.name)
    return None if entry is None else entry[1]


@dataclass
class AuthServer:
    """The module's server with auth on, and one channel per credential."""

    server: ModelplaneServer
    channels: dict[str, grpc.aio.Channel]

    async def call(
        self, credential: str, service: ServiceDescriptor, method: MethodDescriptor, request: Message
    ) -> RichError | None:
        """None when the call succeeds (the first message, for a stream); the rich error otherwise."""
        for _ in range(CORE_RACE_ATTEMPTS):
            error = await self._call_once(credential, service, method, request)
            if not client_core_race(method, error):
                return error
        return error

    async def _call_once(
        self, credential: str, service: ServiceDescriptor, method: MethodDescriptor, request: Message
    ) -> RichError | None:
        channel = self.channels[credential]
        output_class = _message_class(method.output_type)
        path = method_path(service, method.name)
        try:
            if method.client_streaming and method.server_streaming:
                # The one request, then a half-close; the first response or the end of the stream follows.
                bidi = channel.stream_stream(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(iter([request]), timeout=CALL_TIMEOUT)
                try:
                    await bidi.read()
                finally:
                    bidi.cancel()
            elif method.client_streaming:
                await channel.stream_unary(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(iter([request]), timeout=CALL_TIMEOUT)
            elif method.server_streaming:
                stream = channel.unary_stream(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(request, timeout=CALL_TIMEOUT)
                try:
                    await stream.read()
                finally:
                    stream.cancel()
            else:
                await channel.unary_unary(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return rich(error)
        return None


# A client stream the server ends at once (auth refused) while the client's own gRPC core is still sending
# its message now and then comes back from that core as INTERNAL "Internal error from Core", with none of
# the server's details; the server never sent it. Such an attempt is made again.
CORE_RACE_ATTEMPTS = 5


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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def auth_server(admin_url: str, template_database: str) -> AsyncIterator[AuthServer]:
    """One server with auth on for the whole module, with a token per role, a revoked and two bad ones."""
    name = await create_database(admin_url, template_database)
    url = with_database(admin_url, name)
    authorizations: dict[str, str | None] = {"none": None}
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for role in ROLES:
            _, secret = await create_token(conn, f"matrix-{role.value}", role.value)
            authorizations[role.value] = f"Bearer {secret}"
        # Scoped tokens: admin, so that only the scope can refuse a call, and a service one as attacked.
        for credential, role, scopes in SCOPED_TOKENS:
            _, scoped_secret = await create_token(conn, f"matrix-{credential}", role.value, scopes)
            authorizations[credential] = f"Bearer {scoped_secret}"
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
        await drop_database(admin_url, name)


def _service(name: str) -> ServiceDescriptor:
    return next(service for service in SERVICES if service.name == name)


def _method_id(pair: tuple[ServiceDescriptor, MethodDescriptor]) -> str:
    return f"{pair[0].name}.{pair[1].name}"


@module_loop
@pytest.mark.parametrize("pair", METHODS, ids=_method_id)
@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
async def test_role_matrix(
    auth_server: AuthServer, pair: tuple[ServiceDescriptor, MethodDescriptor], role: Role
) -> None:
    service, method = pair
    path = method_path(service, method.name)
    error = await auth_server.call(role.value, service, method, _minimal_request(service, method))
    if role in allowed_roles(path):
        assert error is None or error.code not in AUTH_CODES, f"{role.value} was refused: {error}"
        expected = _expected_code(service, method)
        if expected is not None:
            assert (grpc.StatusCode.OK if error is None else error.code) == expected, error
    else:
        assert error is not None, f"{role.value} may not call {path}, yet the call succeeded"
        assert error.code == grpc.StatusCode.PERMISSION_DENIED, error
        assert (error.domain, error.reason) == ("modelplane", "ROLE_NOT_ALLOWED")
        assert error.metadata["role"] == role.value
        assert error.metadata["method"] == path


@module_loop
@pytest.mark.parametrize("pair", METHODS, ids=_method_id)
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
    auth_server: AuthServer, pair: tuple[ServiceDescriptor, MethodDescriptor], credential: str, reason: str
) -> None:
    service, method = pair
    error = await auth_server.call(credential, service, method, _minimal_request(service, method))
    assert error is not None, f"{method.full_name} answered without a valid token"
    assert error.code == grpc.StatusCode.UNAUTHENTICATED, error
    assert (error.domain, error.reason) == ("modelplane", reason)


@module_loop
@pytest.mark.parametrize(("service_name", "method_name", "role", "allowed"), HAND_WRITTEN_RULES)
async def test_hand_written_rules(
    auth_server: AuthServer, service_name: str, method_name: str, role: Role, allowed: bool
) -> None:
    service = _service(service_name)
    method = service.methods_by_name[method_name]
    assert (role in allowed_roles(method_path(service, method_name))) is allowed, "the roles table disagrees"
    error = await auth_server.call(role.value, service, method, _minimal_request(service, method))
    if allowed:
        assert error is None or error.code not in AUTH_CODES, error
    else:
        assert error is not None
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_every_rpc_has_a_rule_and_a_minimal_call() -> None:
    for service, method in METHODS:
        path = method_path(service, method.name)
        # Admin owns the installation: an RPC it cannot call has no rule at all.
        assert Role.ADMIN in allowed_roles(path), f"no rule for {path} in modelplane/server/auth/roles.py"
        assert _expected_code(service, method) is not None, (
            f"add a minimal request for {path} to MINIMAL_CALLS[{service.name!r}]"
        )
        request = _minimal_request(service, method)
        assert request.DESCRIPTOR is method.input_type, f"MINIMAL_CALLS has the wrong request type for {path}"


def test_no_minimal_call_is_stale() -> None:
    # An entry for a renamed or removed RPC would otherwise sit here unnoticed.
    known = {(service.name, method.name) for service, method in METHODS}
    listed = {(service, method) for service, calls in MINIMAL_CALLS.items() for method in calls}
    assert listed - known == set()


def test_the_matrix_covers_each_kind_of_rpc() -> None:
    # Guards the descriptor walk itself: an empty or truncated method list would make the matrix vacuous.
    names = {(service.name, method.name) for service, method in METHODS}
    assert {service.full_name for service in SERVICES} == {*MODELPLANE_SERVICES, OTLP_LOGS_SERVICE.full_name}
    assert {"ModelRegistryService", "GuardrailService"} <= {service.name for service in SERVICES}
    assert {
        ("ModelRegistryService", "CreateModel"),
        ("ModelRegistryService", "ResolveModel"),
        ("ModelRegistryService", "WatchModels"),
        ("GuardrailService", "CreatePolicy"),
        ("GuardrailService", "CheckContent"),
        ("GuardrailService", "CheckStream"),
    } <= names
    assert any(method.server_streaming and not method.client_streaming for _, method in METHODS)
    assert any(method.server_streaming and method.client_streaming for _, method in METHODS)


@module_loop
@pytest.mark.parametrize("credential", ["none", "unknown", "reader"])
async def test_health_answers_without_a_token(auth_server: AuthServer, credential: str) -> None:
    stub = health_pb2_grpc.HealthStub(auth_server.channels[credential])
    for service in ("", *MODELPLANE_SERVICES):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


@module_loop
@pytest.mark.parametrize("credential", ["none", "unknown"])
async def test_reflection_answers_without_a_token(auth_server: AuthServer, credential: str) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(auth_server.channels[credential])
    requests: list[Any] = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        *(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
            for service in MODELPLANE_SERVICES
        ),
    ]
    responses = [
        response async for response in stub.ServerReflectionInfo(iter(requests), timeout=CALL_TIMEOUT)
    ]
    assert len(responses) == len(requests)
    listed = {service.name for service in responses[0].list_services_response.service}
    assert set(MODELPLANE_SERVICES) <= listed
    assert "grpc.health.v1.Health" in listed
    for response in responses[1:]:
        assert response.file_descriptor_response.file_descriptor_proto, response


def _assert_out_of_scope(error: RichError | None, resource: str | None = None) -> None:
    assert error is not None, "a call outside the token's scope succeeded"
    assert (error.code, error.domain, error.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "modelplane",
        "OUT_OF_SCOPE",
    ), error
    if resource is not None:
        assert error.metadata["resource"] == resource, error


@module_loop
@pytest.mark.parametrize("pair", METHODS, ids=_method_id)
async def test_a_scoped_token_may_not_name_what_is_outside_its_scope(
    auth_server: AuthServer, pair: tuple[ServiceDescriptor, MethodDescriptor]
) -> None:
    service, method = pair
    error = await auth_server.call("scoped-out", service, method, _minimal_request(service, method))
    if _method_id(pair) in NAMES_A_SCOPED_RESOURCE:
        _assert_out_of_scope(error)
    else:
        # Naming nothing of a scoped kind, the call is what the role allows.
        assert (grpc.StatusCode.OK if error is None else error.code) == _expected_code(service, method), error


@module_loop
@pytest.mark.parametrize("pair", METHODS, ids=_method_id)
async def test_a_scoped_token_may_name_what_is_inside_its_scope(
    auth_server: AuthServer, pair: tuple[ServiceDescriptor, MethodDescriptor]
) -> None:
    service, method = pair
    error = await auth_server.call("scoped-in", service, method, _minimal_request(service, method))
    if _method_id(pair) in OUTSIDE_EVERY_SCOPE:
        _assert_out_of_scope(error)
    else:
        assert (grpc.StatusCode.OK if error is None else error.code) == _expected_code(service, method), error


@module_loop
async def test_a_scoped_service_token_cannot_mark_another_deployments_endpoint(
    auth_server: AuthServer,
) -> None:
    service = _service("DeploymentService")
    report = service.methods_by_name["ReportEndpointHealth"]
    other = dpb.ReportEndpointHealthRequest(deployment=MISSING_DEPLOYMENT, address="10.0.0.1:80", ready=False)
    _assert_out_of_scope(await auth_server.call("scoped-service", service, report, other), MISSING_DEPLOYMENT)
    # Its own deployment passes the scope (and is then not found: the module has no deployments).
    own = dpb.ReportEndpointHealthRequest(deployment="deployments/web", address="10.0.0.1:80", ready=False)
    error = await auth_server.call("scoped-service", service, report, own)
    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "DEPLOYMENT_NOT_FOUND"), error
    route = service.methods_by_name["ResolveRoute"]
    _assert_out_of_scope(
        await auth_server.call(
            "scoped-service", service, route, dpb.ResolveRouteRequest(deployment=MISSING_DEPLOYMENT)
        )
    )
    # The scope narrows the role, never widens it.
    error = await auth_server.call("scoped-reader", service, report, other)
    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def _log_event(**fields: Any) -> lpb.LogEvent:
    settings: dict[str, Any] = {"service": "auth-matrix", **fields}
    event = lpb.LogEvent(event_id=str(uuid.uuid4()), level=lpb.LOG_LEVEL_INFO, **settings)
    event.event_time.GetCurrentTime()
    return event


@module_loop
@pytest.mark.parametrize(
    ("event", "path", "resource"),
    [
        (_log_event(), None, None),
        (_log_event(service="elsewhere"), "batch.events[1].service", "services/elsewhere"),
        (
            _log_event(links=common_pb2.EventLinks(deployment="deployments/other")),
            "batch.events[1].links.deployment",
            "deployments/other",
        ),
        (
            _log_event(inference=lpb.InferencePayload(model_version="models/other/versions/1")),
            "batch.events[1].inference.model_version",
            "models/other",
        ),
    ],
)
async def test_a_scoped_token_ships_log_events_only_about_its_scope(
    auth_server: AuthServer, event: lpb.LogEvent, path: str | None, resource: str | None
) -> None:
    service = _service("LogService")
    write = service.methods_by_name["WriteLogEvents"]
    request = lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[_log_event(), event]))
    error = await auth_server.call("scoped-in", service, write, request)
    if path is None:
        assert error is None, error
        return
    _assert_out_of_scope(error, resource)
    assert error is not None
    assert error.metadata["field"] == path


@module_loop
async def test_a_scoped_token_exports_otlp_records_only_about_its_scope(auth_server: AuthServer) -> None:
    def export(model_version: str) -> otlp_logs.ExportLogsServiceRequest:
        record = otlp_records.LogRecord(
            time_unix_nano=time.time_ns(),
            attributes=[
                otlp_common.KeyValue(
                    key="modelplane.model_version", value=otlp_common.AnyValue(string_value=model_version)
                ),
                otlp_common.KeyValue(
                    key="gen_ai.usage.input_tokens", value=otlp_common.AnyValue(int_value=3)
                ),
            ],
        )
        service_name = otlp_common.KeyValue(
            key="service.name", value=otlp_common.AnyValue(string_value="web")
        )
        return otlp_logs.ExportLogsServiceRequest(
            resource_logs=[
                otlp_records.ResourceLogs(
                    resource=otlp_resource.Resource(attributes=[service_name]),
                    scope_logs=[otlp_records.ScopeLogs(log_records=[record])],
                )
            ]
        )

    service = _service("LogsService")
    method = service.methods_by_name["Export"]
    assert await auth_server.call("scoped-in", service, method, export(f"{MISSING}/versions/1")) is None
    error = await auth_server.call("scoped-in", service, method, export("models/other/versions/1"))
    _assert_out_of_scope(error, "models/other")


@module_loop
async def test_a_scoped_log_stream_commits_what_came_before_a_batch_outside_its_scope(
    auth_server: AuthServer,
) -> None:
    channel = auth_server.channels["scoped-in"]
    path = method_path(_service("LogService"), "StreamLogEvents")
    client_id = f"scoped-{uuid.uuid4().hex[:8]}"
    batches = [
        lpb.StreamLogEventsRequest(
            batch=lpb.LogBatch(client_id=client_id, sequence=1, events=[_log_event()])
        ),
        lpb.StreamLogEventsRequest(
            batch=lpb.LogBatch(client_id=client_id, sequence=2, events=[_log_event(service="elsewhere")])
        ),
    ]
    call = channel.stream_stream(
        path, request_serializer=_serialize, response_deserializer=lpb.StreamLogEventsResponse.FromString
    )(iter(batches), timeout=CALL_TIMEOUT)
    acks: list[int] = []

    async def read_all() -> None:
        async for response in call:
            acks.append(response.ack.sequence)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_all()
    assert acks == [1]
    _assert_out_of_scope(rich(raised.value), "services/elsewhere")
