"""The exceptions a modelplane client raises: one class per gRPC status code and one per documented reason.

Every failed call surfaces as a `ModelplaneError` built by `from_rpc_error` from the rich status the server
sends (google.rpc.Status in the `grpc-status-details-bin` trailer): `ErrorInfo` gives the reason and its
metadata, `BadRequest` the field violations, `RetryInfo` the delay before a retry, and the registry's
`ResolveModelFailure` the rejected candidates. Callers catch by meaning (`except ModelNotFound`) or by code
(`except NotFound`); the reason classes subclass their code's class, so both work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

# googleapis-common-protos ships .pyi files but no py.typed marker.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from modelplane.v1 import registry_pb2

DOMAIN = "modelplane"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"

# The reason classes join __all__ in the generated block below.
__all__ = [
    "DOMAIN",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "ModelplaneError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_class_for",
    "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. "model_version.pricing.currency_code") and what is wrong."""

    field: str
    description: str


class ModelplaneError(Exception):
    """A failed modelplane call: status code, stable ErrorInfo reason and the details the server attached."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    # The reason a class stands for; "" for the per-code classes, which accept any reason.
    default_reason: ClassVar[str] = ""

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        domain: str = DOMAIN,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
        request_id: str | None = None,
        details: Iterable[Message] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: str = self.default_reason if reason is None else reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        # Seconds the server asked the caller to wait before retrying (google.rpc.RetryInfo).
        self.retry_after = retry_after
        # The server's id of the failed call, for finding its log lines.
        self.request_id = request_id
        # Every status detail, unpacked when its type is known (ErrorInfo, BadRequest, ...), else the Any.
        self.details: tuple[Message, ...] = tuple(details)

    def __str__(self) -> str:
        head = self.code.name if not self.reason else f"{self.code.name} {self.reason}"
        text = f"{head}: {self.message}" if self.message else head
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(message={self.message!r}, reason={self.reason!r})"


# One class per status code (OK has none: it is not an error).


class Cancelled(ModelplaneError):
    code = grpc.StatusCode.CANCELLED


class Unknown(ModelplaneError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ModelplaneError):
    """The request is malformed; `field_violations` name each bad field. Retrying the same request fails."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ModelplaneError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ModelplaneError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ModelplaneError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ModelplaneError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ModelplaneError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ModelplaneError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ModelplaneError):
    """A compare-and-set lost and nothing changed: re-read, then decide whether to try again."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(ModelplaneError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ModelplaneError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ModelplaneError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(ModelplaneError):
    """Transient: the call may be retried, after `retry_after` seconds when the server said so."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ModelplaneError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ModelplaneError):
    code = grpc.StatusCode.UNAUTHENTICATED


class _ResolveModelFailureDetails(ModelplaneError):
    """The ResolveModelFailure detail of a NO_MATCHING_MODEL error, read as properties."""

    @property
    def _failure(self) -> registry_pb2.ResolveModelFailure | None:
        for detail in self.details:
            if isinstance(detail, registry_pb2.ResolveModelFailure):
                return detail
        return None

    @property
    def rejections(self) -> tuple[registry_pb2.CandidateRejection, ...]:
        """For each candidate version, the first constraint it failed (at most 100 of them)."""
        failure = self._failure
        return tuple(failure.rejections) if failure is not None else ()

    @property
    def candidate_count(self) -> int:
        """How many versions were considered in all (may exceed len(rejections))."""
        failure = self._failure
        if failure is not None:
            return failure.candidate_count
        # The server also puts the count in ErrorInfo.metadata, which survives proxies that drop details.
        count = self.metadata.get("candidate_count", "")
        return int(count) if count.isdigit() else 0


# BEGIN generated by scripts/gen_errors.py from protos/modelplane/v1/error_reason.proto
# One class per value of modelplane.v1.ErrorReason, subclassing its code's.


class ModelNotFound(NotFound):
    """No model has the name in the request."""

    default_reason = "MODEL_NOT_FOUND"


class ModelVersionNotFound(NotFound):
    """The model has no version with the name in the request."""

    default_reason = "MODEL_VERSION_NOT_FOUND"


class AliasNotFound(NotFound):
    """The model has no alias with the name in the request."""

    default_reason = "ALIAS_NOT_FOUND"


class NoMatchingModel(_ResolveModelFailureDetails, NotFound):
    """ResolveModel found no version satisfying the constraints; a ResolveModelFailure detail says, for
    each candidate, the first constraint it failed, and ErrorInfo.metadata "candidate_count" how many
    candidates there were.
    """

    default_reason = "NO_MATCHING_MODEL"


class PolicyNotFound(NotFound):
    """No guardrail policy has the name in the request."""

    default_reason = "POLICY_NOT_FOUND"


class PolicyRevisionNotFound(NotFound):
    """The policy exists but not at the revision asked for."""

    default_reason = "POLICY_REVISION_NOT_FOUND"


class DeploymentNotFound(NotFound):
    """No deployment has the name in the request."""

    default_reason = "DEPLOYMENT_NOT_FOUND"


class RolloutNotFound(NotFound):
    """The deployment has no rollout with the name in the request."""

    default_reason = "ROLLOUT_NOT_FOUND"


class TokenNotFound(NotFound):
    """No API token has the name or id given."""

    default_reason = "TOKEN_NOT_FOUND"


class ModelAlreadyExists(AlreadyExists):
    """The model id is taken; pick another or get the existing model."""

    default_reason = "MODEL_ALREADY_EXISTS"


class PolicyAlreadyExists(AlreadyExists):
    """The policy id is taken."""

    default_reason = "POLICY_ALREADY_EXISTS"


class DeploymentAlreadyExists(AlreadyExists):
    """The deployment id is taken, or another deployment already serves the same model and environment."""

    default_reason = "DEPLOYMENT_ALREADY_EXISTS"


class TokenAlreadyExists(AlreadyExists):
    """An API token with that name exists."""

    default_reason = "TOKEN_ALREADY_EXISTS"


class EtagMismatch(Aborted):
    """The etag in the request is not the resource's current one and nothing was changed; re-read, then
    decide again.
    """

    default_reason = "ETAG_MISMATCH"


class AliasConflict(Aborted):
    """The alias does not point to the version the request expected (or kept moving) and nothing was
    changed; read it again and retry. ErrorInfo.metadata "current_version" is where it points.
    """

    default_reason = "ALIAS_CONFLICT"


class ModelHasVersions(FailedPrecondition):
    """A model with versions is not deleted unless asked to; delete its versions first or set force."""

    default_reason = "MODEL_HAS_VERSIONS"


class VersionHasAliases(FailedPrecondition):
    """Aliases point at the version; move or delete them first."""

    default_reason = "VERSION_HAS_ALIASES"


class VersionArchived(FailedPrecondition):
    """The version (or the one an alias points to) is ARCHIVED and can be neither aliased, resolved nor
    deployed; pick a READY or DEPRECATED version.
    """

    default_reason = "VERSION_ARCHIVED"


class RolloutInProgress(FailedPrecondition):
    """The deployment has an active rollout; finish, roll back or abort it first."""

    default_reason = "ROLLOUT_IN_PROGRESS"


class IllegalTransition(FailedPrecondition):
    """The rollout's state does not allow this action (promoting a finished rollout, say)."""

    default_reason = "ILLEGAL_TRANSITION"


class NoReadyEndpoint(FailedPrecondition):
    """ResolveRoute found no endpoint that is not NOT_READY in either slot of the deployment."""

    default_reason = "NO_READY_ENDPOINT"


class InvalidField(InvalidArgument):
    """One or more fields are malformed; the BadRequest detail names every bad field and what to do."""

    default_reason = "INVALID_FIELD"


class InvalidFilter(InvalidArgument):
    """A list filter does not parse or names an unknown field; BadRequest names the filter field."""

    default_reason = "INVALID_FILTER"


class InvalidPageToken(InvalidArgument):
    """The page token was not issued for this list call (other filter or order) or is corrupt."""

    default_reason = "INVALID_PAGE_TOKEN"


class RequestIdReused(InvalidArgument):
    """The request id was used before for a different request; pick a new one."""

    default_reason = "REQUEST_ID_REUSED"


class InvalidRule(InvalidArgument):
    """A policy rule does not compile (bad regular expression or JSON schema, too many terms, a duplicate
    id); BadRequest names the rule's field.
    """

    default_reason = "INVALID_RULE"


class FallbackBreaksPolicy(InvalidArgument):
    """A policy's fallback content would itself be blocked or redacted by the policy's own rules."""

    default_reason = "FALLBACK_BREAKS_POLICY"


class TextTooLarge(InvalidArgument):
    """The text to check is over the documented size limit; BadRequest names the field."""

    default_reason = "TEXT_TOO_LARGE"


class BatchTooLarge(InvalidArgument):
    """A log batch holds more events than the documented limit; split it."""

    default_reason = "BATCH_TOO_LARGE"


class MalformedRequest(InvalidArgument):
    """The request bytes are no message of the method's type (or a string is not UTF-8); BadRequest names
    "request".
    """

    default_reason = "MALFORMED_REQUEST"


class RevisionCompacted(OutOfRange):
    """A watch asked for changes no longer kept; re-read the state, then watch from the revision after it."""

    default_reason = "REVISION_COMPACTED"


class SumOutOfRange(OutOfRange):
    """A sum of an aggregation is beyond the int64 range; narrow the filter's time range or group more
    finely.
    """

    default_reason = "SUM_OUT_OF_RANGE"


class TooManyGroups(OutOfRange):
    """An aggregation's groups do not fit in one response; narrow the filter's time range, group by fewer
    keys or use a wider bucket.
    """

    default_reason = "TOO_MANY_GROUPS"


class StorageUnavailable(Unavailable):
    """The database could not be reached; retry after the RetryInfo delay."""

    default_reason = "STORAGE_UNAVAILABLE"


class ShuttingDown(Unavailable):
    """The server is draining; retry, on another server if there is one, after the RetryInfo delay."""

    default_reason = "SHUTTING_DOWN"


class TokenMissing(Unauthenticated):
    """The call carries no bearer token."""

    default_reason = "TOKEN_MISSING"


class TokenInvalid(Unauthenticated):
    """The bearer token is unknown, revoked or expired."""

    default_reason = "TOKEN_INVALID"


class RoleNotAllowed(PermissionDenied):
    """The token's role may not call this method."""

    default_reason = "ROLE_NOT_ALLOWED"


class OutOfScope(PermissionDenied):
    """The token's scopes do not cover the resource the call names."""

    default_reason = "OUT_OF_SCOPE"


class ResponseTooLarge(ResourceExhausted):
    """The response would exceed the message limit; ErrorInfo.metadata has "response_bytes" and
    "max_bytes". Ask for fewer items at a time.
    """

    default_reason = "RESPONSE_TOO_LARGE"


class TooManyUnlistedEndpoints(ResourceExhausted):
    """The deployment already keeps the most health reports for addresses no slot lists; report for a
    listed address, or wait until such reports expire.
    """

    default_reason = "TOO_MANY_UNLISTED_ENDPOINTS"


# The one table from an ErrorInfo reason (domain "modelplane") to its class.
CLASS_BY_REASON: Mapping[str, type[ModelplaneError]] = {
    "MODEL_NOT_FOUND": ModelNotFound,
    "MODEL_VERSION_NOT_FOUND": ModelVersionNotFound,
    "ALIAS_NOT_FOUND": AliasNotFound,
    "NO_MATCHING_MODEL": NoMatchingModel,
    "POLICY_NOT_FOUND": PolicyNotFound,
    "POLICY_REVISION_NOT_FOUND": PolicyRevisionNotFound,
    "DEPLOYMENT_NOT_FOUND": DeploymentNotFound,
    "ROLLOUT_NOT_FOUND": RolloutNotFound,
    "TOKEN_NOT_FOUND": TokenNotFound,
    "MODEL_ALREADY_EXISTS": ModelAlreadyExists,
    "POLICY_ALREADY_EXISTS": PolicyAlreadyExists,
    "DEPLOYMENT_ALREADY_EXISTS": DeploymentAlreadyExists,
    "TOKEN_ALREADY_EXISTS": TokenAlreadyExists,
    "ETAG_MISMATCH": EtagMismatch,
    "ALIAS_CONFLICT": AliasConflict,
    "MODEL_HAS_VERSIONS": ModelHasVersions,
    "VERSION_HAS_ALIASES": VersionHasAliases,
    "VERSION_ARCHIVED": VersionArchived,
    "ROLLOUT_IN_PROGRESS": RolloutInProgress,
    "ILLEGAL_TRANSITION": IllegalTransition,
    "NO_READY_ENDPOINT": NoReadyEndpoint,
    "INVALID_FIELD": InvalidField,
    "INVALID_FILTER": InvalidFilter,
    "INVALID_PAGE_TOKEN": InvalidPageToken,
    "REQUEST_ID_REUSED": RequestIdReused,
    "INVALID_RULE": InvalidRule,
    "FALLBACK_BREAKS_POLICY": FallbackBreaksPolicy,
    "TEXT_TOO_LARGE": TextTooLarge,
    "BATCH_TOO_LARGE": BatchTooLarge,
    "MALFORMED_REQUEST": MalformedRequest,
    "REVISION_COMPACTED": RevisionCompacted,
    "SUM_OUT_OF_RANGE": SumOutOfRange,
    "TOO_MANY_GROUPS": TooManyGroups,
    "STORAGE_UNAVAILABLE": StorageUnavailable,
    "SHUTTING_DOWN": ShuttingDown,
    "TOKEN_MISSING": TokenMissing,
    "TOKEN_INVALID": TokenInvalid,
    "ROLE_NOT_ALLOWED": RoleNotAllowed,
    "OUT_OF_SCOPE": OutOfScope,
    "RESPONSE_TOO_LARGE": ResponseTooLarge,
    "TOO_MANY_UNLISTED_ENDPOINTS": TooManyUnlistedEndpoints,
    "INTERNAL": Internal,
}
__all__ += [
    "AliasConflict",
    "AliasNotFound",
    "BatchTooLarge",
    "DeploymentAlreadyExists",
    "DeploymentNotFound",
    "EtagMismatch",
    "FallbackBreaksPolicy",
    "IllegalTransition",
    "InvalidField",
    "InvalidFilter",
    "InvalidPageToken",
    "InvalidRule",
    "MalformedRequest",
    "ModelAlreadyExists",
    "ModelHasVersions",
    "ModelNotFound",
    "ModelVersionNotFound",
    "NoMatchingModel",
    "NoReadyEndpoint",
    "OutOfScope",
    "PolicyAlreadyExists",
    "PolicyNotFound",
    "PolicyRevisionNotFound",
    "RequestIdReused",
    "ResponseTooLarge",
    "RevisionCompacted",
    "RoleNotAllowed",
    "RolloutInProgress",
    "RolloutNotFound",
    "ShuttingDown",
    "StorageUnavailable",
    "SumOutOfRange",
    "TextTooLarge",
    "TokenAlreadyExists",
    "TokenInvalid",
    "TokenMissing",
    "TokenNotFound",
    "TooManyGroups",
    "TooManyUnlistedEndpoints",
    "VersionArchived",
    "VersionHasAliases",
]
# END generated by scripts/gen_errors.py


_CODE_CLASSES: tuple[type[ModelplaneError], ...] = (
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
)
CLASS_BY_CODE: Mapping[grpc.StatusCode, type[ModelplaneError]] = {cls.code: cls for cls in _CODE_CLASSES}


def error_class_for(code: grpc.StatusCode, reason: str = "", domain: str = DOMAIN) -> type[ModelplaneError]:
    """The class for a status: the reason's class when it is a modelplane reason sent with its own code,
    else the code's class, so an unknown or mismatched reason never hides the code."""
    code_class = CLASS_BY_CODE.get(code, Unknown)
    if domain in (DOMAIN, ""):
        reason_class = CLASS_BY_REASON.get(reason)
        if reason_class is not None and issubclass(reason_class, code_class):
            return reason_class
    return code_class


# Detail types the client unpacks from google.protobuf.Any; anything else stays an Any.
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    registry_pb2.ResolveModelFailure,
)


def _unpack(detail: any_pb2.Any) -> Message:
    for detail_type in _DETAIL_TYPES:
        message = detail_type()
        # Unpack checks the type URL and leaves `message` alone on a mismatch.
        if detail.Unpack(message):
            return message
    return detail


def _call_value(error: grpc.RpcError, name: str) -> Any:
    # Errors of both the sync and the aio API expose code(), details() and the metadata as plain methods;
    # a bare grpc.RpcError (raised by some interceptors) has none of them.
    method = getattr(error, name, None)
    return method() if callable(method) else None


def _pairs(metadata: Any) -> list[tuple[str, str | bytes]]:
    if not metadata:
        return []
    return [(str(key), value) for key, value in metadata]


def _rich_status(trailing: list[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    # Read straight from the trailer rather than through grpc_status.rpc_status.from_call: that helper
    # raises when a proxy rewrote the status message, and its aio variant must await a live call, while an
    # AioRpcError already holds everything.
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def from_rpc_error(error: grpc.RpcError) -> ModelplaneError:
    """The ModelplaneError for a failed call, from a grpc.aio.AioRpcError or a sync grpc.RpcError."""
    code = _call_value(error, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = _call_value(error, "details") or ""
    trailing = _pairs(_call_value(error, "trailing_metadata"))
    initial = _pairs(_call_value(error, "initial_metadata"))

    status = _rich_status(trailing)
    details = tuple(_unpack(detail) for detail in status.details) if status is not None else ()
    if status is not None and status.message and not message:
        message = status.message

    reason = ""
    domain = DOMAIN
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    request_id: str | None = None
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo):
            reason, domain, metadata = detail.reason, detail.domain, dict(detail.metadata)
        elif isinstance(detail, error_details_pb2.BadRequest):
            violations.extend(FieldViolation(v.field, v.description) for v in detail.field_violations)
        elif isinstance(detail, error_details_pb2.RetryInfo):
            retry_after = detail.retry_delay.ToTimedelta().total_seconds()
        elif isinstance(detail, error_details_pb2.RequestInfo) and detail.request_id:
            request_id = detail.request_id
    for key, value in (*trailing, *initial):
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            request_id = value
            break

    cls = error_class_for(code, reason, domain)
    return cls(
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_after=retry_after,
        request_id=request_id,
        details=details,
    )
