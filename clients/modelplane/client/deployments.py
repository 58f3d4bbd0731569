"""The typed async client of the deployment manager (modelplane.v1.DeploymentService).

Methods take keyword arguments and return the protobuf messages of modelplane.v1.deployments_pb2. Every
unary call has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to
override it), and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass
(DeploymentNotFound, RolloutInProgress, IllegalTransition, NoReadyEndpoint, ...).

Retries: a unary call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter
within its one deadline, as in the registry client. Reads are safe to repeat; every mutation (rollout
actions and health reports included) carries a request id, a random UUID unless the caller gives one, sent
unchanged on each retry, so the server runs it once. PlanRollout is a dry run and changes nothing.

`watch_deployment` streams a deployment's state: first the current one, then every change; with `resume`,
a stream broken by UNAVAILABLE is reopened where it stopped (modelplane.client.resumable_stream).
"""

# The `timeout` parameters are gRPC deadlines handed to the channel, not asyncio timeouts.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from modelplane.client.base import ServiceClient, ensure_request_id, pages
from modelplane.client.resumable_stream import WATCH_RESUME_POLICY, resumable_watch
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import deployments_pb2, deployments_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.v1.deployments_pb2_grpc import DeploymentServiceAsyncStub

__all__ = ["DeploymentClient"]


def _duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


class DeploymentClient(ServiceClient):
    """Client of DeploymentService, built from a `Connection` or from a grpc.aio channel.

    Used as `async with`, it closes what it was built from (the connection or the channel) on exit; do not
    do that with a channel other code still uses.
    """

    def __init__(
        self,
        source: Connection | grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(source, metadata=metadata, timeout=timeout, retry=retry)
        self._stub: DeploymentServiceAsyncStub = deployments_pb2_grpc.DeploymentServiceStub(self._channel)

    # Deployments.

    async def create_deployment(
        self,
        *,
        deployment_id: str,
        deployment: deployments_pb2.Deployment,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.Deployment:
        """Creates "deployments/{deployment_id}" serving its stable slot. Raises DeploymentAlreadyExists,
        ModelNotFound, ModelVersionNotFound, InvalidArgument (an ARCHIVED version, a canary slot)."""
        request = deployments_pb2.CreateDeploymentRequest(
            deployment_id=deployment_id, deployment=deployment, request_id=ensure_request_id(request_id)
        )
        response = await self._unary(self._stub.CreateDeployment, request, timeout)
        return response.deployment

    async def get_deployment(self, *, name: str, timeout: float | None = None) -> deployments_pb2.Deployment:
        """Gets a deployment with its current traffic table. Raises DeploymentNotFound."""
        request = deployments_pb2.GetDeploymentRequest(name=name)
        response = await self._unary(self._stub.GetDeployment, request, timeout)
        return response.deployment

    async def list_deployments_page(
        self, *, model: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> deployments_pb2.ListDeploymentsResponse:
        """One page of deployments (of `model` only, when given). Raises InvalidPageToken, InvalidArgument."""
        request = deployments_pb2.ListDeploymentsRequest(
            model=model, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListDeployments, request, timeout)

    def list_deployments(
        self, *, model: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[deployments_pb2.Deployment, None]:
        """Every deployment (of `model` only, when given), page after page; `timeout` applies to each page."""

        async def fetch(token: str) -> tuple[Sequence[deployments_pb2.Deployment], str]:
            page = await self.list_deployments_page(
                model=model, page_size=page_size, page_token=token, timeout=timeout
            )
            return page.deployments, page.next_page_token

        return pages(fetch)

    async def update_deployment(
        self,
        *,
        deployment: deployments_pb2.Deployment,
        update_mask: Sequence[str],
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.Deployment:
        """Changes the fields of `deployment` named in update_mask; a set etag must be current. Raises
        DeploymentNotFound, EtagMismatch, RolloutInProgress, InvalidArgument."""
        request = deployments_pb2.UpdateDeploymentRequest(
            deployment=deployment,
            update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
            request_id=ensure_request_id(request_id),
        )
        response = await self._unary(self._stub.UpdateDeployment, request, timeout)
        return response.deployment

    async def delete_deployment(
        self, *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> None:
        """Deletes a deployment (the registry alias stays). Raises DeploymentNotFound, EtagMismatch,
        RolloutInProgress."""
        request = deployments_pb2.DeleteDeploymentRequest(
            name=name, etag=etag, request_id=ensure_request_id(request_id)
        )
        await self._unary(self._stub.DeleteDeployment, request, timeout)

    # Rollouts.

    async def start_rollout(
        self,
        *,
        parent: str,
        rollout: deployments_pb2.Rollout,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.StartRolloutResponse:
        """Starts a rollout of `parent` to rollout.target_version; returns the rollout and the deployment.
        Raises DeploymentNotFound, ModelVersionNotFound, RolloutInProgress, InvalidArgument (an ARCHIVED
        version, steps whose weights do not make sense, with field paths)."""
        request = deployments_pb2.StartRolloutRequest(
            parent=parent, rollout=rollout, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self._stub.StartRollout, request, timeout)

    async def plan_rollout(
        self, *, parent: str, rollout: deployments_pb2.Rollout, timeout: float | None = None
    ) -> deployments_pb2.PlanRolloutResponse:
        """StartRollout as a dry run: the traffic table of each stage; changes nothing. Raises as
        start_rollout does."""
        request = deployments_pb2.PlanRolloutRequest(parent=parent, rollout=rollout)
        return await self._unary(self._stub.PlanRollout, request, timeout)

    async def get_rollout(self, *, name: str, timeout: float | None = None) -> deployments_pb2.Rollout:
        """Gets a rollout. Raises RolloutNotFound."""
        request = deployments_pb2.GetRolloutRequest(name=name)
        response = await self._unary(self._stub.GetRollout, request, timeout)
        return response.rollout

    async def list_rollouts_page(
        self, *, parent: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> deployments_pb2.ListRolloutsResponse:
        """One page of a deployment's rollouts. Raises DeploymentNotFound, InvalidPageToken."""
        request = deployments_pb2.ListRolloutsRequest(
            parent=parent, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListRollouts, request, timeout)

    def list_rollouts(
        self, *, parent: str, page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[deployments_pb2.Rollout, None]:
        """Every rollout of a deployment, page after page; `timeout` applies to each page."""

        async def fetch(token: str) -> tuple[Sequence[deployments_pb2.Rollout], str]:
            page = await self.list_rollouts_page(
                parent=parent, page_size=page_size, page_token=token, timeout=timeout
            )
            return page.rollouts, page.next_page_token

        return pages(fetch)

    async def promote_rollout(
        self,
        *,
        name: str,
        to_end: bool = False,
        reason: str = "",
        etag: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.PromoteRolloutResponse:
        """Moves a rollout to its next step, or with `to_end` to the end (success: the alias moves). Raises
        RolloutNotFound, EtagMismatch, IllegalTransition, VersionArchived."""
        request = deployments_pb2.PromoteRolloutRequest(
            name=name, to_end=to_end, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self._stub.PromoteRollout, request, timeout)

    async def pause_rollout(
        self,
        *,
        name: str,
        reason: str = "",
        etag: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.PauseRolloutResponse:
        """Stops a rollout where it is. Raises RolloutNotFound, EtagMismatch, IllegalTransition."""
        request = deployments_pb2.PauseRolloutRequest(
            name=name, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self._stub.PauseRollout, request, timeout)

    async def resume_rollout(
        self,
        *,
        name: str,
        reason: str = "",
        etag: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.ResumeRolloutResponse:
        """Resumes a paused rollout. Raises RolloutNotFound, EtagMismatch, IllegalTransition."""
        request = deployments_pb2.ResumeRolloutRequest(
            name=name, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self._stub.ResumeRollout, request, timeout)

    async def rollback_rollout(
        self,
        *,
        name: str,
        mode: deployments_pb2.RollbackMode.ValueType = deployments_pb2.ROLLBACK_MODE_INSTANT,
        step_interval: timedelta | None = None,
        reason: str = "",
        etag: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.RollbackRolloutResponse:
        """Rolls a rollout back: INSTANT removes the canary at once, STEPPED walks its weight back down the
        steps taken, one per `step_interval`. Raises RolloutNotFound, EtagMismatch, IllegalTransition,
        InvalidArgument."""
        request = deployments_pb2.RollbackRolloutRequest(
            name=name,
            mode=mode,
            step_interval=_duration(step_interval),
            reason=reason,
            etag=etag,
            request_id=ensure_request_id(request_id),
        )
        return await self._unary(self._stub.RollbackRollout, request, timeout)

    async def abort_rollout(
        self,
        *,
        name: str,
        reason: str = "",
        etag: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.AbortRolloutResponse:
        """Removes the canary and ends the rollout ABORTED. Raises RolloutNotFound, EtagMismatch,
        IllegalTransition."""
        request = deployments_pb2.AbortRolloutRequest(
            name=name, reason=reason, etag=etag, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self._stub.AbortRollout, request, timeout)

    # Endpoints, history and routing.

    async def report_endpoint_health(
        self,
        *,
        deployment: str,
        address: str,
        ready: bool,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> deployments_pb2.ReportEndpointHealthResponse:
        """Records whether one endpoint is ready; `changed` says whether the report changed anything.
        Raises DeploymentNotFound, InvalidArgument."""
        request = deployments_pb2.ReportEndpointHealthRequest(
            deployment=deployment, address=address, ready=ready, request_id=ensure_request_id(request_id)
        )
        return await self._unary(self._stub.ReportEndpointHealth, request, timeout)

    async def list_deployment_history_page(
        self, *, parent: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> deployments_pb2.ListDeploymentHistoryResponse:
        """One page of a deployment's transitions, newest first. Raises DeploymentNotFound,
        InvalidPageToken."""
        request = deployments_pb2.ListDeploymentHistoryRequest(
            parent=parent, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListDeploymentHistory, request, timeout)

    def list_deployment_history(
        self, *, parent: str, page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[deployments_pb2.DeploymentHistoryEntry, None]:
        """Every transition of a deployment, newest first, page after page."""

        async def fetch(token: str) -> tuple[Sequence[deployments_pb2.DeploymentHistoryEntry], str]:
            page = await self.list_deployment_history_page(
                parent=parent, page_size=page_size, page_token=token, timeout=timeout
            )
            return page.entries, page.next_page_token

        return pages(fetch)

    async def resolve_route(
        self, *, deployment: str, routing_key: str = "", timeout: float | None = None
    ) -> deployments_pb2.ResolveRouteResponse:
        """Where one request goes (endpoint, model version, slot); empty routing_key: a random choice.
        Raises DeploymentNotFound, NoReadyEndpoint."""
        request = deployments_pb2.ResolveRouteRequest(deployment=deployment, routing_key=routing_key)
        return await self._unary(self._stub.ResolveRoute, request, timeout)

    def watch_deployment(
        self,
        *,
        deployment: str,
        start_revision: int = 0,
        resume: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy = WATCH_RESUME_POLICY,
    ) -> AsyncGenerator[deployments_pb2.WatchDeploymentResponse, None]:
        """A deployment's changes: with start_revision 0 first its current state (or a progress mark if it
        does not exist), then every change after it; otherwise every change from start_revision on
        (inclusive: 1 replays every change kept); in revision order, and progress marks while idle.

        With `resume`, a stream broken by UNAVAILABLE is reopened where it stopped, after the waits of
        `retry` (whose max_attempts bounds consecutive failed reopenings), so the caller sees no gap and no
        repeat. `timeout` (default: none) bounds the whole watch. Raises RevisionCompacted when a change
        from start_revision on is no longer kept.
        """

        def open_call(
            revision: int, remaining: float | None
        ) -> grpc.aio.UnaryStreamCall[
            deployments_pb2.WatchDeploymentRequest, deployments_pb2.WatchDeploymentResponse
        ]:
            request = deployments_pb2.WatchDeploymentRequest(deployment=deployment, start_revision=revision)
            return self._stub.WatchDeployment(request, timeout=remaining, metadata=self.metadata)

        return resumable_watch(
            open_call, start_revision=start_revision, resume=resume, timeout=timeout, policy=retry
        )
