"""Conversions between the registry's proto messages and its domain values, in one place.

Enum values that are UNSPECIFIED or unknown on input are refused with the field's path, so no proto
enum number ever reaches the service: into the domain value's `refused`, which validation reports beside
every other violation of the request (constraints, which no later check reads, raise here at once).
"""

from __future__ import annotations

from collections.abc import Iterable

from modelplane.pricing import Prices
from modelplane.server.errors import FieldViolation
from modelplane.server.field_rules import CURRENCY_CODE, Violations
from modelplane.server.proto_time import timestamp
from modelplane.server.registry import names
from modelplane.server.registry.domain import (
    Alias,
    AliasMove,
    Change,
    Constraints,
    Model,
    ModelFields,
    ModelVersion,
    PriceCap,
    Progress,
    Rejection,
    VersionFields,
    VersionState,
    VersionUpdate,
    alias_name,
    version_name,
)
from modelplane.v1 import common_pb2, registry_pb2

_STATE_TO_PROTO = {
    VersionState.READY: registry_pb2.MODEL_VERSION_STATE_READY,
    VersionState.DEPRECATED: registry_pb2.MODEL_VERSION_STATE_DEPRECATED,
    VersionState.ARCHIVED: registry_pb2.MODEL_VERSION_STATE_ARCHIVED,
}
_STATE_FROM_PROTO = {number: state for state, number in _STATE_TO_PROTO.items()}
_CAPABILITY_PREFIX = "CAPABILITY_"
_CHANGE_KINDS = {
    "created": registry_pb2.CHANGE_KIND_CREATED,
    "updated": registry_pb2.CHANGE_KIND_UPDATED,
    "deleted": registry_pb2.CHANGE_KIND_DELETED,
}


# ---- capabilities and states


def capability_names(values: Iterable[int], path: str, refused: list[FieldViolation]) -> tuple[str, ...]:
    """The known capabilities' names; each unknown or UNSPECIFIED one is a violation in `refused`."""
    found: list[str] = []
    for i, value in enumerate(values):
        if value == registry_pb2.CAPABILITY_UNSPECIFIED or value not in registry_pb2.Capability.values():
            refused.append(FieldViolation(f"{path}[{i}]", "must be a known capability, not UNSPECIFIED"))
        else:
            found.append(registry_pb2.Capability.Name(value).removeprefix(_CAPABILITY_PREFIX).lower())  # type: ignore[arg-type]
    return tuple(found)


def capability_values(names: Iterable[str]) -> list[registry_pb2.Capability.ValueType]:
    return [registry_pb2.Capability.Value(_CAPABILITY_PREFIX + name.upper()) for name in names]


def state_from_proto(
    value: int, path: str, refused: list[FieldViolation], *, default: VersionState | None
) -> VersionState | None:
    """The state; `default` for UNSPECIFIED, and for an unknown number too after a violation in `refused`."""
    if value == registry_pb2.MODEL_VERSION_STATE_UNSPECIFIED:
        return default
    state: VersionState | None = _STATE_FROM_PROTO.get(value)  # type: ignore[call-overload]
    if state is None:
        refused.append(FieldViolation(path, "must be READY, DEPRECATED or ARCHIVED"))
        return default
    return state


# ---- models


def model_fields(model: registry_pb2.Model) -> ModelFields:
    return ModelFields(
        provider=model.provider,
        display_name=model.display_name,
        description=model.description,
        labels=dict(model.labels),
    )


def model_to_proto(model: Model) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=model.name,
        display_name=model.display_name,
        description=model.description,
        provider=model.provider,
        labels=dict(model.labels),
        create_time=timestamp(model.create_time),
        update_time=timestamp(model.update_time),
        etag=model.etag,
        latest_version="" if model.latest_version is None else version_name(model.id, model.latest_version),
    )


# ---- versions


def pricing_to_proto(pricing: Prices) -> registry_pb2.TokenPricing:
    proto = registry_pb2.TokenPricing(
        currency_code=pricing.currency_code,
        input_micros_per_million=pricing.input,
        output_micros_per_million=pricing.output,
    )
    if pricing.cached_input is not None:
        proto.cached_input_micros_per_million = pricing.cached_input
    if pricing.reasoning is not None:
        proto.reasoning_micros_per_million = pricing.reasoning
    return proto


def version_fields(version: registry_pb2.ModelVersion) -> VersionFields:
    refused: list[FieldViolation] = []
    return VersionFields(
        source_uri=version.source_uri,
        context_window=version.context_window,
        max_output_tokens=version.max_output_tokens,
        pricing=Prices.of(version.pricing),
        source_sha256=version.source_sha256,
        capabilities=capability_names(version.capabilities, "model_version.capabilities", refused),
        description=version.description,
        state=state_from_proto(version.state, "model_version.state", refused, default=VersionState.READY),
        labels=dict(version.labels),
        parent_version=version.lineage.parent_version,
        source_run=version.lineage.source_run,
        refused=tuple(refused),
    )


def version_update(version: registry_pb2.ModelVersion, paths: frozenset[str]) -> VersionUpdate:
    refused: list[FieldViolation] = []
    state = None
    if "state" in paths or "*" in paths:
        state = state_from_proto(version.state, "model_version.state", refused, default=None)
    return VersionUpdate(
        description=version.description, state=state, labels=dict(version.labels), refused=tuple(refused)
    )


def version_to_proto(version: ModelVersion) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        name=version.name,
        version_id=version.version_id,
        description=version.description,
        source_uri=version.source_uri,
        source_sha256=version.source_sha256,
        capabilities=capability_values(version.capabilities),
        context_window=version.context_window,
        max_output_tokens=version.max_output_tokens,
        pricing=pricing_to_proto(version.pricing),
        state=_STATE_TO_PROTO[version.state],
        labels=dict(version.labels),
        lineage=registry_pb2.Lineage(parent_version=version.parent_version, source_run=version.source_run),
        aliases=list(version.aliases),
        create_time=timestamp(version.create_time),
        update_time=timestamp(version.update_time),
        etag=version.etag,
        provider=version.provider,
    )


# ---- aliases


def alias_to_proto(alias: Alias) -> registry_pb2.ModelAlias:
    return registry_pb2.ModelAlias(
        name=alias.name,
        version=alias.version,
        update_time=timestamp(alias.update_time),
        updated_by=alias.updated_by,
    )


def alias_move_to_proto(move: AliasMove) -> registry_pb2.AliasMove:
    return registry_pb2.AliasMove(
        alias=alias_name(move.model_id, move.alias),
        from_version="" if move.from_version is None else version_name(move.model_id, move.from_version),
        to_version="" if move.to_version is None else version_name(move.model_id, move.to_version),
        actor=move.actor,
        reason=move.reason,
        move_time=timestamp(move.move_time),
        revision=move.revision,
    )


# ---- resolution


def _price_cap(money: common_pb2.Money, path: str, v: Violations) -> PriceCap:
    if not CURRENCY_CODE.fullmatch(money.currency_code):
        v.add(f"{path}.currency_code", "must be an ISO 4217 code such as 'USD'")
    if money.micros < 0:
        v.add(f"{path}.micros", "must be zero or more")
    return PriceCap(money.currency_code, money.micros)


def constraints_from_proto(c: registry_pb2.ModelConstraints) -> Constraints:
    """The constraints; InvalidArgument naming every field that cannot be read."""
    v = Violations()
    model_id = v.collect(lambda: names.parse_model(c.model, "constraints.model"), "") if c.model else ""
    refused: list[FieldViolation] = []
    capabilities = capability_names(c.required_capabilities, "constraints.required_capabilities", refused)
    v.extend(refused)
    max_input_price = (
        _price_cap(c.max_input_price, "constraints.max_input_price", v)
        if c.HasField("max_input_price")
        else None
    )
    max_output_price = (
        _price_cap(c.max_output_price, "constraints.max_output_price", v)
        if c.HasField("max_output_price")
        else None
    )
    v.raise_if_any()
    return Constraints(
        model_id=model_id,
        provider=c.provider,
        required_capabilities=capabilities,
        min_context_window=max(0, c.min_context_window),
        max_input_price=max_input_price,
        max_output_price=max_output_price,
        labels=dict(c.labels),
    )


def resolve_failure(
    rejections: Iterable[Rejection], candidate_count: int
) -> registry_pb2.ResolveModelFailure:
    return registry_pb2.ResolveModelFailure(
        rejections=[
            registry_pb2.CandidateRejection(
                model_version=r.model_version, constraint=r.constraint, reason=r.reason
            )
            for r in rejections
        ],
        candidate_count=candidate_count,
    )


# ---- watch


def watch_event(event: Change | Progress) -> registry_pb2.WatchModelsResponse:
    if isinstance(event, Progress):
        return registry_pb2.WatchModelsResponse(progress=registry_pb2.WatchProgress(revision=event.revision))
    change = registry_pb2.ModelChange(
        revision=event.revision,
        kind=_CHANGE_KINDS[event.kind],
        resource=event.resource,
        change_time=timestamp(event.change_time),
    )
    snapshot = event.snapshot
    if isinstance(snapshot, Model):
        change.model.CopyFrom(model_to_proto(snapshot))
    elif isinstance(snapshot, ModelVersion):
        change.model_version.CopyFrom(version_to_proto(snapshot))
    elif isinstance(snapshot, Alias):
        change.alias.CopyFrom(alias_to_proto(snapshot))
    return registry_pb2.WatchModelsResponse(change=change)
