"""Token scopes: the named deployments, models and log services a token may act on, checked per request.

A scope is `deployments/{id}`, `models/{id}` or `services/{name}` (as Kubernetes RBAC's resourceNames or a
Vault policy's paths name resources). A scoped token may name, in any request, only the resources of its
scope for each kind its scope mentions; kinds it does not mention stay as its role allows. A token without
scopes is as before. What a request names is read from its fields by name, the same everywhere:

- resource names (`name`, `parent`, `deployment`, `model`, `model_version`, `version`, `alias`, ...;
  nested ones too, such as event links) that start with `deployments/{id}` or `models/{id}`;
- the ids a Create call names (`model_id`, `deployment_id`);
- a log event's `service`.

Free text (messages, descriptions, checked text, filters) is never read as a name.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from modelplane.server.errors import InvalidArgument, PermissionDenied
from modelplane.server.logs.columns import SERVICE_NAME
from modelplane.server.registry.names import ID_PATTERN
from modelplane.v1.error_reason_pb2 import ErrorReason

DEPLOYMENTS, MODELS, SERVICES = "deployments", "models", "services"
KINDS = (DEPLOYMENTS, MODELS, SERVICES)
MAX_SCOPES = 64
OUT_OF_SCOPE = ErrorReason.ERROR_REASON_OUT_OF_SCOPE

_ID_OF_KIND = {DEPLOYMENTS: ID_PATTERN, MODELS: ID_PATTERN, SERVICES: SERVICE_NAME}

# String fields holding a resource name ("models/chat/versions/3", "deployments/web/rollouts/2").
_NAME_FIELDS = frozenset(
    {
        "name",
        "parent",
        "deployment",
        "model",
        "model_version",
        "version",
        "target_version",
        "from_version",
        "expected_version",
        "parent_version",
        "alias",
    }
)
# String fields holding a bare id or name of one kind.
_ID_FIELDS = {"model_id": MODELS, "deployment_id": DEPLOYMENTS, "service": SERVICES}
_NAMED_KINDS = frozenset({DEPLOYMENTS, MODELS})


def parse_scopes(values: Iterable[str]) -> tuple[str, ...]:
    """The scopes, checked and without repeats, in the order given; InvalidArgument on `scopes[i]`."""
    found: list[str] = []
    for i, value in enumerate(values):
        kind, _, ident = value.strip().partition("/")
        pattern = _ID_OF_KIND.get(kind)
        if pattern is None or not pattern.fullmatch(ident):
            raise InvalidArgument.field(
                f"scopes[{i}]",
                f"{value!r} is not a scope; use deployments/{{id}}, models/{{id}} or services/{{name}},"
                " e.g. deployments/web",
            )
        scope = f"{kind}/{ident}"
        if scope not in found:
            found.append(scope)
    if len(found) > MAX_SCOPES:
        raise InvalidArgument.field("scopes", f"has {len(found)} scopes; at most {MAX_SCOPES} are allowed")
    return tuple(found)


@dataclass(frozen=True)
class _Plan:
    """What of one message type can name a resource: its name and id fields, and the nested messages
    (repeated or not) whose own plan is not empty."""

    names: tuple[str, ...]
    ids: tuple[tuple[str, str], ...]
    nested: tuple[tuple[str, bool, _Plan], ...]


_PLANS: dict[str, _Plan] = {}
_EMPTY = _Plan((), (), ())


def _plan(descriptor: Any) -> _Plan:  # Any: the stubs type upb and Python descriptors apart
    """The plan of a message type, made once per type (types that nest themselves stop at the cycle)."""
    known = _PLANS.get(descriptor.full_name)
    if known is not None:
        return known
    _PLANS[descriptor.full_name] = _EMPTY
    names: list[str] = []
    ids: list[tuple[str, str]] = []
    nested: list[tuple[str, bool, _Plan]] = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not _repeated(field):
            if field.name in _NAME_FIELDS:
                names.append(field.name)
            elif field.name in _ID_FIELDS:
                ids.append((field.name, _ID_FIELDS[field.name]))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            inner_type = field.message_type
            if inner_type is None or inner_type.GetOptions().map_entry:
                continue  # maps hold labels and contents, never names
            if inner_type.full_name.startswith("google."):
                continue
            inner = _plan(inner_type)
            if inner.names or inner.ids or inner.nested:
                nested.append((field.name, _repeated(field), inner))
    plan = _Plan(tuple(names), tuple(ids), tuple(nested))
    _PLANS[descriptor.full_name] = plan
    return plan


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@dataclass(frozen=True)
class _Named:
    """A resource a request names, and the path of the field that names it."""

    path: str
    kind: str
    ident: str


class TokenScope:
    """The resources one scoped token may name, by kind; a kind absent from the scope is unrestricted."""

    def __init__(self, scopes: Sequence[str]) -> None:
        allowed: dict[str, set[str]] = {}
        for scope in scopes:
            kind, _, ident = scope.partition("/")
            allowed.setdefault(kind, set()).add(ident)
        self.scopes = tuple(scopes)
        self._allowed = {kind: frozenset(idents) for kind, idents in allowed.items()}

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of(scopes: tuple[str, ...]) -> TokenScope | None:
        """The scope of a token's stored scopes; None for a token without any (every resource)."""
        return TokenScope(scopes) if scopes else None

    def check(self, request: Any) -> None:
        """PermissionDenied (OUT_OF_SCOPE) naming the first field whose resource is outside the scope."""
        if not isinstance(request, Message):
            return
        outside = self._outside(request, _plan(request.DESCRIPTOR))
        if outside is None:
            return
        resource = f"{outside.kind}/{outside.ident}"
        mine = ", ".join(f"{outside.kind}/{i}" for i in sorted(self._allowed[outside.kind]))
        raise PermissionDenied(
            f"{outside.path} names {resource}, outside this token's scope ({mine}); use a token scoped to it",
            reason=OUT_OF_SCOPE,
            metadata={"resource": resource, "field": outside.path},
        )

    def _outside(self, message: Any, plan: _Plan) -> _Named | None:
        for field in plan.names:
            value: str = getattr(message, field)
            if value:
                kind, _, rest = value.partition("/")
                allowed = self._allowed.get(kind) if kind in _NAMED_KINDS else None
                if allowed is not None and rest.partition("/")[0] not in allowed:
                    return _Named(field, kind, rest.partition("/")[0])
        for field, kind in plan.ids:
            value = getattr(message, field)
            allowed = self._allowed.get(kind)
            if value and allowed is not None and value not in allowed:
                return _Named(field, kind, value)
        for field, repeated, inner in plan.nested:
            if repeated:
                for i, item in enumerate(getattr(message, field)):
                    found = self._outside(item, inner)
                    if found is not None:
                        return _Named(f"{field}[{i}].{found.path}", found.kind, found.ident)
            elif message.HasField(field):
                found = self._outside(getattr(message, field), inner)
                if found is not None:
                    return _Named(f"{field}.{found.path}", found.kind, found.ident)
        return None
