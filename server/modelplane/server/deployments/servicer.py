"""DeploymentService over gRPC: converts each request, awaits the deployment service, converts the result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from functools import partial
from typing import Protocol, TypeAlias

import grpc

from modelplane.server.deployments import convert
from modelplane.server.deployments.domain import RolloutResult
from modelplane.server.deployments.manager import DeploymentManager
from modelplane.server.store.mutations import WriteRequest
from modelplane.server.write_request import write_request
from modelplane.v1 import deployments_pb2 as pb
from modelplane.v1 import deployments_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]
# The requests that move a rollout by name, each with a reason and an etag (and its own arguments, if any).
_ControlRequest: TypeAlias = (
    pb.PromoteRolloutRequest
    | pb.PauseRolloutRequest
    | pb.ResumeRolloutRequest
    | pb.RollbackRolloutRequest
    | pb.AbortRolloutRequest
)


class _Control(Protocol):
    """A rollout service method that moves a rollout, its own arguments (if any) bound."""

    def __call__(
        self, *, name: str, reason: str, etag: str, write: WriteRequest
    ) -> Awaitable[RolloutResult]: ...


def _result(result: RolloutResult) -> tuple[pb.Rollout, pb.Deployment]:
    return convert.rollout_to_proto(result.rollout), convert.deployment_to_proto(result.deployment)


class DeploymentServicer(deployments_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, manager: DeploymentManager) -> None:
        self._deployments = manager.deployments
        self._rollouts = manager.rollouts
        self._routing = manager.routing
        self._watch = manager.watch

    async def _control(
        self, request: _ControlRequest, method: str, control: _Control
    ) -> tuple[pb.Rollout, pb.Deployment]:
        write = write_request(request, method)
        return _result(
            await control(name=request.name, reason=request.reason, etag=request.etag, write=write)
        )

    async def CreateDeployment(
        self, request: pb.CreateDeploymentRequest, context: Context
    ) -> pb.CreateDeploymentResponse:
        deployment = await self._deployments.create_deployment(
            request.deployment_id,
            convert.deployment_fields(request.deployment),
            write_request(request, "CreateDeployment"),
        )
        return pb.CreateDeploymentResponse(deployment=convert.deployment_to_proto(deployment))

    async def GetDeployment(
        self, request: pb.GetDeploymentRequest, context: Context
    ) -> pb.GetDeploymentResponse:
        deployment = await self._deployments.get_deployment(request.name)
        return pb.GetDeploymentResponse(deployment=convert.deployment_to_proto(deployment))

    async def ListDeployments(
        self, request: pb.ListDeploymentsRequest, context: Context
    ) -> pb.ListDeploymentsResponse:
        page = await self._deployments.list_deployments(
            page_size=request.page_size, page_token=request.page_token, model=request.model
        )
        return pb.ListDeploymentsResponse(
            deployments=[convert.deployment_to_proto(d) for d in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateDeployment(
        self, request: pb.UpdateDeploymentRequest, context: Context
    ) -> pb.UpdateDeploymentResponse:
        deployment = await self._deployments.update_deployment(
            request.deployment.name,
            convert.deployment_fields(request.deployment),
            frozenset(request.update_mask.paths),
            request.deployment.etag,
            write_request(request, "UpdateDeployment"),
        )
        return pb.UpdateDeploymentResponse(deployment=convert.deployment_to_proto(deployment))

    async def DeleteDeployment(
        self, request: pb.DeleteDeploymentRequest, context: Context
    ) -> pb.DeleteDeploymentResponse:
        await self._deployments.delete_deployment(
            request.name, request.etag, write_request(request, "DeleteDeployment")
        )
        return pb.DeleteDeploymentResponse()

    async def StartRollout(
        self, request: pb.StartRolloutRequest, context: Context
    ) -> pb.StartRolloutResponse:
        result = await self._rollouts.start_rollout(
            request.parent, convert.rollout_spec(request.rollout), write_request(request, "StartRollout")
        )
        rollout, deployment = _result(result)
        return pb.StartRolloutResponse(rollout=rollout, deployment=deployment)

    async def PlanRollout(self, request: pb.PlanRolloutRequest, context: Context) -> pb.PlanRolloutResponse:
        plan = await self._rollouts.plan_rollout(request.parent, convert.rollout_spec(request.rollout))
        return convert.plan_to_proto(plan)

    async def GetRollout(self, request: pb.GetRolloutRequest, context: Context) -> pb.GetRolloutResponse:
        rollout = await self._rollouts.get_rollout(request.name)
        return pb.GetRolloutResponse(rollout=convert.rollout_to_proto(rollout))

    async def ListRollouts(
        self, request: pb.ListRolloutsRequest, context: Context
    ) -> pb.ListRolloutsResponse:
        page = await self._rollouts.list_rollouts(request.parent, request.page_size, request.page_token)
        return pb.ListRolloutsResponse(
            rollouts=[convert.rollout_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def PromoteRollout(
        self, request: pb.PromoteRolloutRequest, context: Context
    ) -> pb.PromoteRolloutResponse:
        promote = partial(self._rollouts.promote_rollout, to_end=request.to_end)
        rollout, deployment = await self._control(request, "PromoteRollout", promote)
        return pb.PromoteRolloutResponse(rollout=rollout, deployment=deployment)

    async def PauseRollout(
        self, request: pb.PauseRolloutRequest, context: Context
    ) -> pb.PauseRolloutResponse:
        rollout, deployment = await self._control(request, "PauseRollout", self._rollouts.pause_rollout)
        return pb.PauseRolloutResponse(rollout=rollout, deployment=deployment)

    async def ResumeRollout(
        self, request: pb.ResumeRolloutRequest, context: Context
    ) -> pb.ResumeRolloutResponse:
        rollout, deployment = await self._control(request, "ResumeRollout", self._rollouts.resume_rollout)
        return pb.ResumeRolloutResponse(rollout=rollout, deployment=deployment)

    async def RollbackRollout(
        self, request: pb.RollbackRolloutRequest, context: Context
    ) -> pb.RollbackRolloutResponse:
        rollback = partial(self._rollouts.rollback_rollout, spec=convert.rollback_spec(request))
        rollout, deployment = await self._control(request, "RollbackRollout", rollback)
        return pb.RollbackRolloutResponse(rollout=rollout, deployment=deployment)

    async def AbortRollout(
        self, request: pb.AbortRolloutRequest, context: Context
    ) -> pb.AbortRolloutResponse:
        rollout, deployment = await self._control(request, "AbortRollout", self._rollouts.abort_rollout)
        return pb.AbortRolloutResponse(rollout=rollout, deployment=deployment)

    async def ReportEndpointHealth(
        self, request: pb.ReportEndpointHealthRequest, context: Context
    ) -> pb.ReportEndpointHealthResponse:
        result = await self._routing.report_health(
            request.deployment, request.address, request.ready, write_request(request, "ReportEndpointHealth")
        )
        return pb.ReportEndpointHealthResponse(
            changed=result.changed, deployment=convert.deployment_to_proto(result.deployment)
        )

    async def ListDeploymentHistory(
        self, request: pb.ListDeploymentHistoryRequest, context: Context
    ) -> pb.ListDeploymentHistoryResponse:
        page = await self._deployments.list_history(request.parent, request.page_size, request.page_token)
        return pb.ListDeploymentHistoryResponse(
            entries=[convert.history_to_proto(h) for h in page.items], next_page_token=page.next_page_token
        )

    async def ResolveRoute(
        self, request: pb.ResolveRouteRequest, context: Context
    ) -> pb.ResolveRouteResponse:
        route = await self._routing.resolve_route(request.deployment, request.routing_key)
        return convert.route_to_proto(route)

    async def WatchDeployment(
        self, request: pb.WatchDeploymentRequest, context: Context
    ) -> AsyncIterator[pb.WatchDeploymentResponse]:
        async for event in self._watch.watch(request.deployment, request.start_revision):
            yield convert.watch_event(event)
