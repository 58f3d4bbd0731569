"""Rich gRPC statuses (google.rpc.Status with ErrorInfo, BadRequest, RetryInfo) built from domain errors.

The status code comes from the one table in errors.py; this module only adds the details a client needs
to react without parsing messages: the stable reason, the bad field paths, and when to retry. When to
retry is said twice on UNAVAILABLE: as RetryInfo for clients that read details, and as the
`grpc-retry-pushback-ms` trailer, the one signal gRPC's built-in retry (gRFC A6, configured by the
published service config) reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.server.errors import (
    DOMAIN,
    InvalidArgument,
    ModelplaneError,
    Reason,
    Unavailable,
    reason_name,
    status_code_of,
)
from modelplane.v1.error_reason_pb2 import ErrorReason

INTERNAL_MESSAGE = "internal error"
INTERNAL_REASON = reason_name(ErrorReason.ERROR_REASON_INTERNAL)
# A status travels in trailers, which clients cap (grpc's default: 16 KiB of metadata). The message is
# percent-encoded (a non-ASCII byte takes three) and the details are base64'd, so the bounds are in
# UTF-8 bytes: at most 3 x 512 for the message and 4/3 x 6 KiB for the details, whatever the input quoted.
MAX_MESSAGE_BYTES = 512
MAX_FIELD_BYTES = 256
MAX_METADATA_VALUE_BYTES = 256
MAX_DETAILS_BYTES = 6 * 1024
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def _cut(text: str, limit: int) -> str:
    """The text cut to at most `limit` UTF-8 bytes, at a character boundary."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def _bounded_violations(error: InvalidArgument) -> error_details_pb2.BadRequest:
    """As many of the field violations as fit the details budget, each cut short."""
    bad_request = error_details_pb2.BadRequest()
    used = 0
    for v in error.violations:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=_cut(v.field, MAX_FIELD_BYTES), description=_cut(v.description, MAX_FIELD_BYTES)
        )
        used += violation.ByteSize()
        if used > MAX_DETAILS_BYTES // 2 and bad_request.field_violations:
            break
        bad_request.field_violations.append(violation)
    return bad_request


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _error_info(reason: str, metadata: Mapping[str, str]) -> any_pb2.Any:
    bounded = {
        _cut(key, MAX_FIELD_BYTES): _cut(value, MAX_METADATA_VALUE_BYTES) for key, value in metadata.items()
    }
    return _packed(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=bounded))


def _retry_delay(seconds: float) -> duration_pb2.Duration:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return delay


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _RichStatus(_Status, grpc.Status):
    """A status with trailers of its own beside grpc-status-details-bin."""


def _grpc_status(
    code: grpc.StatusCode,
    message: str,
    details: list[any_pb2.Any],
    trailers: Sequence[tuple[str, str]] = (),
) -> grpc.Status:
    # StatusCode values are (int, name) pairs; google.rpc.Status wants the int.
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    status: grpc.Status = rpc_status.to_status(proto)
    return _RichStatus(status.code, status.details, (*status.trailing_metadata, *trailers))


def to_status(error: ModelplaneError) -> grpc.Status:
    """The status a client sees for `error`: its code, its message, and the details the contract promises."""
    code = status_code_of(error)
    if code == grpc.StatusCode.INTERNAL:
        # A ModelplaneError mapped to INTERNAL is still a bug on our side: its text stays in the log.
        return internal_status()
    details = [_error_info(error.reason, error.metadata)]
    trailers: list[tuple[str, str]] = []
    if isinstance(error, InvalidArgument):
        details.append(_packed(_bounded_violations(error)))
    if isinstance(error, Unavailable):
        delay = _retry_delay(error.retry_after)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
        trailers.append((RETRY_PUSHBACK_KEY, str(delay.ToMilliseconds())))
    # A typed detail (e.g. ResolveModelFailure) is sent whole or not at all: one that would push the
    # trailers past what a default client accepts is left out, and ErrorInfo still says what happened.
    used = sum(d.ByteSize() for d in details)
    for detail in error.details:
        packed = _packed(detail)
        if used + packed.ByteSize() <= MAX_DETAILS_BYTES:
            details.append(packed)
            used += packed.ByteSize()
    return _grpc_status(code, _cut(error.message, MAX_MESSAGE_BYTES), details, trailers)


def internal_status() -> grpc.Status:
    """INTERNAL with a fixed message: what went wrong is logged under the request id, never sent."""
    return _grpc_status(
        grpc.StatusCode.INTERNAL,
        INTERNAL_MESSAGE,
        [_error_info(INTERNAL_REASON, {})],
    )


def unavailable_status(reason: Reason, message: str, retry_after: float = 1.0) -> grpc.Status:
    """UNAVAILABLE with a reason and RetryInfo, for conditions of the server rather than of a request."""
    return to_status(Unavailable(message, reason=reason, retry_after=retry_after))
