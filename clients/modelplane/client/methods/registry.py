"""The methods of the model registry's clients (modelplane.v1.ModelRegistryService), async and sync alike.

Methods take keyword arguments and return the protobuf messages of modelplane.v1.registry_pb2; every
mutation carries a request id (a random UUID unless the caller gives one, the same on each retry).
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import field_mask_pb2

from modelplane.client.base import ensure_request_id
from modelplane.client.methods import Paged, Unary, Watch, page, pages, unary, watch, whole_response
from modelplane.client.resumable_stream import WATCH_RESUME_POLICY
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import registry_pb2 as pb

__all__ = ["RegistryMethods"]

# Models.


def create_model(
    *, model_id: str, model: pb.Model, request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.CreateModelResponse, pb.Model]:
    """Creates a model named "models/{model_id}". Raises ModelAlreadyExists, InvalidArgument."""
    request = pb.CreateModelRequest(model_id=model_id, model=model, request_id=ensure_request_id(request_id))
    return Unary("CreateModel", request, lambda response: response.model, timeout)


def get_model(*, name: str, timeout: float | None = None) -> Unary[pb.GetModelResponse, pb.Model]:
    """Gets a model by resource name. Raises ModelNotFound."""
    return Unary("GetModel", pb.GetModelRequest(name=name), lambda response: response.model, timeout)


def list_models(
    *,
    filter: str = "",
    order_by: str = "",
    page_size: int = 0,
    page_token: str = "",
    timeout: float | None = None,
) -> Paged[pb.ListModelsResponse, pb.Model]:
    """Models matching the filter. Raises InvalidFilter, InvalidPageToken, InvalidArgument."""
    request = pb.ListModelsRequest(
        filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
    )
    return Paged("ListModels", request, lambda response: response.models, timeout)


def update_model(
    *,
    model: pb.Model,
    update_mask: Sequence[str],
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.UpdateModelResponse, pb.Model]:
    """Updates the fields of `model` named in update_mask; a set etag must be current.
    Raises ModelNotFound, EtagMismatch, InvalidArgument."""
    request = pb.UpdateModelRequest(
        model=model,
        update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
        request_id=ensure_request_id(request_id),
    )
    return Unary("UpdateModel", request, lambda response: response.model, timeout)


def delete_model(
    *,
    name: str,
    etag: str = "",
    force: bool = False,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.DeleteModelResponse, None]:
    """Deletes a model; with force, its versions, aliases and alias history too.
    Raises ModelNotFound, ModelHasVersions, EtagMismatch."""
    request = pb.DeleteModelRequest(
        name=name, etag=etag, force=force, request_id=ensure_request_id(request_id)
    )
    return Unary("DeleteModel", request, lambda response: None, timeout)


# Versions.


def create_model_version(
    *,
    parent: str,
    model_version: pb.ModelVersion,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.CreateModelVersionResponse, pb.ModelVersion]:
    """Adds the next version to the model `parent`. Raises ModelNotFound, InvalidArgument."""
    request = pb.CreateModelVersionRequest(
        parent=parent, model_version=model_version, request_id=ensure_request_id(request_id)
    )
    return Unary("CreateModelVersion", request, lambda response: response.model_version, timeout)


def get_model_version(
    *, name: str, timeout: float | None = None
) -> Unary[pb.GetModelVersionResponse, pb.ModelVersion]:
    """Gets a version by resource name. Raises ModelVersionNotFound."""
    request = pb.GetModelVersionRequest(name=name)
    return Unary("GetModelVersion", request, lambda response: response.model_version, timeout)


def list_model_versions(
    *,
    parent: str = "models/-",
    filter: str = "",
    order_by: str = "",
    page_size: int = 0,
    page_token: str = "",
    timeout: float | None = None,
) -> Paged[pb.ListModelVersionsResponse, pb.ModelVersion]:
    """Versions of `parent` ("models/-": every model) matching the filter. Raises ModelNotFound,
    InvalidFilter, InvalidPageToken, InvalidArgument."""
    request = pb.ListModelVersionsRequest(
        parent=parent, filter=filter, order_by=order_by, page_size=page_size, page_token=page_token
    )
    return Paged("ListModelVersions", request, lambda response: response.model_versions, timeout)


def update_model_version(
    *,
    model_version: pb.ModelVersion,
    update_mask: Sequence[str],
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.UpdateModelVersionResponse, pb.ModelVersion]:
    """Updates description, state or labels of a version. Raises ModelVersionNotFound, EtagMismatch,
    VersionHasAliases (archiving an aliased version), InvalidArgument."""
    request = pb.UpdateModelVersionRequest(
        model_version=model_version,
        update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
        request_id=ensure_request_id(request_id),
    )
    return Unary("UpdateModelVersion", request, lambda response: response.model_version, timeout)


def delete_model_version(
    *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.DeleteModelVersionResponse, None]:
    """Deletes a version. Raises ModelVersionNotFound, EtagMismatch, VersionHasAliases."""
    request = pb.DeleteModelVersionRequest(name=name, etag=etag, request_id=ensure_request_id(request_id))
    return Unary("DeleteModelVersion", request, lambda response: None, timeout)


# Aliases.


def set_alias(
    *,
    name: str,
    version: str,
    expected_version: str | None = None,
    reason: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.SetAliasResponse, pb.ModelAlias]:
    """Points the alias `name` at `version`. expected_version guards the move: None moves it whatever it
    points to, "" requires that the alias does not exist yet, anything else that it points there now.
    Raises AliasConflict, ModelNotFound, ModelVersionNotFound, VersionArchived."""
    request = pb.SetAliasRequest(
        name=name, version=version, reason=reason, request_id=ensure_request_id(request_id)
    )
    if expected_version is not None:
        request.expected_version = expected_version
    return Unary("SetAlias", request, lambda response: response.alias, timeout)


def get_alias(*, name: str, timeout: float | None = None) -> Unary[pb.GetAliasResponse, pb.ModelAlias]:
    """Gets an alias. Raises AliasNotFound."""
    return Unary("GetAlias", pb.GetAliasRequest(name=name), lambda response: response.alias, timeout)


def list_aliases(
    *, parent: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListAliasesResponse, pb.ModelAlias]:
    """The aliases of the model `parent`, by name. Raises ModelNotFound."""
    request = pb.ListAliasesRequest(parent=parent, page_size=page_size, page_token=page_token)
    return Paged("ListAliases", request, lambda response: response.aliases, timeout)


def delete_alias(
    *,
    name: str,
    expected_version: str = "",
    reason: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.DeleteAliasResponse, None]:
    """Deletes an alias; a non-empty expected_version must be where it points now.
    Raises AliasNotFound, AliasConflict."""
    request = pb.DeleteAliasRequest(
        name=name, expected_version=expected_version, reason=reason, request_id=ensure_request_id(request_id)
    )
    return Unary("DeleteAlias", request, lambda response: None, timeout)


def list_alias_history(
    *, parent: str, alias: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListAliasHistoryResponse, pb.AliasMove]:
    """The moves of the model's aliases (only of `alias` when set), newest first. Raises ModelNotFound."""
    request = pb.ListAliasHistoryRequest(
        parent=parent, alias=alias, page_size=page_size, page_token=page_token
    )
    return Paged("ListAliasHistory", request, lambda response: response.moves, timeout)


# Resolution and changes.


def resolve_model(
    *,
    alias: str | None = None,
    constraints: pb.ModelConstraints | None = None,
    timeout: float | None = None,
) -> Unary[pb.ResolveModelResponse, pb.ResolveModelResponse]:
    """The version to use: the one `alias` points to, or the best READY version meeting `constraints`.
    Raises AliasNotFound, NoMatchingModel (see its `rejections`), InvalidArgument."""
    if alias is not None and constraints is not None:
        raise ValueError("resolve_model takes an alias or constraints, not both")
    if alias is not None:
        request = pb.ResolveModelRequest(alias=alias)
    elif constraints is not None:
        request = pb.ResolveModelRequest(constraints=constraints)
    else:
        request = pb.ResolveModelRequest()
    return Unary("ResolveModel", request, whole_response, timeout)


def watch_models(
    *,
    start_revision: int = 0,
    resume: bool = True,
    timeout: float | None = None,
    retry: RetryPolicy = WATCH_RESUME_POLICY,
) -> Watch[pb.WatchModelsResponse]:
    """Every change from start_revision on (inclusive: 1 replays every change kept; 0: only changes after
    the current revision, announced by a progress mark), in revision order, and progress marks while idle.

    With `resume`, a stream broken by UNAVAILABLE (a server shutting down, a lost connection) is reopened
    where it stopped, after the waits of `retry` (whose max_attempts bounds consecutive failed
    reopenings), so the caller sees no gap and no repeat. `timeout` (default: none) bounds the whole
    watch. Raises RevisionCompacted when a change from start_revision on is no longer kept.
    """

    def request_at(revision: int) -> pb.WatchModelsRequest:
        return pb.WatchModelsRequest(start_revision=revision)

    return Watch("WatchModels", request_at, start_revision, resume, timeout, retry)


class RegistryMethods:
    """The methods of ModelRegistryService's clients. The `*_page` methods return one page (the whole
    response); their plain-named twins iterate over every item of every page from `page_token` on."""

    create_model = unary(create_model)
    get_model = unary(get_model)
    list_models_page = page(list_models)
    list_models = pages(list_models)
    update_model = unary(update_model)
    delete_model = unary(delete_model)
    create_model_version = unary(create_model_version)
    get_model_version = unary(get_model_version)
    list_model_versions_page = page(list_model_versions)
    list_model_versions = pages(list_model_versions)
    update_model_version = unary(update_model_version)
    delete_model_version = unary(delete_model_version)
    set_alias = unary(set_alias)
    get_alias = unary(get_alias)
    list_aliases_page = page(list_aliases)
    list_aliases = pages(list_aliases)
    delete_alias = unary(delete_alias)
    list_alias_history_page = page(list_alias_history)
    list_alias_history = pages(list_alias_history)
    resolve_model = unary(resolve_model)
    watch_models = watch(watch_models)
