"""The methods of the deployment manager's clients (modelplane.v1.DeploymentService), async and sync alike.

Methods take keyword arguments and return the protobuf messages of modelplane.v1.deployments_pb2; every
mutation (rollout actions and health reports included) carries a request id, a random UUID unless the
caller gives one, the same on each retry. PlanRollout is a dry run and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from google.protobuf import field_mask_pb2

from modelplane.client.base import ensure_request_id
from modelplane.client.methods import Paged, Unary, Watch, duration, page, pages, unary, watch, whole_response
from modelplane.client.resumable_stream import WATCH_RESUME_POLICY
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import deployments_pb2 as pb

__all__ = ["DeploymentMethods"]

# Deployments.


def create_deployment(
    *,
    deployment_id: str,
    deployment: pb.Deployment,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.CreateDeploymentResponse, pb.Deployment]:
    """Creates "deployments/{deployment_id}" serving its stable slot. Raises DeploymentAlreadyExists,
    ModelNotFound, ModelVersionNotFound, InvalidArgument (an ARCHIVED version, a canary slot)."""
    request = pb.CreateDeploymentRequest(
        deployment_id=deployment_id, deployment=deployment, request_id=ensure_request_id(request_id)
    )
    return Unary("CreateDeployment", request, lambda response: response.deployment, timeout)


def get_deployment(
    *, name: str, timeout: float | None = None
) -> Unary[pb.GetDeploymentResponse, pb.Deployment]:
    """Gets a deployment with its current traffic table. Raises DeploymentNotFound."""
    request = pb.GetDeploymentRequest(name=name)
    return Unary("GetDeployment", request, lambda response: response.deployment, timeout)


def list_deployments(
    *, model: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListDeploymentsResponse, pb.Deployment]:
    """Deployments (of `model` only, when given). Raises InvalidPageToken, InvalidArgument."""
    request = pb.ListDeploymentsRequest(model=model, page_size=page_size, page_token=page_token)
    return Paged("ListDeployments", request, lambda response: response.deployments, timeout)


def update_deployment(
    *,
    deployment: pb.Deployment,
    update_mask: Sequence[str],
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.UpdateDeploymentResponse, pb.Deployment]:
    """Changes the fields of `deployment` named in update_mask; a set etag must be current. Raises
    DeploymentNotFound, EtagMismatch, RolloutInProgress, InvalidArgument."""
    request = pb.UpdateDeploymentRequest(
        deployment=deployment,
        update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
        request_id=ensure_request_id(request_id),
    )
    return Unary("UpdateDeployment", request, lambda response: response.deployment, timeout)


def delete_deployment(
    *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.DeleteDeploymentResponse, None]:
    """Deletes a deployment (the registry alias stays). Raises DeploymentNotFound, EtagMismatch,
    RolloutInProgress."""
    request = pb.DeleteDeploymentRequest(name=name, etag=etag, request_id=ensure_request_id(request_id))
    return Unary("DeleteDeployment", request, lambda response: None, timeout)


# Rollouts.


def start_rollout(
    *, parent: str, rollout: pb.Rollout, request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.StartRolloutResponse, pb.StartRolloutResponse]:
    """Starts a rollout of `parent` to rollout.target_version; returns the rollout and the deployment.
    A CANARY rollout with timed steps may carry `rollout.analysis` (pb.RolloutAnalysis: gates on the log
    collector's signals, checked by the server before each timed step; the rollout's gate_evaluations and
    the history entries show each verdict). Raises DeploymentNotFound, ModelVersionNotFound,
    RolloutInProgress, InvalidArgument (an ARCHIVED version, steps whose weights do not make sense, bad
    gates, with field paths such as "rollout.analysis.gates[0].bound.max_ratio")."""
    request = pb.StartRolloutRequest(parent=parent, rollout=rollout, request_id=ensure_request_id(request_id))
    return Unary("StartRollout", request, whole_response, timeout)


def plan_rollout(
    *, parent: str, rollout: pb.Rollout, timeout: float | None = None
) -> Unary[pb.PlanRolloutResponse, pb.PlanRolloutResponse]:
    """StartRollout as a dry run: the traffic table of each stage, and in gate_evaluations what each
    analysis gate would decide now (figures of both slots, sample sizes, verdict); changes nothing.
    Raises as start_rollout does."""
    request = pb.PlanRolloutRequest(parent=parent, rollout=rollout)
    return Unary("PlanRollout", request, whole_response, timeout)


def get_rollout(*, name: str, timeout: float | None = None) -> Unary[pb.GetRolloutResponse, pb.Rollout]:
    """Gets a rollout. Raises RolloutNotFound."""
    return Unary("GetRollout", pb.GetRolloutRequest(name=name), lambda response: response.rollout, timeout)


def list_rollouts(
    *, parent: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListRolloutsResponse, pb.Rollout]:
    """A deployment's rollouts. Raises DeploymentNotFound, InvalidPageToken."""
    request = pb.ListRolloutsRequest(parent=parent, page_size=page_size, page_token=page_token)
    return Paged("ListRollouts", request, lambda response: response.rollouts, timeout)


def promote_rollout(
    *,
    name: str,
    to_end: bool = False,
    reason: str = "",
    etag: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.PromoteRolloutResponse, pb.PromoteRolloutResponse]:
    """Moves a rollout to its next step, or with `to_end` to the end (success: the alias moves). Raises
    RolloutNotFound, EtagMismatch, IllegalTransition, VersionArchived."""
    request = pb.PromoteRolloutRequest(
        name=name, to_end=to_end, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
    )
    return Unary("PromoteRollout", request, whole_response, timeout)


def pause_rollout(
    *,
    name: str,
    reason: str = "",
    etag: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.PauseRolloutResponse, pb.PauseRolloutResponse]:
    """Stops a rollout where it is. Raises RolloutNotFound, EtagMismatch, IllegalTransition."""
    request = pb.PauseRolloutRequest(
        name=name, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
    )
    return Unary("PauseRollout", request, whole_response, timeout)


def resume_rollout(
    *,
    name: str,
    reason: str = "",
    etag: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.ResumeRolloutResponse, pb.ResumeRolloutResponse]:
    """Resumes a paused rollout. Raises RolloutNotFound, EtagMismatch, IllegalTransition."""
    request = pb.ResumeRolloutRequest(
        name=name, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
    )
    return Unary("ResumeRollout", request, whole_response, timeout)


def rollback_rollout(
    *,
    name: str,
    mode: pb.RollbackMode.ValueType = pb.ROLLBACK_MODE_INSTANT,
    step_interval: timedelta | None = None,
    reason: str = "",
    etag: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.RollbackRolloutResponse, pb.RollbackRolloutResponse]:
    """Rolls a rollout back: INSTANT removes the canary at once, STEPPED walks its weight back down the
    steps taken, one per `step_interval`. Raises RolloutNotFound, EtagMismatch, IllegalTransition,
    InvalidArgument."""
    request = pb.RollbackRolloutRequest(
        name=name,
        mode=mode,
        step_interval=duration(step_interval),
        reason=reason,
        etag=etag,
        request_id=ensure_request_id(request_id),
    )
    return Unary("RollbackRollout", request, whole_response, timeout)


def abort_rollout(
    *,
    name: str,
    reason: str = "",
    etag: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.AbortRolloutResponse, pb.AbortRolloutResponse]:
    """Removes the canary and ends the rollout ABORTED. Raises RolloutNotFound, EtagMismatch,
    IllegalTransition."""
    request = pb.AbortRolloutRequest(
        name=name, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
    )
    return Unary("AbortRollout", request, whole_response, timeout)


# Endpoints, history and routing.


def report_endpoint_health(
    *, deployment: str, address: str, ready: bool, request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.ReportEndpointHealthResponse, pb.ReportEndpointHealthResponse]:
    """Records whether one endpoint is ready; `changed` says whether the report changed anything.
    Raises DeploymentNotFound, InvalidArgument."""
    request = pb.ReportEndpointHealthRequest(
        deployment=deployment, address=address, ready=ready, request_id=ensure_request_id(request_id)
    )
    return Unary("ReportEndpointHealth", request, whole_response, timeout)


def list_deployment_history(
    *, parent: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListDeploymentHistoryResponse, pb.DeploymentHistoryEntry]:
    """A deployment's transitions, newest first. Raises DeploymentNotFound, InvalidPageToken."""
    request = pb.ListDeploymentHistoryRequest(parent=parent, page_size=page_size, page_token=page_token)
    return Paged("ListDeploymentHistory", request, lambda response: response.entries, timeout)


def resolve_route(
    *, deployment: str, routing_key: str = "", timeout: float | None = None
) -> Unary[pb.ResolveRouteResponse, pb.ResolveRouteResponse]:
    """Where one request goes (endpoint, model version, slot); empty routing_key: a random choice.
    Raises DeploymentNotFound, NoReadyEndpoint."""
    request = pb.ResolveRouteRequest(deployment=deployment, routing_key=routing_key)
    return Unary("ResolveRoute", request, whole_response, timeout)


def watch_deployment(
    *,
    deployment: str,
    start_revision: int = 0,
    resume: bool = True,
    timeout: float | None = None,
    retry: RetryPolicy = WATCH_RESUME_POLICY,
) -> Watch[pb.WatchDeploymentResponse]:
    """A deployment's changes: with start_revision 0 first its current state (or a progress mark if it
    does not exist), then every change after it; otherwise every change from start_revision on
    (inclusive: 1 replays every change kept); in revision order, and progress marks while idle.

    With `resume`, a stream broken by UNAVAILABLE is reopened where it stopped, after the waits of
    `retry` (whose max_attempts bounds consecutive failed reopenings), so the caller sees no gap and no
    repeat. `timeout` (default: none) bounds the whole watch. Raises RevisionCompacted when a change
    from start_revision on is no longer kept.
    """

    def request_at(revision: int) -> pb.WatchDeploymentRequest:
        return pb.WatchDeploymentRequest(deployment=deployment, start_revision=revision)

    return Watch("WatchDeployment", request_at, start_revision, resume, timeout, retry)


class DeploymentMethods:
    """The methods of DeploymentService's clients. The `*_page` methods return one page (the whole
    response); their plain-named twins iterate over every item of every page from `page_token` on."""

    create_deployment = unary(create_deployment)
    get_deployment = unary(get_deployment)
    list_deployments_page = page(list_deployments)
    list_deployments = pages(list_deployments)
    update_deployment = unary(update_deployment)
    delete_deployment = unary(delete_deployment)
    start_rollout = unary(start_rollout)
    plan_rollout = unary(plan_rollout)
    get_rollout = unary(get_rollout)
    list_rollouts_page = page(list_rollouts)
    list_rollouts = pages(list_rollouts)
    promote_rollout = unary(promote_rollout)
    pause_rollout = unary(pause_rollout)
    resume_rollout = unary(resume_rollout)
    rollback_rollout = unary(rollback_rollout)
    abort_rollout = unary(abort_rollout)
    report_endpoint_health = unary(report_endpoint_health)
    list_deployment_history_page = page(list_deployment_history)
    list_deployment_history = pages(list_deployment_history)
    resolve_route = unary(resolve_route)
    watch_deployment = watch(watch_deployment)
