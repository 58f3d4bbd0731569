"""The seam through which clients hand their events to log collection, and the typed events they hand over.

A client that is given an `EventSink` calls `emit` once per event on its own hot path, so a sink must
return at once (queue the event, never do I/O inline) and must not raise; clients still guard every
call, because a broken sink must never break the work it observes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

EventStatus = Literal["ok", "error"]


@runtime_checkable
class EventSink(Protocol):
    """Receives events; `emit` must never block and never raise."""

    def emit(self, event: object) -> None:
        """Take one event (typically by putting it on a bounded queue)."""
        ...


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class InferenceEvent:
    """One model call, as seen by the caller, with the typed ids that join it to the rest of the system.

    Service-independent: nothing in it is specific to the service that made the call, so every
    service's inference events can be aggregated together (latency, tokens, cost, error rate).
    """

    # model_version is the registry resource name ("models/chat/versions/3"), or "" when the call used a
    # configured model that names no registry version.
    model_version: str
    # provider names who generated ("openai", "local", ...); provider_model is the provider's model id.
    provider: str
    provider_model: str
    # model_source says how the model was chosen: "registry", "configured" or "configured_fallback".
    model_source: str
    status: EventStatus
    # latency_seconds is measured around the provider call alone.
    latency_seconds: float
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    # cost_micros is None when no prices were known; cost_currency_code is then "".
    cost_micros: int | None = None
    cost_currency_code: str = ""
    finish_reason: str = ""
    # error_type is the exception's class name when status is "error" ("ProviderError", ...).
    error_type: str = ""
    error_message: str = ""
    # trace_id is the W3C trace id of the caller's trace; request_id is the caller's id of its request.
    trace_id: str = ""
    request_id: str = ""
    # event_id lets log collection drop a batch that is sent twice; it is unique per event.
    event_id: str = field(default_factory=_new_event_id)
    event_time: datetime = field(default_factory=_now)
