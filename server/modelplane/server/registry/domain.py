"""The model registry's domain values: frozen dataclasses that never carry a proto message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from modelplane.pricing import Prices
from modelplane.server.errors import FieldViolation

# The capability vocabulary, in the stored form (the Capability enum's names, lower-case, without prefix).
CAPABILITIES = (
    "chat",
    "completion",
    "embedding",
    "json_mode",
    "tool_use",
    "vision",
    "audio",
    "reasoning",
    "streaming",
)


class VersionState(StrEnum):
    """A version's life cycle; the values are the stored form."""

    READY = "ready"
    DEPRECATED = "deprecated"
    ARCHIVED = "archived"


def model_name(model_id: str) -> str:
    return f"models/{model_id}"


def version_name(model_id: str, version_id: int) -> str:
    return f"models/{model_id}/versions/{version_id}"


def alias_name(model_id: str, alias: str) -> str:
    return f"models/{model_id}/aliases/{alias}"


@dataclass(frozen=True)
class ModelFields:
    """What a caller sets on a model."""

    provider: str
    display_name: str = ""
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    id: str
    provider: str
    display_name: str
    description: str
    labels: Mapping[str, str]
    create_time: datetime
    update_time: datetime
    etag: str
    # The newest version's number, None when the model has none.
    latest_version: int | None

    @property
    def name(self) -> str:
        return model_name(self.id)


@dataclass(frozen=True)
class VersionFields:
    """What a caller sets on a new version."""

    source_uri: str
    context_window: int
    max_output_tokens: int
    pricing: Prices
    source_sha256: str = ""
    capabilities: tuple[str, ...] = ()
    description: str = ""
    # None: READY.
    state: VersionState | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # A version resource name, or "".
    parent_version: str = ""
    source_run: str = ""
    # What conversion could not read (an unknown capability or state), reported with the other violations.
    refused: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True)
class ModelVersion:
    model_id: str
    version_id: int
    provider: str
    description: str
    source_uri: str
    source_sha256: str
    capabilities: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    pricing: Prices
    state: VersionState
    labels: Mapping[str, str]
    parent_version: str
    source_run: str
    # Short names of the aliases pointing here now, sorted.
    aliases: tuple[str, ...]
    create_time: datetime
    update_time: datetime
    etag: str

    @property
    def name(self) -> str:
        return version_name(self.model_id, self.version_id)


@dataclass(frozen=True)
class VersionUpdate:
    """The mutable fields of a version; which of them apply is the update mask's business."""

    description: str = ""
    state: VersionState | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # What conversion could not read (an unknown state), reported with the other violations.
    refused: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True)
class Alias:
    model_id: str
    alias: str
    version_id: int
    update_time: datetime
    updated_by: str

    @property
    def name(self) -> str:
        return alias_name(self.model_id, self.alias)

    @property
    def version(self) -> str:
        return version_name(self.model_id, self.version_id)


@dataclass(frozen=True)
class AliasMove:
    model_id: str
    alias: str
    # None: the move created the alias.
    from_version: int | None
    # None: the move deleted the alias.
    to_version: int | None
    actor: str
    reason: str
    move_time: datetime
    revision: int
    id: int


@dataclass(frozen=True)
class PriceCap:
    currency_code: str
    micros: int


@dataclass(frozen=True)
class Constraints:
    """What ResolveModel's constraints ask of a READY version; empty fields constrain nothing."""

    model_id: str = ""
    provider: str = ""
    required_capabilities: tuple[str, ...] = ()
    min_context_window: int = 0
    max_input_price: PriceCap | None = None
    max_output_price: PriceCap | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """Why one candidate was not chosen: the field path of the first constraint it failed, and how."""

    model_version: str
    constraint: str
    reason: str


@dataclass(frozen=True)
class Resolution:
    version: ModelVersion
    # The revision the answer was read at.
    revision: int


@dataclass(frozen=True)
class Change:
    """One committed change to a model, version or alias; snapshot is None on a delete."""

    revision: int
    kind: str
    resource: str
    change_time: datetime
    snapshot: Model | ModelVersion | Alias | None


@dataclass(frozen=True)
class Progress:
    """Every change up to `revision` has been sent."""

    revision: int


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_page_token: str
