"""GuardrailService over gRPC: converts each request, awaits the guardrails service, converts the result."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from modelplane.server.context import caller
from modelplane.server.guardrails import convert
from modelplane.server.guardrails.service import GuardrailService
from modelplane.server.write_request import write_request
from modelplane.v1 import guardrails_pb2 as pb
from modelplane.v1 import guardrails_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]
# Who sees a violation's matched_hash: a server without auth (role None), admins and operators. Service
# tokens send checks and readers read records; neither may compare a hash with a guess of their own.
HASH_READERS = frozenset({None, "admin", "operator"})


class GuardrailServicer(guardrails_pb2_grpc.GuardrailServiceServicer):
    def __init__(self, service: GuardrailService) -> None:
        self._service = service

    async def CreatePolicy(
        self, request: pb.CreatePolicyRequest, context: Context
    ) -> pb.CreatePolicyResponse:
        policy = await self._service.create_policy(
            request.policy_id,
            convert.policy_fields(request.policy, "policy"),
            write_request(request, "CreatePolicy"),
        )
        return pb.CreatePolicyResponse(policy=convert.policy_to_proto(policy))

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: Context) -> pb.GetPolicyResponse:
        policy = await self._service.get_policy(request.name, request.revision)
        return pb.GetPolicyResponse(policy=convert.policy_to_proto(policy))

    async def ListPolicies(
        self, request: pb.ListPoliciesRequest, context: Context
    ) -> pb.ListPoliciesResponse:
        page = await self._service.list_policies(
            page_size=request.page_size, page_token=request.page_token, filter_text=request.filter
        )
        return pb.ListPoliciesResponse(
            policies=[convert.policy_to_proto(p) for p in page.items], next_page_token=page.next_page_token
        )

    async def UpdatePolicy(
        self, request: pb.UpdatePolicyRequest, context: Context
    ) -> pb.UpdatePolicyResponse:
        paths = frozenset(request.update_mask.paths)
        policy = await self._service.update_policy(
            request.policy.name,
            convert.policy_fields(request.policy, "policy", paths),
            paths,
            request.policy.etag,
            write_request(request, "UpdatePolicy"),
        )
        return pb.UpdatePolicyResponse(policy=convert.policy_to_proto(policy))

    async def DeletePolicy(
        self, request: pb.DeletePolicyRequest, context: Context
    ) -> pb.DeletePolicyResponse:
        await self._service.delete_policy(request.name, request.etag, write_request(request, "DeletePolicy"))
        return pb.DeletePolicyResponse()

    async def ListPolicyRevisions(
        self, request: pb.ListPolicyRevisionsRequest, context: Context
    ) -> pb.ListPolicyRevisionsResponse:
        page = await self._service.list_revisions(
            request.name, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListPolicyRevisionsResponse(
            policies=[convert.policy_to_proto(p) for p in page.items], next_page_token=page.next_page_token
        )

    async def SetShadowRevision(
        self, request: pb.SetShadowRevisionRequest, context: Context
    ) -> pb.SetShadowRevisionResponse:
        policy = await self._service.set_shadow_revision(
            request.name,
            convert.shadow_choice(request),
            convert.shadow_target(request),
            request.etag,
            write_request(request, "SetShadowRevision"),
        )
        return pb.SetShadowRevisionResponse(policy=convert.policy_to_proto(policy))

    async def ClearShadowRevision(
        self, request: pb.ClearShadowRevisionRequest, context: Context
    ) -> pb.ClearShadowRevisionResponse:
        policy = await self._service.clear_shadow_revision(
            request.name, request.etag, write_request(request, "ClearShadowRevision")
        )
        return pb.ClearShadowRevisionResponse(policy=convert.policy_to_proto(policy))

    async def PromoteShadowRevision(
        self, request: pb.PromoteShadowRevisionRequest, context: Context
    ) -> pb.PromoteShadowRevisionResponse:
        policy = await self._service.promote_shadow_revision(
            request.name, request.etag, write_request(request, "PromoteShadowRevision")
        )
        return pb.PromoteShadowRevisionResponse(policy=convert.policy_to_proto(policy))

    async def GetShadowReport(
        self, request: pb.GetShadowReportRequest, context: Context
    ) -> pb.GetShadowReportResponse:
        report = await self._service.shadow_report(request.name, convert.shadow_query(request))
        return convert.shadow_report_to_proto(report, caller().role in HASH_READERS)

    async def CheckContent(
        self, request: pb.CheckContentRequest, context: Context
    ) -> pb.CheckContentResponse:
        verdict = await self._service.check_content(
            request.policy,
            request.policy_revision,
            request.text,
            convert.links(request.links, "links"),
            request.request_id,
        )
        return pb.CheckContentResponse(verdict=convert.verdict_to_proto(verdict))

    async def CheckStream(
        self, request_iterator: AsyncIterator[pb.CheckStreamRequest], context: Context
    ) -> AsyncIterator[pb.CheckStreamResponse]:
        async for item in self._service.check_stream(convert.stream_events(request_iterator)):
            yield convert.stream_response(item)

    async def ListViolations(
        self, request: pb.ListViolationsRequest, context: Context
    ) -> pb.ListViolationsResponse:
        page = await self._service.list_violations(
            page_size=request.page_size, page_token=request.page_token, filter_text=request.filter
        )
        show_hash = caller().role in HASH_READERS
        return pb.ListViolationsResponse(
            violations=[convert.record_to_proto(r, show_hash) for r in page.items],
            next_page_token=page.next_page_token,
        )

    async def AggregateViolations(
        self, request: pb.AggregateViolationsRequest, context: Context
    ) -> pb.AggregateViolationsResponse:
        groups = await self._service.aggregate_violations(convert.aggregate_query(request))
        return pb.AggregateViolationsResponse(groups=[convert.group_to_proto(g) for g in groups])
