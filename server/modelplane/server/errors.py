"""Domain errors of the server and the one table that maps them to gRPC status codes.

Services raise these; the call interceptor turns them into rich statuses (ErrorInfo on every error,
BadRequest on INVALID_ARGUMENT, RetryInfo on UNAVAILABLE). The `reason` of each error is part of the
public contract: clients match on it, so a reason is never renamed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

DOMAIN = "modelplane"


def shown(value: str, limit: int = 80) -> str:
    """A caller's value quoted for an error message, cut short: a message never echoes a huge input."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (e.g. "model_version.pricing.currency_code") and what to do."""

    field: str
    description: str


class ModelplaneError(Exception):
    """Base of every error a service may raise on purpose; `reason` is the stable ErrorInfo reason."""

    reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        # Extra typed status details (protobuf messages) a servicer attached, e.g. ResolveModelFailure;
        # packed after ErrorInfo. Services never set them: they do not know protos.
        self.details: tuple[Message, ...] = ()


class InvalidArgument(ModelplaneError):
    """The request is malformed; `violations` name each bad field."""

    reason = "INVALID_FIELD"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)
        # The message of a client stream that was refused, so the capability can name it in its own terms
        # (a log batch's sequence, say); None for a unary request.
        self.stream_message: Message | None = None

    @classmethod
    def field(cls, path: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(path, description)], reason=reason)


class NotFound(ModelplaneError):
    reason = "NOT_FOUND"


class AlreadyExists(ModelplaneError):
    reason = "ALREADY_EXISTS"


class Aborted(ModelplaneError):
    """A compare-and-set lost: nothing was changed, the caller should re-read and retry."""

    reason = "ETAG_MISMATCH"


class FailedPrecondition(ModelplaneError):
    reason = "FAILED_PRECONDITION"


class OutOfRange(ModelplaneError):
    reason = "OUT_OF_RANGE"


class Unavailable(ModelplaneError):
    """Transient; `retry_after` seconds is sent as RetryInfo."""

    reason = "UNAVAILABLE"

    def __init__(self, message: str, *, reason: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class StorageUnavailable(Unavailable):
    reason = "STORAGE_UNAVAILABLE"


class Unauthenticated(ModelplaneError):
    reason = "TOKEN_INVALID"


class PermissionDenied(ModelplaneError):
    reason = "ROLE_NOT_ALLOWED"


class ResourceExhausted(ModelplaneError):
    reason = "RESOURCE_EXHAUSTED"


# The one table from domain error to status code. Looked up along the class's MRO, so a subclass
# (StorageUnavailable) inherits its parent's code.
STATUS_CODES: Mapping[type[ModelplaneError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Aborted: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ModelplaneError: grpc.StatusCode.INTERNAL,
}


def status_code_of(error: ModelplaneError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
