"""ModelRegistryService over gRPC: converts each request, awaits the registry service, converts the result."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from modelplane.server.proto_memo import ProtoMemo
from modelplane.server.registry import convert
from modelplane.server.registry.domain import ModelVersion, Resolution
from modelplane.server.registry.service import NoMatchingModel, RegistryService
from modelplane.server.write_request import write_request
from modelplane.v1 import registry_pb2 as pb
from modelplane.v1 import registry_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]
# Responses kept per kind: each holds its domain value and message (a few KB) until newer ones push it out.
MEMO_ENTRIES = 4096


def get_version_response(version: ModelVersion) -> pb.GetModelVersionResponse:
    return pb.GetModelVersionResponse(model_version=convert.version_to_proto(version))


def resolve_response(resolution: Resolution) -> pb.ResolveModelResponse:
    return pb.ResolveModelResponse(
        model_version=convert.version_to_proto(resolution.version), revision=resolution.revision
    )


class ModelRegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, service: RegistryService) -> None:
        self._service = service
        # The service's read cache hands out the same version or resolution until a newer commit: its
        # response is built once (see proto_memo.py).
        self._version_responses = ProtoMemo(get_version_response, max_entries=MEMO_ENTRIES)
        self._resolve_responses = ProtoMemo(resolve_response, max_entries=MEMO_ENTRIES)

    async def CreateModel(self, request: pb.CreateModelRequest, context: Context) -> pb.CreateModelResponse:
        model = await self._service.create_model(
            request.model_id, convert.model_fields(request.model), write_request(request, "CreateModel")
        )
        return pb.CreateModelResponse(model=convert.model_to_proto(model))

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.GetModelResponse:
        model = await self._service.get_model(request.name)
        return pb.GetModelResponse(model=convert.model_to_proto(model))

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        page = await self._service.list_models(
            page_size=request.page_size,
            page_token=request.page_token,
            filter_text=request.filter,
            order_by=request.order_by,
        )
        return pb.ListModelsResponse(
            models=[convert.model_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def UpdateModel(self, request: pb.UpdateModelRequest, context: Context) -> pb.UpdateModelResponse:
        model = await self._service.update_model(
            request.model.name,
            convert.model_fields(request.model),
            frozenset(request.update_mask.paths),
            request.model.etag,
            write_request(request, "UpdateModel"),
        )
        return pb.UpdateModelResponse(model=convert.model_to_proto(model))

    async def DeleteModel(self, request: pb.DeleteModelRequest, context: Context) -> pb.DeleteModelResponse:
        await self._service.delete_model(
            request.name, request.etag, request.force, write_request(request, "DeleteModel")
        )
        return pb.DeleteModelResponse()

    async def CreateModelVersion(
        self, request: pb.CreateModelVersionRequest, context: Context
    ) -> pb.CreateModelVersionResponse:
        version = await self._service.create_version(
            request.parent,
            convert.version_fields(request.model_version),
            request.model_version.HasField("pricing"),
            write_request(request, "CreateModelVersion"),
        )
        return pb.CreateModelVersionResponse(model_version=convert.version_to_proto(version))

    async def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: Context
    ) -> pb.GetModelVersionResponse:
        version = await self._service.get_version(request.name)
        return self._version_responses(version)

    async def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Context
    ) -> pb.ListModelVersionsResponse:
        page = await self._service.list_versions(
            parent=request.parent,
            page_size=request.page_size,
            page_token=request.page_token,
            filter_text=request.filter,
            order_by=request.order_by,
        )
        return pb.ListModelVersionsResponse(
            model_versions=[convert.version_to_proto(v) for v in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateModelVersion(
        self, request: pb.UpdateModelVersionRequest, context: Context
    ) -> pb.UpdateModelVersionResponse:
        paths = frozenset(request.update_mask.paths)
        version = await self._service.update_version(
            request.model_version.name,
            convert.version_update(request.model_version, paths),
            paths,
            request.model_version.etag,
            write_request(request, "UpdateModelVersion"),
        )
        return pb.UpdateModelVersionResponse(model_version=convert.version_to_proto(version))

    async def DeleteModelVersion(
        self, request: pb.DeleteModelVersionRequest, context: Context
    ) -> pb.DeleteModelVersionResponse:
        await self._service.delete_version(
            request.name, request.etag, write_request(request, "DeleteModelVersion")
        )
        return pb.DeleteModelVersionResponse()

    async def SetAlias(self, request: pb.SetAliasRequest, context: Context) -> pb.SetAliasResponse:
        alias = await self._service.set_alias(
            request.name,
            request.version,
            request.expected_version if request.HasField("expected_version") else None,
            request.reason,
            write_request(request, "SetAlias"),
        )
        return pb.SetAliasResponse(alias=convert.alias_to_proto(alias))

    async def GetAlias(self, request: pb.GetAliasRequest, context: Context) -> pb.GetAliasResponse:
        alias = await self._service.get_alias(request.name)
        return pb.GetAliasResponse(alias=convert.alias_to_proto(alias))

    async def ListAliases(self, request: pb.ListAliasesRequest, context: Context) -> pb.ListAliasesResponse:
        page = await self._service.list_aliases(request.parent, request.page_size, request.page_token)
        return pb.ListAliasesResponse(
            aliases=[convert.alias_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: Context) -> pb.DeleteAliasResponse:
        await self._service.delete_alias(
            request.name, request.expected_version, request.reason, write_request(request, "DeleteAlias")
        )
        return pb.DeleteAliasResponse()

    async def ListAliasHistory(
        self, request: pb.ListAliasHistoryRequest, context: Context
    ) -> pb.ListAliasHistoryResponse:
        page = await self._service.list_alias_history(
            request.parent, request.alias, request.page_size, request.page_token
        )
        return pb.ListAliasHistoryResponse(
            moves=[convert.alias_move_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def ResolveModel(
        self, request: pb.ResolveModelRequest, context: Context
    ) -> pb.ResolveModelResponse:
        selector = request.WhichOneof("selector")
        try:
            if selector == "alias":
                resolution = await self._service.resolve_alias(request.alias)
            elif selector == "constraints":
                resolution = await self._service.resolve_constraints(
                    convert.constraints_from_proto(request.constraints)
                )
            else:
                resolution = await self._service.resolve_nothing()
        except NoMatchingModel as exc:
            exc.details = (convert.resolve_failure(exc.rejections, exc.candidate_count),)
            raise
        return self._resolve_responses(resolution)

    async def WatchModels(
        self, request: pb.WatchModelsRequest, context: Context
    ) -> AsyncIterator[pb.WatchModelsResponse]:
        async for event in self._service.watch(request.start_revision):
            yield convert.watch_event(event)
