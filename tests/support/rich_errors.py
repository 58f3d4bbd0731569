"""Reads the rich error model (ErrorInfo, BadRequest, RetryInfo, typed details) off a failed call."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_paths: list[str] = field(default_factory=list)
    retry_delay: float | None = None
    details: list[object] = field(default_factory=list)

    def detail(self, message_type: type[Message]) -> Message | None:
        for d in self.details:
            if isinstance(d, message_type):
                return d
        return None


def rich(error: grpc.aio.AioRpcError) -> RichError:
    """The status of a failed call with its details unpacked."""
    result = RichError(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return result
    from modelplane.v1 import registry_pb2

    known: list[type[Message]] = [
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
        registry_pb2.ResolveModelFailure,
    ]
    for any_detail in status.details:
        for message_type in known:
            if any_detail.Is(message_type.DESCRIPTOR):
                message = message_type()
                any_detail.Unpack(message)
                result.details.append(message)
                if isinstance(message, error_details_pb2.ErrorInfo):
                    result.reason, result.domain = message.reason, message.domain
                    result.metadata = dict(message.metadata)
                elif isinstance(message, error_details_pb2.BadRequest):
                    result.field_paths = [v.field for v in message.field_violations]
                elif isinstance(message, error_details_pb2.RetryInfo):
                    result.retry_delay = message.retry_delay.ToTimedelta().total_seconds()
    return result
