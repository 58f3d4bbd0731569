"""The caller's OpenTelemetry trace context, for the calls and the log events of the clients.

Only OpenTelemetry's API is used: with no SDK configured there is never a valid current span, each
function below returns at its first check, and nothing is added to a call or an event.
"""

from __future__ import annotations

from opentelemetry import propagate, trace

Metadata = tuple[tuple[str, str], ...]


def trace_headers() -> dict[str, str]:
    """The current span's W3C trace context (traceparent, tracestate, baggage: whatever the configured
    propagator writes) as headers; empty when there is no current span."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def with_trace_context(metadata: Metadata) -> Metadata:
    """`metadata` and the current trace context (trace_headers), so that the server's span of the call
    is a child of the caller's."""
    if not trace.get_current_span().get_span_context().is_valid:
        return metadata
    return (*metadata, *trace_headers().items())


def current_trace_ids() -> tuple[str, str]:
    """The current span's trace id (32 lower-case hex digits) and span id (16), or two empty strings when
    there is no current span: what a log event's links carry, so that the event leads to its trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
