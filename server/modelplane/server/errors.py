"""Domain errors of the server and the one table that maps them to gRPC status codes.

Services raise these; the call's scope (calls.py) turns them into rich statuses (ErrorInfo on every
error, BadRequest on INVALID_ARGUMENT, RetryInfo on UNAVAILABLE). The `reason` of each error is part of the
public contract: it must be a value of `modelplane.v1.ErrorReason` (protos/modelplane/v1/error_reason.proto)
sent with that value's status code. An error built with any other reason, or with a reason of another
status code, fails where it is built (a bug, answered INTERNAL), so the server cannot send a reason the
clients were not generated from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from google.protobuf.message import Message

from modelplane.v1 import error_reason_pb2
from modelplane.v1.error_reason_pb2 import ErrorReason

DOMAIN = "modelplane"
# A reason as services give it: a value of the generated enum, or its wire name ("MODEL_NOT_FOUND").
Reason: TypeAlias = "ErrorReason.ValueType | str"
_PREFIX = "ERROR_REASON_"
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _reason_codes() -> dict[str, grpc.StatusCode]:
    codes = {}
    for value in ErrorReason.DESCRIPTOR.values:
        if value.number:  # 0, UNSPECIFIED, is protobuf's default and never sent
            number = value.GetOptions().Extensions[error_reason_pb2.status_code]
            codes[value.name.removeprefix(_PREFIX)] = _CODE_BY_NUMBER[number]
    return codes


# Every reason of the contract (its wire name) and the one status code it is sent with.
REASON_CODES: Mapping[str, grpc.StatusCode] = _reason_codes()


def reason_name(reason: Reason) -> str:
    """The wire name of a reason of the contract; ValueError for anything else."""
    name = reason if isinstance(reason, str) else ErrorReason.Name(reason).removeprefix(_PREFIX)
    if name not in REASON_CODES:
        raise ValueError(f"{name!r} is no value of modelplane.v1.ErrorReason; add it to error_reason.proto")
    return name


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
    """Base of every error a service may raise on purpose; `reason` is the stable ErrorInfo reason.

    A class's `reason` is the default of its instances; "" means every instance must be given one.
    """

    reason: str = reason_name(ErrorReason.ERROR_REASON_INTERNAL)

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        # A class default outside the contract fails at import, not when first raised.
        if cls.__dict__.get("reason"):
            cls.reason = reason_name(cls.reason)

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason_name(reason)
        if not self.reason:
            raise TypeError(f"{type(self).__name__} needs a reason of modelplane.v1.ErrorReason")
        expected = REASON_CODES[self.reason]
        if status_code_of(self) != expected:
            raise ValueError(
                f"reason {self.reason} is sent with {expected.name}, not by {type(self).__name__}"
            )
        self.metadata: dict[str, str] = dict(metadata or {})
        # Extra typed status details (protobuf messages) a servicer attached, e.g. ResolveModelFailure;
        # packed after ErrorInfo. Services never set them: they do not know protos.
        self.details: tuple[Message, ...] = ()


class InvalidArgument(ModelplaneError):
    """The request is malformed; `violations` name each bad field."""

    reason = reason_name(ErrorReason.ERROR_REASON_INVALID_FIELD)

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)
        # The message of a client stream that was refused, so the capability can name it in its own terms
        # (a log batch's sequence, say); None for a unary request.
        self.stream_message: Message | None = None

    @classmethod
    def field(cls, path: str, description: str, *, reason: Reason | None = None) -> InvalidArgument:
        return cls([FieldViolation(path, description)], reason=reason)


class NotFound(ModelplaneError):
    reason = ""

    @classmethod
    def resource(cls, kind: str, name: str, reason: Reason) -> NotFound:
        """The NOT_FOUND of the resource `name` (a "model", a "policy", ...), named in ErrorInfo.metadata."""
        return cls(f"{kind} {name} does not exist", reason=reason, metadata={"resource": name})


class AlreadyExists(ModelplaneError):
    reason = ""


class Aborted(ModelplaneError):
    """A compare-and-set lost: nothing was changed, the caller should re-read and retry."""

    reason = reason_name(ErrorReason.ERROR_REASON_ETAG_MISMATCH)


class FailedPrecondition(ModelplaneError):
    reason = ""


class OutOfRange(ModelplaneError):
    reason = ""


class Unavailable(ModelplaneError):
    """Transient; `retry_after` seconds is sent as RetryInfo."""

    reason = ""

    def __init__(self, message: str, *, reason: Reason | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class StorageUnavailable(Unavailable):
    reason = reason_name(ErrorReason.ERROR_REASON_STORAGE_UNAVAILABLE)


class Unauthenticated(ModelplaneError):
    reason = reason_name(ErrorReason.ERROR_REASON_TOKEN_INVALID)


class PermissionDenied(ModelplaneError):
    reason = reason_name(ErrorReason.ERROR_REASON_ROLE_NOT_ALLOWED)


class ResourceExhausted(ModelplaneError):
    reason = ""


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
