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

__all__ = [
    "DOMAIN",
    "Aborted",
    "AliasConflict",
    "AliasNotFound",
    "AlreadyExists",
    "BatchTooLarge",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "DeploymentAlreadyExists",
    "DeploymentNotFound",
    "EtagMismatch",
    "FailedPrecondition",
    "FallbackBreaksPolicy",
    "FieldViolation",
    "IllegalTransition",
    "Internal",
    "InvalidArgument",
    "InvalidField",
    "InvalidFilter",
    "InvalidPageToken",
    "InvalidRule",
    "ModelAlreadyExists",
    "ModelHasVersions",
    "ModelNotFound",
    "ModelVersionNotFound",
    "ModelplaneError",
    "NoMatchingModel",
    "NoReadyEndpoint",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PolicyAlreadyExists",
    "PolicyNotFound",
    "PolicyRevisionNotFound",
    "RequestIdReused",
    "ResourceExhausted",
    "RevisionCompacted",
    "RoleNotAllowed",
    "RolloutInProgress",
    "RolloutNotFound",
    "ShuttingDown",
    "StorageUnavailable",
    "TextTooLarge",
    "TokenInvalid",
    "TokenMissing",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "VersionArchived",
    "VersionHasAliases",
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


# One class per documented ErrorInfo reason.


class ModelNotFound(NotFound):
    default_reason = "MODEL_NOT_FOUND"


class ModelVersionNotFound(NotFound):
    default_reason = "MODEL_VERSION_NOT_FOUND"


class AliasNotFound(NotFound):
    default_reason = "ALIAS_NOT_FOUND"


class NoMatchingModel(NotFound):
    """ResolveModel found no version satisfying the constraints; `rejections` says why for each candidate."""

    default_reason = "NO_MATCHING_MODEL"

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


class PolicyNotFound(NotFound):
    default_reason = "POLICY_NOT_FOUND"


class PolicyRevisionNotFound(NotFound):
    """The policy exists but not at the revision asked for."""

    default_reason = "POLICY_REVISION_NOT_FOUND"


class DeploymentNotFound(NotFound):
    default_reason = "DEPLOYMENT_NOT_FOUND"


class RolloutNotFound(NotFound):
    default_reason = "ROLLOUT_NOT_FOUND"


class DeploymentAlreadyExists(AlreadyExists):
    """The deployment id is taken, or another deployment already serves the same model and environment."""

    default_reason = "DEPLOYMENT_ALREADY_EXISTS"


class RolloutInProgress(FailedPrecondition):
    """The deployment has an active rollout; finish, roll back or abort it first."""

    default_reason = "ROLLOUT_IN_PROGRESS"


class IllegalTransition(FailedPrecondition):
    """The rollout's state does not allow this action (promoting a finished rollout, say)."""

    default_reason = "ILLEGAL_TRANSITION"


class NoReadyEndpoint(FailedPrecondition):
    """ResolveRoute found no endpoint that is not NOT_READY in either slot of the deployment."""

    default_reason = "NO_READY_ENDPOINT"


class ModelAlreadyExists(AlreadyExists):
    default_reason = "MODEL_ALREADY_EXISTS"


class PolicyAlreadyExists(AlreadyExists):
    default_reason = "POLICY_ALREADY_EXISTS"


class EtagMismatch(Aborted):
    default_reason = "ETAG_MISMATCH"


class AliasConflict(Aborted):
    default_reason = "ALIAS_CONFLICT"


class ModelHasVersions(FailedPrecondition):
    default_reason = "MODEL_HAS_VERSIONS"


class VersionHasAliases(FailedPrecondition):
    default_reason = "VERSION_HAS_ALIASES"


class VersionArchived(FailedPrecondition):
    default_reason = "VERSION_ARCHIVED"


class InvalidField(InvalidArgument):
    default_reason = "INVALID_FIELD"


class InvalidFilter(InvalidArgument):
    default_reason = "INVALID_FILTER"


class InvalidPageToken(InvalidArgument):
    default_reason = "INVALID_PAGE_TOKEN"


class RequestIdReused(InvalidArgument):
    """The request id was used before for a different request; pick a new one."""

    default_reason = "REQUEST_ID_REUSED"


class InvalidRule(InvalidArgument):
    """A policy rule does not compile (bad regular expression, JSON schema, too many terms, a duplicate id);
    `field_violations` name the rule's field, e.g. "policy.rules[3].regex.pattern"."""

    default_reason = "INVALID_RULE"


class FallbackBreaksPolicy(InvalidArgument):
    """A policy's fallback content would itself be blocked or redacted by the policy's own rules."""

    default_reason = "FALLBACK_BREAKS_POLICY"


class TextTooLarge(InvalidArgument):
    """The text to check is over the server's documented size limit; `field_violations` name the field."""

    default_reason = "TEXT_TOO_LARGE"


class BatchTooLarge(InvalidArgument):
    """A log batch holds more than 1,000 events; split it."""

    default_reason = "BATCH_TOO_LARGE"


class RevisionCompacted(OutOfRange):
    """A watch asked for changes no longer kept; re-read the state, then watch from the revision after it."""

    default_reason = "REVISION_COMPACTED"


class StorageUnavailable(Unavailable):
    default_reason = "STORAGE_UNAVAILABLE"


class ShuttingDown(Unavailable):
    default_reason = "SHUTTING_DOWN"


class TokenMissing(Unauthenticated):
    default_reason = "TOKEN_MISSING"


class TokenInvalid(Unauthenticated):
    default_reason = "TOKEN_INVALID"


class RoleNotAllowed(PermissionDenied):
    default_reason = "ROLE_NOT_ALLOWED"


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
_REASON_CLASSES: tuple[type[ModelplaneError], ...] = (
    ModelNotFound,
    ModelVersionNotFound,
    AliasNotFound,
    NoMatchingModel,
    PolicyNotFound,
    PolicyRevisionNotFound,
    DeploymentNotFound,
    RolloutNotFound,
    DeploymentAlreadyExists,
    RolloutInProgress,
    IllegalTransition,
    NoReadyEndpoint,
    ModelAlreadyExists,
    PolicyAlreadyExists,
    EtagMismatch,
    AliasConflict,
    ModelHasVersions,
    VersionHasAliases,
    VersionArchived,
    InvalidField,
    InvalidFilter,
    InvalidPageToken,
    RequestIdReused,
    InvalidRule,
    FallbackBreaksPolicy,
    TextTooLarge,
    BatchTooLarge,
    RevisionCompacted,
    StorageUnavailable,
    ShuttingDown,
    TokenMissing,
    TokenInvalid,
    RoleNotAllowed,
)

CLASS_BY_CODE: Mapping[grpc.StatusCode, type[ModelplaneError]] = {cls.code: cls for cls in _CODE_CLASSES}
# The one table from an ErrorInfo reason (domain "modelplane") to its class.
CLASS_BY_REASON: Mapping[str, type[ModelplaneError]] = {cls.default_reason: cls for cls in _REASON_CLASSES}


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
