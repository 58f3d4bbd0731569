"""The sync client driven through grpc_testing channels, with no server: the request each method sends, the
pages it walks, retries on UNAVAILABLE (honouring RetryInfo, within the deadline), no retry on
INVALID_ARGUMENT, error decoding, and a watch that resumes where it stopped. Time is grpc_testing's strict
fake time, so no test waits for a backoff.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from modelplane.client import errors
from modelplane.client.base import DEFAULT_TIMEOUT
from modelplane.client.methods import DescribedMethod
from modelplane.client.methods.deployments import DeploymentMethods
from modelplane.client.methods.guardrails import GuardrailMethods
from modelplane.client.methods.logs import LogMethods
from modelplane.client.methods.registry import RegistryMethods
from modelplane.client.retry import RetryPolicy
from modelplane.client.sync import DeploymentClient, GuardrailClient, LogClient, ModelRegistryClient
from modelplane.client.sync.base import SyncServiceClient
from modelplane.v1 import deployments_pb2, guardrails_pb2, logs_pb2, registry_pb2

SERVICES = {
    ModelRegistryClient: registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
    DeploymentClient: deployments_pb2.DESCRIPTOR.services_by_name["DeploymentService"],
    GuardrailClient: guardrails_pb2.DESCRIPTOR.services_by_name["GuardrailService"],
    LogClient: logs_pb2.DESCRIPTOR.services_by_name["LogService"],
}
TABLES = {
    ModelRegistryClient: RegistryMethods,
    DeploymentClient: DeploymentMethods,
    GuardrailClient: GuardrailMethods,
    LogClient: LogMethods,
}
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class Rig:
    """A grpc_testing channel on fake time and a client factory; blocking calls run on their own thread
    while the test plays the server."""

    time: Any
    channel: Any

    def client(self, kind: type[SyncServiceClient], **settings: Any) -> Any:
        return kind(self.channel, clock=self.time.time, sleep=self.time.sleep_for, **settings)

    def run(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)

        # A daemon thread: a failing test leaves no call blocking the interpreter's exit.
        threading.Thread(target=run, daemon=True).start()
        return future


@pytest.fixture
def rig() -> Rig:
    time = grpc_testing.strict_fake_time(1_000.0)
    return Rig(time, grpc_testing.channel(SERVICES.values(), time))


def method(kind: type[SyncServiceClient], rpc: str) -> Any:
    return SERVICES[kind].methods_by_name[rpc]


def status_trailer(code: grpc.StatusCode, message: str, *details: Message) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def unavailable(retry_after: float | None) -> tuple[tuple[str, bytes], ...]:
    details: list[Message] = [error_details_pb2.ErrorInfo(reason="STORAGE_UNAVAILABLE", domain="modelplane")]
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=retry_after))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return status_trailer(grpc.StatusCode.UNAVAILABLE, "storage is unavailable", *details)


# Every method: the request it sends and what it returns. One case per method of the four tables.


@dataclass(frozen=True)
class Case:
    kind: type[SyncServiceClient]
    attribute: str
    kwargs: dict[str, Any]
    rpc: str
    request: Message
    mutation: bool = False


MODEL = registry_pb2.Model(display_name="Chat")
VERSION = registry_pb2.ModelVersion(name="models/chat/versions/1")
DEPLOYMENT = deployments_pb2.Deployment(name="deployments/chat-prod")
ROLLOUT = deployments_pb2.Rollout(target_version="models/chat/versions/2")
POLICY = guardrails_pb2.Policy(name="policies/pii")
EVENT = logs_pb2.LogEvent(event_id="e1")
R, D, G, L = ModelRegistryClient, DeploymentClient, GuardrailClient, LogClient

CASES = [
    Case(
        R,
        "create_model",
        {"model_id": "chat", "model": MODEL},
        "CreateModel",
        registry_pb2.CreateModelRequest(model_id="chat", model=MODEL),
        mutation=True,
    ),
    Case(
        R, "get_model", {"name": "models/chat"}, "GetModel", registry_pb2.GetModelRequest(name="models/chat")
    ),
    Case(
        R,
        "list_models_page",
        {"filter": 'provider = "x"', "page_size": 5, "page_token": "t"},
        "ListModels",
        registry_pb2.ListModelsRequest(filter='provider = "x"', page_size=5, page_token="t"),
    ),
    Case(
        R,
        "update_model",
        {"model": MODEL, "update_mask": ["display_name"]},
        "UpdateModel",
        registry_pb2.UpdateModelRequest(
            model=MODEL, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
        ),
        mutation=True,
    ),
    Case(
        R,
        "delete_model",
        {"name": "models/chat", "etag": "e", "force": True},
        "DeleteModel",
        registry_pb2.DeleteModelRequest(name="models/chat", etag="e", force=True),
        mutation=True,
    ),
    Case(
        R,
        "create_model_version",
        {"parent": "models/chat", "model_version": VERSION},
        "CreateModelVersion",
        registry_pb2.CreateModelVersionRequest(parent="models/chat", model_version=VERSION),
        mutation=True,
    ),
    Case(
        R,
        "get_model_version",
        {"name": VERSION.name},
        "GetModelVersion",
        registry_pb2.GetModelVersionRequest(name=VERSION.name),
    ),
    Case(
        R,
        "list_model_versions_page",
        {"parent": "models/chat", "order_by": "version desc"},
        "ListModelVersions",
        registry_pb2.ListModelVersionsRequest(parent="models/chat", order_by="version desc"),
    ),
    Case(
        R,
        "update_model_version",
        {"model_version": VERSION, "update_mask": ["state"]},
        "UpdateModelVersion",
        registry_pb2.UpdateModelVersionRequest(
            model_version=VERSION, update_mask=field_mask_pb2.FieldMask(paths=["state"])
        ),
        mutation=True,
    ),
    Case(
        R,
        "delete_model_version",
        {"name": VERSION.name},
        "DeleteModelVersion",
        registry_pb2.DeleteModelVersionRequest(name=VERSION.name),
        mutation=True,
    ),
    Case(
        R,
        "set_alias",
        {"name": "models/chat/aliases/prod", "version": VERSION.name, "expected_version": ""},
        "SetAlias",
        registry_pb2.SetAliasRequest(
            name="models/chat/aliases/prod", version=VERSION.name, expected_version=""
        ),
        mutation=True,
    ),
    Case(
        R,
        "get_alias",
        {"name": "models/chat/aliases/prod"},
        "GetAlias",
        registry_pb2.GetAliasRequest(name="models/chat/aliases/prod"),
    ),
    Case(
        R,
        "list_aliases_page",
        {"parent": "models/chat"},
        "ListAliases",
        registry_pb2.ListAliasesRequest(parent="models/chat"),
    ),
    Case(
        R,
        "delete_alias",
        {"name": "models/chat/aliases/prod", "reason": "gone"},
        "DeleteAlias",
        registry_pb2.DeleteAliasRequest(name="models/chat/aliases/prod", reason="gone"),
        mutation=True,
    ),
    Case(
        R,
        "list_alias_history_page",
        {"parent": "models/chat", "alias": "prod"},
        "ListAliasHistory",
        registry_pb2.ListAliasHistoryRequest(parent="models/chat", alias="prod"),
    ),
    Case(
        R,
        "resolve_model",
        {"alias": "models/chat/aliases/prod"},
        "ResolveModel",
        registry_pb2.ResolveModelRequest(alias="models/chat/aliases/prod"),
    ),
    Case(
        D,
        "create_deployment",
        {"deployment_id": "chat-prod", "deployment": DEPLOYMENT},
        "CreateDeployment",
        deployments_pb2.CreateDeploymentRequest(deployment_id="chat-prod", deployment=DEPLOYMENT),
        mutation=True,
    ),
    Case(
        D,
        "get_deployment",
        {"name": DEPLOYMENT.name},
        "GetDeployment",
        deployments_pb2.GetDeploymentRequest(name=DEPLOYMENT.name),
    ),
    Case(
        D,
        "list_deployments_page",
        {"model": "models/chat"},
        "ListDeployments",
        deployments_pb2.ListDeploymentsRequest(model="models/chat"),
    ),
    Case(
        D,
        "update_deployment",
        {"deployment": DEPLOYMENT, "update_mask": ["labels"]},
        "UpdateDeployment",
        deployments_pb2.UpdateDeploymentRequest(
            deployment=DEPLOYMENT, update_mask=field_mask_pb2.FieldMask(paths=["labels"])
        ),
        mutation=True,
    ),
    Case(
        D,
        "delete_deployment",
        {"name": DEPLOYMENT.name, "etag": "e"},
        "DeleteDeployment",
        deployments_pb2.DeleteDeploymentRequest(name=DEPLOYMENT.name, etag="e"),
        mutation=True,
    ),
    Case(
        D,
        "start_rollout",
        {"parent": DEPLOYMENT.name, "rollout": ROLLOUT},
        "StartRollout",
        deployments_pb2.StartRolloutRequest(parent=DEPLOYMENT.name, rollout=ROLLOUT),
        mutation=True,
    ),
    Case(
        D,
        "plan_rollout",
        {"parent": DEPLOYMENT.name, "rollout": ROLLOUT},
        "PlanRollout",
        deployments_pb2.PlanRolloutRequest(parent=DEPLOYMENT.name, rollout=ROLLOUT),
    ),
    Case(
        D,
        "get_rollout",
        {"name": "deployments/chat-prod/rollouts/1"},
        "GetRollout",
        deployments_pb2.GetRolloutRequest(name="deployments/chat-prod/rollouts/1"),
    ),
    Case(
        D,
        "list_rollouts_page",
        {"parent": DEPLOYMENT.name},
        "ListRollouts",
        deployments_pb2.ListRolloutsRequest(parent=DEPLOYMENT.name),
    ),
    Case(
        D,
        "promote_rollout",
        {"name": "r", "to_end": True},
        "PromoteRollout",
        deployments_pb2.PromoteRolloutRequest(name="r", to_end=True),
        mutation=True,
    ),
    Case(
        D,
        "pause_rollout",
        {"name": "r", "reason": "why"},
        "PauseRollout",
        deployments_pb2.PauseRolloutRequest(name="r", reason="why"),
        mutation=True,
    ),
    Case(
        D,
        "resume_rollout",
        {"name": "r"},
        "ResumeRollout",
        deployments_pb2.ResumeRolloutRequest(name="r"),
        mutation=True,
    ),
    Case(
        D,
        "rollback_rollout",
        {"name": "r", "mode": deployments_pb2.ROLLBACK_MODE_STEPPED, "step_interval": timedelta(seconds=30)},
        "RollbackRollout",
        deployments_pb2.RollbackRolloutRequest(
            name="r",
            mode=deployments_pb2.ROLLBACK_MODE_STEPPED,
            step_interval=duration_pb2.Duration(seconds=30),
        ),
        mutation=True,
    ),
    Case(
        D,
        "abort_rollout",
        {"name": "r"},
        "AbortRollout",
        deployments_pb2.AbortRolloutRequest(name="r"),
        mutation=True,
    ),
    Case(
        D,
        "report_endpoint_health",
        {"deployment": DEPLOYMENT.name, "address": "10.0.0.1:80", "ready": True},
        "ReportEndpointHealth",
        deployments_pb2.ReportEndpointHealthRequest(
            deployment=DEPLOYMENT.name, address="10.0.0.1:80", ready=True
        ),
        mutation=True,
    ),
    Case(
        D,
        "list_deployment_history_page",
        {"parent": DEPLOYMENT.name, "page_size": 2},
        "ListDeploymentHistory",
        deployments_pb2.ListDeploymentHistoryRequest(parent=DEPLOYMENT.name, page_size=2),
    ),
    Case(
        D,
        "resolve_route",
        {"deployment": DEPLOYMENT.name, "routing_key": "user-1"},
        "ResolveRoute",
        deployments_pb2.ResolveRouteRequest(deployment=DEPLOYMENT.name, routing_key="user-1"),
    ),
    Case(
        G,
        "create_policy",
        {"policy_id": "pii", "policy": POLICY},
        "CreatePolicy",
        guardrails_pb2.CreatePolicyRequest(policy_id="pii", policy=POLICY),
        mutation=True,
    ),
    Case(
        G,
        "get_policy",
        {"name": POLICY.name, "revision": 2},
        "GetPolicy",
        guardrails_pb2.GetPolicyRequest(name=POLICY.name, revision=2),
    ),
    Case(
        G,
        "list_policies_page",
        {"filter": "x"},
        "ListPolicies",
        guardrails_pb2.ListPoliciesRequest(filter="x"),
    ),
    Case(
        G,
        "update_policy",
        {"policy": POLICY, "update_mask": ["*"]},
        "UpdatePolicy",
        guardrails_pb2.UpdatePolicyRequest(policy=POLICY, update_mask=field_mask_pb2.FieldMask(paths=["*"])),
        mutation=True,
    ),
    Case(
        G,
        "delete_policy",
        {"name": POLICY.name},
        "DeletePolicy",
        guardrails_pb2.DeletePolicyRequest(name=POLICY.name),
        mutation=True,
    ),
    Case(
        G,
        "list_policy_revisions_page",
        {"name": POLICY.name},
        "ListPolicyRevisions",
        guardrails_pb2.ListPolicyRevisionsRequest(name=POLICY.name),
    ),
    Case(
        G,
        "check_content",
        {"policy": POLICY.name, "text": "hello"},
        "CheckContent",
        guardrails_pb2.CheckContentRequest(policy=POLICY.name, text="hello"),
        mutation=True,
    ),
    Case(
        G,
        "list_violations_page",
        {"filter": "severity >= 2"},
        "ListViolations",
        guardrails_pb2.ListViolationsRequest(filter="severity >= 2"),
    ),
    Case(
        G,
        "aggregate_violations",
        {"policy": POLICY.name, "bucket_width": timedelta(hours=1)},
        "AggregateViolations",
        guardrails_pb2.AggregateViolationsRequest(
            policy=POLICY.name, bucket_width=duration_pb2.Duration(seconds=3600)
        ),
    ),
    Case(
        L,
        "write_log_events",
        {"events": [EVENT], "client_id": "svc", "sequence": 3},
        "WriteLogEvents",
        logs_pb2.WriteLogEventsRequest(batch=logs_pb2.LogBatch(client_id="svc", sequence=3, events=[EVENT])),
    ),
    Case(
        L,
        "query_log_events_page",
        {"filter": "x", "order_by": "event_time asc"},
        "QueryLogEvents",
        logs_pb2.QueryLogEventsRequest(filter="x", order_by="event_time asc"),
    ),
    Case(
        L,
        "aggregate_log_events",
        {"filter": "x", "currency_code": "EUR"},
        "AggregateLogEvents",
        logs_pb2.AggregateLogEventsRequest(filter="x", currency_code="EUR"),
    ),
    Case(
        L,
        "get_ingestion_stats",
        {"client_id": "svc"},
        "GetIngestionStats",
        logs_pb2.GetIngestionStatsRequest(client_id="svc"),
    ),
]

# The all-pages twins and the streams, tested below: (client, attribute, rpc, keyword arguments).
PAGED = [
    (R, "list_models", "ListModels", {"filter": "x"}),
    (R, "list_model_versions", "ListModelVersions", {"parent": "models/chat"}),
    (R, "list_aliases", "ListAliases", {"parent": "models/chat"}),
    (R, "list_alias_history", "ListAliasHistory", {"parent": "models/chat"}),
    (D, "list_deployments", "ListDeployments", {}),
    (D, "list_rollouts", "ListRollouts", {"parent": DEPLOYMENT.name}),
    (D, "list_deployment_history", "ListDeploymentHistory", {"parent": DEPLOYMENT.name}),
    (G, "list_policies", "ListPolicies", {}),
    (G, "list_policy_revisions", "ListPolicyRevisions", {"name": POLICY.name}),
    (G, "list_violations", "ListViolations", {}),
    (L, "query_log_events", "QueryLogEvents", {"filter": "x"}),
]
STREAMS = {(R, "watch_models"), (D, "watch_deployment"), (L, "tail_log_events")}


def test_every_method_of_every_table_has_a_case() -> None:
    tested = {(case.kind, case.attribute) for case in CASES} | {(k, a) for k, a, _, _ in PAGED} | STREAMS
    described = {
        (kind, name)
        for kind, table in TABLES.items()
        for name, value in vars(table).items()
        if isinstance(value, DescribedMethod)
    }
    assert tested == described


def test_every_rpc_of_every_service_is_a_method_but_the_client_streams() -> None:
    called = {(case.kind, case.rpc) for case in CASES} | {(k, rpc) for k, _, rpc, _ in PAGED}
    called |= {(R, "WatchModels"), (D, "WatchDeployment"), (L, "TailLogEvents")}
    every = {(kind, rpc) for kind, service in SERVICES.items() for rpc in service.methods_by_name}
    # CheckStream is each guardrail client's own method (tested below); StreamLogEvents is LogShipper's.
    assert every - called == {(G, "CheckStream"), (L, "StreamLogEvents")}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.attribute)
def test_each_method_sends_its_request_with_the_metadata_and_returns_the_result(rig: Rig, case: Case) -> None:
    client = rig.client(case.kind, metadata=[("authorization", "Bearer t")])
    result = rig.run(lambda: getattr(client, case.attribute)(**case.kwargs))
    invocation_metadata, request, rpc = rig.channel.take_unary_unary(method(case.kind, case.rpc))
    response_type = method(case.kind, case.rpc).output_type._concrete_class
    response = response_type()
    rpc.terminate(response, (), grpc.StatusCode.OK, "")
    result.result(timeout=10)

    assert ("authorization", "Bearer t") in list(invocation_metadata)
    sent = type(request)()
    sent.CopyFrom(request)
    if case.mutation:
        # No request id given: the client made one, a UUID.
        assert uuid.UUID(sent.request_id)
        sent.ClearField("request_id")
    assert sent == case.request


def test_a_given_request_id_is_sent_as_it_is(rig: Rig) -> None:
    client = rig.client(R)
    result = rig.run(lambda: client.delete_model(name="models/chat", request_id="mine"))
    _, request, rpc = rig.channel.take_unary_unary(method(R, "DeleteModel"))
    rpc.terminate(registry_pb2.DeleteModelResponse(), (), grpc.StatusCode.OK, "")
    assert result.result(timeout=10) is None
    assert request.request_id == "mine"


def test_unary_results_are_the_field_the_method_names(rig: Rig) -> None:
    client = rig.client(R)
    result = rig.run(lambda: client.get_model(name="models/chat"))
    _, _, rpc = rig.channel.take_unary_unary(method(R, "GetModel"))
    rpc.terminate(registry_pb2.GetModelResponse(model=MODEL), (), grpc.StatusCode.OK, "")
    assert result.result(timeout=10) == MODEL


def first_string_field(message_type: type[Message]) -> str:
    return next(
        f.name for f in message_type.DESCRIPTOR.fields if f.type == f.TYPE_STRING and not f.is_repeated
    )


@pytest.mark.parametrize(("kind", "attribute", "rpc_name", "kwargs"), PAGED, ids=[p[1] for p in PAGED])
def test_the_all_pages_iterator_walks_every_page(
    rig: Rig, kind: type[SyncServiceClient], attribute: str, rpc_name: str, kwargs: dict[str, Any]
) -> None:
    descriptor = method(kind, rpc_name)
    response_type = descriptor.output_type._concrete_class
    items_field = next(f for f in descriptor.output_type.fields if f.is_repeated)
    item_type = items_field.message_type._concrete_class
    key = first_string_field(item_type)
    items = [item_type(**{key: f"item-{n}"}) for n in range(3)]
    client = rig.client(kind)
    result = rig.run(lambda: list(getattr(client, attribute)(page_size=2, **kwargs)))

    tokens = []
    for page_items, next_token in ((items[:2], "page-2"), (items[2:], "")):
        _, request, rpc = rig.channel.take_unary_unary(descriptor)
        tokens.append(request.page_token)
        assert request.page_size == 2
        for name, value in kwargs.items():
            assert getattr(request, name) == value
        response = response_type(next_page_token=next_token)
        getattr(response, items_field.name).extend(page_items)
        rpc.terminate(response, (), grpc.StatusCode.OK, "")
    assert result.result(timeout=10) == items
    assert tokens == ["", "page-2"]


def test_unavailable_is_retried_no_sooner_than_retry_info_with_the_same_request_id(rig: Rig) -> None:
    client = rig.client(R)
    start = rig.time.time()
    result = rig.run(lambda: client.set_alias(name="models/chat/aliases/prod", version=VERSION.name))
    _, first, rpc = rig.channel.take_unary_unary(method(R, "SetAlias"))
    rpc.terminate(None, unavailable(retry_after=2.5), grpc.StatusCode.UNAVAILABLE, "storage is unavailable")
    _, second, rpc = rig.channel.take_unary_unary(method(R, "SetAlias"))
    alias = registry_pb2.ModelAlias(name="models/chat/aliases/prod", version=VERSION.name)
    rpc.terminate(registry_pb2.SetAliasResponse(alias=alias), (), grpc.StatusCode.OK, "")

    assert result.result(timeout=10) == alias
    assert second.request_id == first.request_id != ""
    # The wait (on the fake clock) was at least what the server asked for.
    assert rig.time.time() - start >= 2.5


def test_invalid_argument_is_raised_at_once_with_its_field_paths(rig: Rig) -> None:
    client = rig.client(R)
    result = rig.run(lambda: client.create_model(model_id="Bad Id", model=MODEL))
    _, _, rpc = rig.channel.take_unary_unary(method(R, "CreateModel"))
    bad_request = error_details_pb2.BadRequest(
        field_violations=[{"field": "model_id", "description": "use lower-case letters, digits and dashes"}]
    )
    info = error_details_pb2.ErrorInfo(reason="INVALID_FIELD", domain="modelplane")
    trailer = status_trailer(grpc.StatusCode.INVALID_ARGUMENT, "model_id is invalid", info, bad_request)
    rpc.terminate(None, trailer, grpc.StatusCode.INVALID_ARGUMENT, "model_id is invalid")

    with pytest.raises(errors.InvalidField) as raised:
        result.result(timeout=10)
    assert [violation.field for violation in raised.value.field_violations] == ["model_id"]
    assert raised.value.message == "model_id is invalid"
    # No second attempt was made: the next call is a new one, with its own request.
    follow = rig.run(lambda: client.get_model(name="models/x"))
    rig.channel.take_unary_unary(method(R, "GetModel"))[2].terminate(
        registry_pb2.GetModelResponse(), (), grpc.StatusCode.OK, ""
    )
    follow.result(timeout=10)


@pytest.mark.parametrize(
    ("reason", "code", "error_class"),
    [
        ("MODEL_NOT_FOUND", grpc.StatusCode.NOT_FOUND, errors.ModelNotFound),
        ("ETAG_MISMATCH", grpc.StatusCode.ABORTED, errors.EtagMismatch),
        ("TOKEN_INVALID", grpc.StatusCode.UNAUTHENTICATED, errors.TokenInvalid),
        ("", grpc.StatusCode.INTERNAL, errors.Internal),
    ],
)
def test_errors_are_decoded_as_the_async_client_decodes_them(
    rig: Rig, reason: str, code: grpc.StatusCode, error_class: type[errors.ModelplaneError]
) -> None:
    client = rig.client(R)
    result = rig.run(lambda: client.get_model(name="models/x"))
    _, _, rpc = rig.channel.take_unary_unary(method(R, "GetModel"))
    details = [error_details_pb2.ErrorInfo(reason=reason, domain="modelplane")] if reason else []
    rpc.terminate(None, (*status_trailer(code, "no", *details), ("x-request-id", "req-9")), code, "no")
    with pytest.raises(error_class) as raised:
        result.result(timeout=10)
    assert type(raised.value) is error_class
    assert (raised.value.reason, raised.value.request_id) == (reason, "req-9")


def test_a_retry_that_could_not_start_before_the_deadline_is_not_made(rig: Rig) -> None:
    client = rig.client(R, timeout=3.0)
    result = rig.run(lambda: client.get_model(name="models/chat"))
    _, _, rpc = rig.channel.take_unary_unary(method(R, "GetModel"))
    rpc.terminate(None, unavailable(retry_after=5.0), grpc.StatusCode.UNAVAILABLE, "storage is unavailable")
    # RetryInfo asks for 5 s, past the call's 3 s deadline: the server's error is raised, not a timeout.
    with pytest.raises(errors.StorageUnavailable) as raised:
        result.result(timeout=10)
    assert raised.value.retry_after == 5.0


def test_calls_have_a_default_deadline_of_ten_seconds(rig: Rig) -> None:
    client = rig.client(R)
    assert client.timeout == DEFAULT_TIMEOUT == 10.0
    result = rig.run(lambda: client.get_model(name="models/chat"))
    rig.channel.take_unary_unary(method(R, "GetModel"))[2].terminate(
        None, unavailable(retry_after=11.0), grpc.StatusCode.UNAVAILABLE, "storage is unavailable"
    )
    # A wait of 11 s would end past the default deadline: no retry.
    with pytest.raises(errors.StorageUnavailable):
        result.result(timeout=10)


def test_the_per_call_timeout_overrides_the_clients_default(rig: Rig) -> None:
    client = rig.client(R, timeout=3.0)
    result = rig.run(lambda: client.get_model(name="models/chat", timeout=60.0))
    rig.channel.take_unary_unary(method(R, "GetModel"))[2].terminate(
        None, unavailable(retry_after=5.0), grpc.StatusCode.UNAVAILABLE, "storage is unavailable"
    )
    # 60 s leave room for the 5 s wait: a second attempt comes.
    rig.channel.take_unary_unary(method(R, "GetModel"))[2].terminate(
        registry_pb2.GetModelResponse(model=MODEL), (), grpc.StatusCode.OK, ""
    )
    assert result.result(timeout=10) == MODEL


def test_attempts_are_bounded_by_the_retry_policy(rig: Rig) -> None:
    client = rig.client(R, retry=RetryPolicy(max_attempts=2))
    result = rig.run(lambda: client.get_model(name="models/chat"))
    for _ in range(2):
        rig.channel.take_unary_unary(method(R, "GetModel"))[2].terminate(
            None, unavailable(retry_after=None), grpc.StatusCode.UNAVAILABLE, "storage is unavailable"
        )
    with pytest.raises(errors.StorageUnavailable):
        result.result(timeout=10)


def change(revision: int, name: str) -> registry_pb2.WatchModelsResponse:
    return registry_pb2.WatchModelsResponse(change=registry_pb2.ModelChange(revision=revision, resource=name))


def test_a_broken_watch_is_reopened_where_it_stopped_with_no_gap_and_no_repeat(rig: Rig) -> None:
    client = rig.client(R)
    received: queue.Queue[registry_pb2.WatchModelsResponse] = queue.Queue()

    def read_three() -> None:
        stream = client.watch_models(start_revision=5)
        for _ in range(3):
            received.put(next(stream))
        stream.close()

    done = rig.run(read_three)
    descriptor = method(R, "WatchModels")
    _, first, rpc = rig.channel.take_unary_stream(descriptor)
    rpc.send_response(change(5, "models/a"))
    rpc.send_response(change(6, "models/b"))
    # grpc_testing drops unread messages of a failed call: break the stream once the client has both.
    revisions = [received.get(timeout=10).change.revision for _ in range(2)]
    rpc.terminate(unavailable(retry_after=1.0), grpc.StatusCode.UNAVAILABLE, "shutting down")
    _, second, rpc = rig.channel.take_unary_stream(descriptor)
    # Reopened at the last change's revision (inclusive); the change of it already delivered is dropped.
    rpc.send_response(change(6, "models/b"))
    rpc.send_response(change(7, "models/c"))
    revisions.append(received.get(timeout=10).change.revision)
    done.result(timeout=10)
    assert (first.start_revision, second.start_revision) == (5, 6)
    assert revisions == [5, 6, 7]
    # Closing the iterator cancelled the call (grpc_testing's cancelled() blocks until the client cancels).
    rpc.cancelled()


def test_a_watch_error_that_is_not_unavailable_ends_the_watch(rig: Rig) -> None:
    client = rig.client(D)
    result = rig.run(lambda: list(client.watch_deployment(deployment=DEPLOYMENT.name, start_revision=1)))
    _, request, rpc = rig.channel.take_unary_stream(method(D, "WatchDeployment"))
    info = error_details_pb2.ErrorInfo(reason="REVISION_COMPACTED", domain="modelplane")
    trailer = status_trailer(grpc.StatusCode.OUT_OF_RANGE, "compacted", info)
    rpc.terminate(trailer, grpc.StatusCode.OUT_OF_RANGE, "compacted")
    with pytest.raises(errors.RevisionCompacted):
        result.result(timeout=10)
    assert (request.deployment, request.start_revision) == (DEPLOYMENT.name, 1)


def test_tail_yields_each_event_of_each_message_and_raises_the_end(rig: Rig) -> None:
    client = rig.client(L)
    result = rig.run(lambda: [event.event_id for event in client.tail_log_events(filter="x")])
    _, request, rpc = rig.channel.take_unary_stream(method(L, "TailLogEvents"))
    rpc.send_response(logs_pb2.TailLogEventsResponse(events=[EVENT, logs_pb2.LogEvent(event_id="e2")]))
    rpc.terminate((), grpc.StatusCode.OK, "")
    assert result.result(timeout=10) == ["e1", "e2"]
    assert request.filter == "x"


def stream_reply(**event: Any) -> guardrails_pb2.CheckStreamResponse:
    return guardrails_pb2.CheckStreamResponse(**event)


def test_check_stream_sends_start_and_chunks_and_learns_of_a_block_before_the_end(rig: Rig) -> None:
    client = rig.client(G, metadata=[("authorization", "Bearer t")])

    def check() -> tuple[Any, ...]:
        with client.check_stream(policy=POLICY.name, policy_revision=3) as session:
            session.send("Once upon a time, ")
            session.send("kill")
            early = session.wait_blocked()
            blocked_early = session.blocked
            session.send(" the dragon")
            final = session.finish()
            return early, blocked_early, final, session.violations, session.received_chars

    result = rig.run(check)
    metadata, rpc = rig.channel.take_stream_stream(method(G, "CheckStream"))
    start = rpc.take_request().start
    assert (start.policy, start.policy_revision) == (POLICY.name, 3)
    assert uuid.UUID(start.request_id)
    assert ("authorization", "Bearer t") in list(metadata)
    assert [rpc.take_request().chunk for _ in range(2)] == ["Once upon a time, ", "kill"]
    violation = guardrails_pb2.Violation(rule_id="violence")
    rpc.send_response(
        stream_reply(progress=guardrails_pb2.CheckStreamProgress(received_chars=22, violations=[violation]))
    )
    early = guardrails_pb2.CheckVerdict(decision=guardrails_pb2.DECISION_BLOCK, final=False)
    rpc.send_response(stream_reply(verdict=early))
    assert rpc.take_request().chunk == " the dragon"
    assert rpc.take_request().HasField("end")
    rpc.requests_closed()
    final = guardrails_pb2.CheckVerdict(
        decision=guardrails_pb2.DECISION_BLOCK, final=True, violations=[violation]
    )
    rpc.send_response(stream_reply(verdict=final))
    rpc.terminate((), grpc.StatusCode.OK, "")

    assert result.result(timeout=10) == (early, True, final, (violation,), 22)


def test_check_stream_raises_the_calls_error_from_finish(rig: Rig) -> None:
    client = rig.client(G)

    def check() -> None:
        with client.check_stream(policy="policies/missing") as session:
            session.send("text")
            session.finish()

    result = rig.run(check)
    _, rpc = rig.channel.take_stream_stream(method(G, "CheckStream"))
    rpc.take_request()
    info = error_details_pb2.ErrorInfo(reason="POLICY_NOT_FOUND", domain="modelplane")
    trailer = status_trailer(grpc.StatusCode.NOT_FOUND, "no such policy", info)
    rpc.terminate(trailer, grpc.StatusCode.NOT_FOUND, "no such policy")
    with pytest.raises(errors.PolicyNotFound):
        result.result(timeout=10)


def test_leaving_check_stream_before_finish_cancels_the_call(rig: Rig) -> None:
    client = rig.client(G)

    def abandon() -> None:
        with client.check_stream(policy=POLICY.name) as session:
            session.send("half a sto")

    result = rig.run(abandon)
    _, rpc = rig.channel.take_stream_stream(method(G, "CheckStream"))
    # grpc_testing's cancelled() blocks until the client cancels.
    rpc.cancelled()
    result.result(timeout=10)
