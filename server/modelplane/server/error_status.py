"""Rich gRPC statuses (google.rpc.Status with ErrorInfo, BadRequest, RetryInfo) built from domain errors.

The status code comes from the one table in errors.py; this module only adds the details a client needs
to react without parsing messages: the stable reason, the bad field paths, and when to retry.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.server.errors import DOMAIN, InvalidArgument, ModelplaneError, Unavailable, status_code_of

INTERNAL_MESSAGE = "internal error"
# A status travels in trailers, which clients cap (grpc's default: 16 KiB of metadata). These bounds
# keep every status well under it whatever a message or description quotes.
MAX_MESSAGE = 1000
MAX_DESCRIPTION = 500
MAX_METADATA_VALUE = 200
MAX_VIOLATIONS = 20


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _error_info(reason: str, metadata: Mapping[str, str]) -> any_pb2.Any:
    bounded = {key: _cut(value, MAX_METADATA_VALUE) for key, value in metadata.items()}
    return _packed(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=bounded))


def _retry_delay(seconds: float) -> duration_pb2.Duration:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return delay


def _grpc_status(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> grpc.Status:
    # StatusCode values are (int, name) pairs; google.rpc.Status wants the int.
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    status: grpc.Status = rpc_status.to_status(proto)
    return status


def to_status(error: ModelplaneError) -> grpc.Status:
    """The status a client sees for `error`: its code, its message, and the details the contract promises."""
    code = status_code_of(error)
    if code == grpc.StatusCode.INTERNAL:
        # A ModelplaneError mapped to INTERNAL is still a bug on our side: its text stays in the log.
        return internal_status()
    details = [_error_info(error.reason, error.metadata)]
    if isinstance(error, InvalidArgument):
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_cut(v.field, MAX_DESCRIPTION),
                            description=_cut(v.description, MAX_DESCRIPTION),
                        )
                        for v in error.violations[:MAX_VIOLATIONS]
                    ]
                )
            )
        )
    if isinstance(error, Unavailable):
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=_retry_delay(error.retry_after))))
    details.extend(_packed(detail) for detail in error.details)
    return _grpc_status(code, _cut(error.message, MAX_MESSAGE), details)


def internal_status() -> grpc.Status:
    """INTERNAL with a fixed message: what went wrong is logged under the request id, never sent."""
    return _grpc_status(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, [_error_info("INTERNAL", {})])


def unavailable_status(reason: str, message: str, retry_after: float = 1.0) -> grpc.Status:
    """UNAVAILABLE with a reason and RetryInfo, for conditions of the server rather than of a request."""
    return to_status(Unavailable(message, reason=reason, retry_after=retry_after))
