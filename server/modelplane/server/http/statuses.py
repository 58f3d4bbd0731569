"""A gRPC status as HTTP sends it: google.rpc.Status in JSON, details with their @type, and the HTTP
status code grpc-gateway gives each gRPC code (runtime.HTTPStatusFromCode)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import status_pb2  # type: ignore[import-untyped]

from modelplane.server.error_status import to_status
from modelplane.server.errors import ModelplaneError

STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    # grpc-gateway sends 400 for FAILED_PRECONDITION (the state of the system, not of the request, is
    # wrong, but HTTP has no better code); OUT_OF_RANGE too.
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_of(
    code: grpc.StatusCode,
    message: str | None,
    trailing_metadata: Any,
) -> status_pb2.Status:
    """The google.rpc.Status of an ended call: the one the server sent in its trailers, else code and
    message alone (a status from gRPC itself, such as a deadline or a refused connection)."""
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return status_pb2.Status(code=code.value[0], message=message or "")


def status_of_error(error: ModelplaneError) -> status_pb2.Status:
    """The status the gRPC server would send for `error`: the same details, built by the same code."""
    sent = to_status(error)
    return status_of(sent.code, sent.details, sent.trailing_metadata)


def http_status(status: status_pb2.Status) -> int:
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return HTTP_STATUS.get(code, 500)


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """google.rpc.Status in proto3 JSON: {"code": 5, "message": ..., "details": [{"@type": ...}, ...]}.

    Every detail the server sends is of a type this process imports (google.rpc's and modelplane.v1's);
    one that is not would be left out rather than fail the whole answer."""
    details = []
    for detail in status.details:
        try:
            details.append(json_format.MessageToDict(detail, always_print_fields_with_no_presence=True))
        except (json_format.Error, TypeError, KeyError):
            continue
    return {"code": status.code, "message": status.message, "details": details}
