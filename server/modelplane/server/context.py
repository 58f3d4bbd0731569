"""Who is calling: the caller's identity and request id, set by the interceptors, read by the servicers.

A contextvar carries it because a grpc.aio handler runs in the task the interceptor's wrapper runs in;
services never read it themselves: servicers pass what they need as plain arguments.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelplane.server.auth.scopes import TokenScope

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one RPC."""

    # The token's name, or "anonymous" on a server without auth.
    actor: str
    # The token's role, or None on a server without auth (every RPC allowed).
    role: str | None
    # The full gRPC method, e.g. "/modelplane.v1.ModelRegistryService/GetModel".
    method: str
    # The x-request-id metadata value (or a generated one); ties log lines of one call together.
    trace_request_id: str
    # What a scoped token may name; None: whatever the role allows.
    scope: TokenScope | None = None


current_caller: ContextVar[Caller] = ContextVar("modelplane_caller")


def caller() -> Caller:
    """The caller of the RPC being served; an anonymous one outside any RPC (tests, the CLI)."""
    return current_caller.get(Caller(actor=ANONYMOUS, role=None, method="", trace_request_id=""))


@dataclass(frozen=True)
class CallDeadline:
    """When the RPC being served must be done: its gRPC deadline as event-loop time (infinity without one).

    `task` is the call's own task: a task started from it (a stream's commit task, a background flusher
    started by a first call) inherits the contextvar but not the deadline, only the storage timeout.
    """

    task: object
    at: float


# Set for every RPC by the interceptor; None outside any RPC (start-up, migrations, background jobs).
current_deadline: ContextVar[CallDeadline | None] = ContextVar("modelplane_call_deadline", default=None)
