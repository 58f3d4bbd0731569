"""The typed async client of the model registry (modelplane.v1.ModelRegistryService).

Methods take keyword arguments and return the protobuf messages of modelplane.v1.registry_pb2. Every call
has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to override it),
and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass.

Retries: a call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter, at least
as late as the server's RetryInfo asks, all within the call's one deadline. Reads are safe to repeat. So are
mutations: every mutating request carries a request id, and the server runs a request id at most once,
answering a repeat with the first response. When the caller gives no `request_id`, the client makes a
random UUID for the call and sends the same one on each retry; pass your own to make a retry of your own
(after a crash, say) safe as well.
"""

# The `timeout` parameters are gRPC deadlines handed to the channel, not asyncio timeouts.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING

import grpc
from google.protobuf import field_mask_pb2

from modelplane.client.base import ServiceClient, ensure_request_id
from modelplane.client.resumable_stream import WATCH_RESUME_POLICY, resumable_watch
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import registry_pb2, registry_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceAsyncStub

__all__ = ["ModelRegistryClient"]

# Seconds a unary call may take, retries included, unless the caller says otherwise.


class ModelRegistryClient(ServiceClient):
    """Client of ModelRegistryService, built from a `Connection` or from a grpc.aio channel.

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
        self._stub: ModelRegistryServiceAsyncStub = registry_pb2_grpc.ModelRegistryServiceStub(self._channel)

    # Models.

    async def create_model(
        self,
        *,
        model_id: str,
        model: registry_pb2.Model,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.Model:
        """Creates a model named "models/{model_id}". Raises ModelAlreadyExists, InvalidArgument."""
        request = registry_pb2.CreateModelRequest(
            model_id=model_id, model=model, request_id=ensure_request_id(request_id)
        )
        response = await self._unary(self._stub.CreateModel, request, timeout)
        return response.model

    async def get_model(self, *, name: str, timeout: float | None = None) -> registry_pb2.Model:
        """Gets a model by resource name. Raises ModelNotFound."""
        response = await self._unary(self._stub.GetModel, registry_pb2.GetModelRequest(name=name), timeout)
        return response.model

    async def list_models_page(
        self,
        *,
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> registry_pb2.ListModelsResponse:
        """One page of models. Raises InvalidFilter, InvalidPageToken, InvalidArgument."""
        request = registry_pb2.ListModelsRequest(
            filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListModels, request, timeout)

    async def list_models(
        self, *, filter: str = "", order_by: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[registry_pb2.Model, None]:
        """Every model matching the filter, fetching page after page; `timeout` applies to each page."""
        page_token = ""
        while True:
            page = await self.list_models_page(
                filter=filter, order_by=order_by, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for model in page.models:
                yield model
            page_token = page.next_page_token
            if not page_token:
                return

    async def update_model(
        self,
        *,
        model: registry_pb2.Model,
        update_mask: Sequence[str],
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.Model:
        """Updates the fields of `model` named in update_mask; a set etag must be current.
        Raises ModelNotFound, EtagMismatch, InvalidArgument."""
        request = registry_pb2.UpdateModelRequest(
            model=model,
            update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
            request_id=ensure_request_id(request_id),
        )
        response = await self._unary(self._stub.UpdateModel, request, timeout)
        return response.model

    async def delete_model(
        self,
        *,
        name: str,
        etag: str = "",
        force: bool = False,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Deletes a model; with force, its versions, aliases and alias history too.
        Raises ModelNotFound, ModelHasVersions, EtagMismatch."""
        request = registry_pb2.DeleteModelRequest(
            name=name, etag=etag, force=force, request_id=ensure_request_id(request_id)
        )
        await self._unary(self._stub.DeleteModel, request, timeout)

    # Versions.

    async def create_model_version(
        self,
        *,
        parent: str,
        model_version: registry_pb2.ModelVersion,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.ModelVersion:
        """Adds the next version to the model `parent`. Raises ModelNotFound, InvalidArgument."""
        request = registry_pb2.CreateModelVersionRequest(
            parent=parent, model_version=model_version, request_id=ensure_request_id(request_id)
        )
        response = await self._unary(self._stub.CreateModelVersion, request, timeout)
        return response.model_version

    async def get_model_version(
        self, *, name: str, timeout: float | None = None
    ) -> registry_pb2.ModelVersion:
        """Gets a version by resource name. Raises ModelVersionNotFound."""
        request = registry_pb2.GetModelVersionRequest(name=name)
        response = await self._unary(self._stub.GetModelVersion, request, timeout)
        return response.model_version

    async def list_model_versions_page(
        self,
        *,
        parent: str = "models/-",
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> registry_pb2.ListModelVersionsResponse:
        """One page of versions of `parent` ("models/-": every model). Raises ModelNotFound, InvalidFilter,
        InvalidPageToken, InvalidArgument."""
        request = registry_pb2.ListModelVersionsRequest(
            parent=parent, filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListModelVersions, request, timeout)

    async def list_model_versions(
        self,
        *,
        parent: str = "models/-",
        filter: str = "",
        order_by: str = "",
        page_size: int = 0,
        timeout: float | None = None,
    ) -> AsyncGenerator[registry_pb2.ModelVersion, None]:
        """Every version matching the filter, page after page; `timeout` applies to each page."""
        page_token = ""
        while True:
            page = await self.list_model_versions_page(
                parent=parent,
                filter=filter,
                order_by=order_by,
                page_size=page_size,
                page_token=page_token,
                timeout=timeout,
            )
            for version in page.model_versions:
                yield version
            page_token = page.next_page_token
            if not page_token:
                return

    async def update_model_version(
        self,
        *,
        model_version: registry_pb2.ModelVersion,
        update_mask: Sequence[str],
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.ModelVersion:
        """Updates description, state or labels of a version. Raises ModelVersionNotFound, EtagMismatch,
        VersionHasAliases (archiving an aliased version), InvalidArgument."""
        request = registry_pb2.UpdateModelVersionRequest(
            model_version=model_version,
            update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
            request_id=ensure_request_id(request_id),
        )
        response = await self._unary(self._stub.UpdateModelVersion, request, timeout)
        return response.model_version

    async def delete_model_version(
        self, *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> None:
        """Deletes a version. Raises ModelVersionNotFound, EtagMismatch, VersionHasAliases."""
        request = registry_pb2.DeleteModelVersionRequest(
            name=name, etag=etag, request_id=ensure_request_id(request_id)
        )
        await self._unary(self._stub.DeleteModelVersion, request, timeout)

    # Aliases.

    async def set_alias(
        self,
        *,
        name: str,
        version: str,
        expected_version: str | None = None,
        reason: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.ModelAlias:
        """Points the alias `name` at `version`. expected_version guards the move: None moves it whatever it
        points to, "" requires that the alias does not exist yet, anything else that it points there now.
        Raises AliasConflict, ModelNotFound, ModelVersionNotFound, VersionArchived."""
        request = registry_pb2.SetAliasRequest(
            name=name, version=version, reason=reason, request_id=ensure_request_id(request_id)
        )
        if expected_version is not None:
            request.expected_version = expected_version
        response = await self._unary(self._stub.SetAlias, request, timeout)
        return response.alias

    async def get_alias(self, *, name: str, timeout: float | None = None) -> registry_pb2.ModelAlias:
        """Gets an alias. Raises AliasNotFound."""
        response = await self._unary(self._stub.GetAlias, registry_pb2.GetAliasRequest(name=name), timeout)
        return response.alias

    async def list_aliases_page(
        self, *, parent: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> registry_pb2.ListAliasesResponse:
        """One page of the aliases of the model `parent`. Raises ModelNotFound."""
        request = registry_pb2.ListAliasesRequest(parent=parent, page_size=page_size, page_token=page_token)
        return await self._unary(self._stub.ListAliases, request, timeout)

    async def list_aliases(
        self, *, parent: str, page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[registry_pb2.ModelAlias, None]:
        """Every alias of the model `parent`, by name, page after page."""
        page_token = ""
        while True:
            page = await self.list_aliases_page(
                parent=parent, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for alias in page.aliases:
                yield alias
            page_token = page.next_page_token
            if not page_token:
                return

    async def delete_alias(
        self,
        *,
        name: str,
        expected_version: str = "",
        reason: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Deletes an alias; a non-empty expected_version must be where it points now.
        Raises AliasNotFound, AliasConflict."""
        request = registry_pb2.DeleteAliasRequest(
            name=name,
            expected_version=expected_version,
            reason=reason,
            request_id=ensure_request_id(request_id),
        )
        await self._unary(self._stub.DeleteAlias, request, timeout)

    async def list_alias_history_page(
        self,
        *,
        parent: str,
        alias: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> registry_pb2.ListAliasHistoryResponse:
        """One page of alias moves of the model `parent`, newest first. Raises ModelNotFound."""
        request = registry_pb2.ListAliasHistoryRequest(
            parent=parent, alias=alias, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListAliasHistory, request, timeout)

    async def list_alias_history(
        self, *, parent: str, alias: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[registry_pb2.AliasMove, None]:
        """Every move of the model's aliases (only of `alias` when set), newest first, page after page."""
        page_token = ""
        while True:
            page = await self.list_alias_history_page(
                parent=parent, alias=alias, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for move in page.moves:
                yield move
            page_token = page.next_page_token
            if not page_token:
                return

    # Resolution and changes.

    async def resolve_model(
        self,
        *,
        alias: str | None = None,
        constraints: registry_pb2.ModelConstraints | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.ResolveModelResponse:
        """The version to use: the one `alias` points to, or the best READY version meeting `constraints`.
        Raises AliasNotFound, NoMatchingModel (see its `rejections`), InvalidArgument."""
        if alias is not None and constraints is not None:
            raise ValueError("resolve_model takes an alias or constraints, not both")
        if alias is not None:
            request = registry_pb2.ResolveModelRequest(alias=alias)
        elif constraints is not None:
            request = registry_pb2.ResolveModelRequest(constraints=constraints)
        else:
            request = registry_pb2.ResolveModelRequest()
        return await self._unary(self._stub.ResolveModel, request, timeout)

    def watch_models(
        self,
        *,
        start_revision: int = 0,
        resume: bool = True,
        timeout: float | None = None,
        retry: RetryPolicy = WATCH_RESUME_POLICY,
    ) -> AsyncGenerator[registry_pb2.WatchModelsResponse, None]:
        """Every change from start_revision on (inclusive: 1 replays every change kept; 0: only changes after
        the current revision, announced by a progress mark), in revision order, and progress marks while idle.

        With `resume`, a stream broken by UNAVAILABLE (a server shutting down, a lost connection) is reopened
        where it stopped, after the waits of `retry` (whose max_attempts bounds consecutive failed
        reopenings), so the caller sees no gap and no repeat. `timeout` (default: none) bounds the whole
        watch. Raises RevisionCompacted when a change from start_revision on is no longer kept.
        """

        def open_call(
            revision: int, remaining: float | None
        ) -> grpc.aio.UnaryStreamCall[registry_pb2.WatchModelsRequest, registry_pb2.WatchModelsResponse]:
            request = registry_pb2.WatchModelsRequest(start_revision=revision)
            return self._stub.WatchModels(request, timeout=remaining, metadata=self.metadata)

        return resumable_watch(
            open_call, start_revision=start_revision, resume=resume, timeout=timeout, policy=retry
        )
