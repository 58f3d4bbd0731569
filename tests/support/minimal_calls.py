"""The smallest request of every RPC that reaches its service without changing anything, and the code it
gets once auth lets it through: the auth matrix calls each one with every role, the HTTP tests call each
one over HTTP and over gRPC and compare the answers."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as otlp_logs

from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import registry_pb2 as pb

MISSING = "models/auth-matrix-missing"
MISSING_POLICY = "policies/auth-matrix-missing"
MISSING_DEPLOYMENT = "deployments/auth-matrix-missing"
MISSING_ROLLOUT = f"{MISSING_DEPLOYMENT}/rollouts/1"


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


# By service name, then RPC name: the smallest request of each RPC that reaches the service without changing
# anything, and the code it gets once auth lets it through. NOT_FOUND on a missing resource proves that auth
# passed and the store ran. A bidirectional stream sends its one request and then closes its side.
VALID_ROLLOUT = dpb.Rollout(
    target_version=f"{MISSING}/versions/1",
    endpoints=[dpb.Endpoint(address="10.0.0.1:8000")],
    strategy=dpb.ROLLOUT_STRATEGY_IMMEDIATE,
)
MINIMAL_CALLS: dict[str, dict[str, tuple[Message, grpc.StatusCode]]] = {
    "ModelRegistryService": {
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
        "GetModelVersion": (
            pb.GetModelVersionRequest(name=f"{MISSING}/versions/1"),
            grpc.StatusCode.NOT_FOUND,
        ),
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
    },
    "GuardrailService": {
        "CreatePolicy": (
            gpb.CreatePolicyRequest(
                policy_id="Not A Policy Id", policy=gpb.Policy(fail_mode=gpb.FAIL_MODE_CLOSED)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "GetPolicy": (gpb.GetPolicyRequest(name=MISSING_POLICY), grpc.StatusCode.NOT_FOUND),
        "ListPolicies": (gpb.ListPoliciesRequest(), grpc.StatusCode.OK),
        "UpdatePolicy": (
            gpb.UpdatePolicyRequest(
                policy=gpb.Policy(name=MISSING_POLICY, display_name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        "DeletePolicy": (gpb.DeletePolicyRequest(name=MISSING_POLICY), grpc.StatusCode.NOT_FOUND),
        "ListPolicyRevisions": (
            gpb.ListPolicyRevisionsRequest(name=MISSING_POLICY),
            grpc.StatusCode.NOT_FOUND,
        ),
        "CheckContent": (
            gpb.CheckContentRequest(policy=MISSING_POLICY, text="hello"),
            grpc.StatusCode.NOT_FOUND,
        ),
        # The start alone: the policy is looked up as soon as it arrives.
        "CheckStream": (
            gpb.CheckStreamRequest(start=gpb.CheckStreamStart(policy=MISSING_POLICY)),
            grpc.StatusCode.NOT_FOUND,
        ),
        "ListViolations": (gpb.ListViolationsRequest(), grpc.StatusCode.OK),
        "AggregateViolations": (gpb.AggregateViolationsRequest(), grpc.StatusCode.OK),
        "SetShadowRevision": (
            gpb.SetShadowRevisionRequest(name=MISSING_POLICY, revision=2),
            grpc.StatusCode.NOT_FOUND,
        ),
        "ClearShadowRevision": (
            gpb.ClearShadowRevisionRequest(name=MISSING_POLICY),
            grpc.StatusCode.NOT_FOUND,
        ),
        "PromoteShadowRevision": (
            gpb.PromoteShadowRevisionRequest(name=MISSING_POLICY),
            grpc.StatusCode.NOT_FOUND,
        ),
        "GetShadowReport": (gpb.GetShadowReportRequest(name=MISSING_POLICY), grpc.StatusCode.NOT_FOUND),
    },
    "DeploymentService": {
        "CreateDeployment": (
            dpb.CreateDeploymentRequest(deployment_id="Not A Deployment Id", deployment=dpb.Deployment()),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "GetDeployment": (dpb.GetDeploymentRequest(name=MISSING_DEPLOYMENT), grpc.StatusCode.NOT_FOUND),
        "ListDeployments": (dpb.ListDeploymentsRequest(), grpc.StatusCode.OK),
        "UpdateDeployment": (
            dpb.UpdateDeploymentRequest(
                deployment=dpb.Deployment(name=MISSING_DEPLOYMENT, description="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        "DeleteDeployment": (dpb.DeleteDeploymentRequest(name=MISSING_DEPLOYMENT), grpc.StatusCode.NOT_FOUND),
        # A valid rollout: every field is checked before the deployment is looked up.
        "StartRollout": (
            dpb.StartRolloutRequest(parent=MISSING_DEPLOYMENT, rollout=VALID_ROLLOUT),
            grpc.StatusCode.NOT_FOUND,
        ),
        "PlanRollout": (
            dpb.PlanRolloutRequest(parent=MISSING_DEPLOYMENT, rollout=VALID_ROLLOUT),
            grpc.StatusCode.NOT_FOUND,
        ),
        "GetRollout": (dpb.GetRolloutRequest(name=MISSING_ROLLOUT), grpc.StatusCode.NOT_FOUND),
        "ListRollouts": (dpb.ListRolloutsRequest(parent=MISSING_DEPLOYMENT), grpc.StatusCode.NOT_FOUND),
        "PromoteRollout": (dpb.PromoteRolloutRequest(name=MISSING_ROLLOUT), grpc.StatusCode.NOT_FOUND),
        "PauseRollout": (dpb.PauseRolloutRequest(name=MISSING_ROLLOUT), grpc.StatusCode.NOT_FOUND),
        "ResumeRollout": (dpb.ResumeRolloutRequest(name=MISSING_ROLLOUT), grpc.StatusCode.NOT_FOUND),
        "RollbackRollout": (
            dpb.RollbackRolloutRequest(name=MISSING_ROLLOUT, mode=dpb.ROLLBACK_MODE_INSTANT),
            grpc.StatusCode.NOT_FOUND,
        ),
        "AbortRollout": (dpb.AbortRolloutRequest(name=MISSING_ROLLOUT), grpc.StatusCode.NOT_FOUND),
        "ReportEndpointHealth": (
            dpb.ReportEndpointHealthRequest(deployment=MISSING_DEPLOYMENT, address="10.0.0.1:80", ready=True),
            grpc.StatusCode.NOT_FOUND,
        ),
        "ListDeploymentHistory": (
            dpb.ListDeploymentHistoryRequest(parent=MISSING_DEPLOYMENT),
            grpc.StatusCode.NOT_FOUND,
        ),
        "ResolveRoute": (dpb.ResolveRouteRequest(deployment=MISSING_DEPLOYMENT), grpc.StatusCode.NOT_FOUND),
        # A missing deployment at start_revision 0: a progress mark first.
        "WatchDeployment": (dpb.WatchDeploymentRequest(deployment=MISSING_DEPLOYMENT), grpc.StatusCode.OK),
    },
    "LogsService": {
        # An empty OTLP export stores nothing and succeeds.
        "Export": (otlp_logs.ExportLogsServiceRequest(), grpc.StatusCode.OK),
    },
    "LogService": {
        # An empty batch still commits its counters and is acknowledged.
        "WriteLogEvents": (lpb.WriteLogEventsRequest(batch=lpb.LogBatch()), grpc.StatusCode.OK),
        "StreamLogEvents": (
            lpb.StreamLogEventsRequest(batch=lpb.LogBatch(client_id="auth-matrix", sequence=1)),
            grpc.StatusCode.OK,
        ),
        "QueryLogEvents": (lpb.QueryLogEventsRequest(), grpc.StatusCode.OK),
        # A tail sends nothing until an event commits; a bad filter answers at once.
        "TailLogEvents": (lpb.TailLogEventsRequest(filter="level ="), grpc.StatusCode.INVALID_ARGUMENT),
        "AggregateLogEvents": (lpb.AggregateLogEventsRequest(), grpc.StatusCode.OK),
        "GetIngestionStats": (lpb.GetIngestionStatsRequest(), grpc.StatusCode.OK),
    },
}
