"""One failed call's rich error model (ErrorInfo, BadRequest, RetryInfo, typed details) as a plain value."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # type: ignore[import-untyped]

from tests.support import field_violations, retry_info, rich_status

M = TypeVar("M", bound=Message)


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

    def detail(self, message_type: type[M]) -> M | None:
        """The first detail of this type, unpacked."""
        for packed in self.details:
            message = message_type()
            if packed.Unpack(message):  # type: ignore[attr-defined]
                return message
        return None


def rich(error: grpc.aio.AioRpcError) -> RichError:
    """The status of a failed call with its details unpacked."""
    status = rich_status(error)
    result = RichError(
        code=error.code(),
        message=error.details() or "",
        field_paths=field_violations(error),
        details=list(status.details),
    )
    info = result.detail(error_details_pb2.ErrorInfo)
    if info is not None:
        result.reason, result.domain, result.metadata = info.reason, info.domain, dict(info.metadata)
    retry = retry_info(error)
    if retry is not None:
        result.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return result


async def fails(call: Awaitable[Any]) -> RichError:
    """The rich error of a call that must fail, with ErrorInfo in the modelplane domain."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = rich(info.value)
    assert error.domain == "modelplane"
    return error
