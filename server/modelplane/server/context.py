"""Who is calling and by when the call must be done, set around each call (calls.py), read by the
servicers and the pool.

A contextvar carries it because a grpc.aio handler runs in the task its wrapper runs in;
services never read it themselves: servicers pass what they need as plain arguments.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
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
_NO_CALL = Caller(actor=ANONYMOUS, role=None, method="", trace_request_id="")


def caller() -> Caller:
    """The caller of the RPC being served; an anonymous one outside any RPC (tests, the CLI)."""
    return current_caller.get(_NO_CALL)


class CallDeadline:
    """When the RPC being served must be done: its gRPC deadline as event-loop time (infinity without one).

    `task` is the call's own task: a task started from it (a stream's commit task, a background flusher
    started by a first call) inherits the contextvar but not the deadline, only the storage timeout.
    `at` is given, or read from `time_remaining` (the call's ServicerContext.time_remaining) when first
    asked: most calls never borrow a connection, so never ask.
    """

    __slots__ = ("_at", "_time_remaining", "task")

    def __init__(
        self,
        task: object,
        at: float | None = None,
        *,
        time_remaining: Callable[[], float | None] | None = None,
    ) -> None:
        self.task = task
        self._at = at
        self._time_remaining = time_remaining

    @property
    def at(self) -> float:
        if self._at is None:
            remaining = None if self._time_remaining is None else self._time_remaining()
            self._at = math.inf if remaining is None else asyncio.get_running_loop().time() + remaining
        return self._at


# Set for every RPC by the call's scope (calls.py); None outside any RPC (start-up, migrations,
# background jobs).
current_deadline: ContextVar[CallDeadline | None] = ContextVar("modelplane_call_deadline", default=None)
