"""Token scopes: which values are scopes, and which request fields a scoped token's check reads."""

from __future__ import annotations

import pytest

from modelplane.server.auth.scopes import MAX_SCOPES, TokenScope, parse_scopes
from modelplane.server.errors import InvalidArgument, PermissionDenied
from modelplane.v1 import common_pb2, logs_pb2
from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import registry_pb2 as pb

SCOPE = TokenScope(("deployments/web", "models/chat-large"))


def test_scopes_are_checked_and_kept_once_in_order() -> None:
    assert parse_scopes([" models/chat-large", "deployments/web", "models/chat-large", "services/a.b_c"]) == (
        "models/chat-large",
        "deployments/web",
        "services/a.b_c",
    )


@pytest.mark.parametrize(
    "value", ["policies/x", "deployments/", "deployments/Web", "models/a/versions/1", "web", "services/", ""]
)
def test_what_is_not_a_scope_is_named_by_its_index(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_scopes(["deployments/web", value])
    assert raised.value.violations[0].field == "scopes[1]"


def test_scopes_are_bounded() -> None:
    with pytest.raises(InvalidArgument):
        parse_scopes([f"deployments/d{i}" for i in range(MAX_SCOPES + 1)])


def test_no_scopes_is_no_scope() -> None:
    assert TokenScope.of(()) is None
    assert TokenScope.of(("deployments/web",)) is TokenScope.of(("deployments/web",))


def _refused(request: object) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as raised:
        SCOPE.check(request)
    assert raised.value.reason == "OUT_OF_SCOPE"
    return raised.value


@pytest.mark.parametrize(
    "request_",
    [
        dpb.ReportEndpointHealthRequest(deployment="deployments/web", address="a:1"),
        dpb.GetRolloutRequest(name="deployments/web/rollouts/3"),
        pb.GetModelVersionRequest(name="models/chat-large/versions/2"),
        pb.ResolveModelRequest(alias="models/chat-large/aliases/prod"),
        # Kinds the scope does not mention, and free text, are not its business.
        logs_pb2.WriteLogEventsRequest(
            batch=logs_pb2.LogBatch(events=[logs_pb2.LogEvent(service="any", message="deployments/other")])
        ),
        gpb.CheckContentRequest(policy="policies/p", text="models/other", links=common_pb2.EventLinks()),
        pb.ListModelsRequest(filter='name = "models/other"'),
        b"raw bytes",
    ],
)
def test_inside_the_scope_passes(request_: object) -> None:
    SCOPE.check(request_)


@pytest.mark.parametrize(
    ("request_", "field", "resource"),
    [
        (
            dpb.ReportEndpointHealthRequest(deployment="deployments/db", address="a:1"),
            "deployment",
            "deployments/db",
        ),
        (dpb.CreateDeploymentRequest(deployment_id="db"), "deployment_id", "deployments/db"),
        (
            dpb.CreateDeploymentRequest(deployment_id="web", deployment=dpb.Deployment(model="models/other")),
            "deployment.model",
            "models/other",
        ),
        (pb.ListModelVersionsRequest(parent="models/-"), "parent", "models/-"),
        (
            pb.SetAliasRequest(name="models/chat-large/aliases/x", version="models/x/versions/1"),
            "version",
            "models/x",
        ),
        (
            gpb.CheckContentRequest(links=common_pb2.EventLinks(deployment="deployments/db")),
            "links.deployment",
            "deployments/db",
        ),
        (
            logs_pb2.WriteLogEventsRequest(
                batch=logs_pb2.LogBatch(
                    events=[
                        logs_pb2.LogEvent(),
                        logs_pb2.LogEvent(routing=logs_pb2.RoutingPayload(deployment="deployments/db")),
                    ]
                )
            ),
            "batch.events[1].routing.deployment",
            "deployments/db",
        ),
    ],
)
def test_outside_the_scope_is_refused_with_its_field(request_: object, field: str, resource: str) -> None:
    refused = _refused(request_)
    assert refused.metadata == {"resource": resource, "field": field}


def test_a_services_scope_limits_log_services() -> None:
    scope = TokenScope(("services/checkout",))
    ok = logs_pb2.WriteLogEventsRequest(
        batch=logs_pb2.LogBatch(events=[logs_pb2.LogEvent(service="checkout")])
    )
    scope.check(ok)
    bad = logs_pb2.WriteLogEventsRequest(
        batch=logs_pb2.LogBatch(events=[logs_pb2.LogEvent(service="billing")])
    )
    with pytest.raises(PermissionDenied) as raised:
        scope.check(bad)
    assert raised.value.metadata["resource"] == "services/billing"
