"""Server tracing: an OpenTelemetry span for every RPC and every SQL statement, exported as the standard
OTEL_* environment variables say.

Off unless OTEL_TRACES_EXPORTER names an exporter: an untraced server installs no interceptor and wraps
no asyncpg method, so it pays nothing per call. The SDK, its OTLP exporter and the instrumentations come
with the `otel` extra and are imported only here, only when tracing is asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

# The service.name of the server's spans unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) says
# otherwise.
DEFAULT_SERVICE_NAME = "modelplane"
# The exporters OTEL_TRACES_EXPORTER may name (a comma-separated list, as the specification has it).
EXPORTERS = ("otlp", "console")


class TracingError(ValueError):
    """Tracing was asked for and cannot run as asked; the message says what to change."""


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """True when the environment asks for traces: OTEL_TRACES_EXPORTER names an exporter and the SDK is not
    disabled by OTEL_SDK_DISABLED."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    return bool(names) and names != ["none"]


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    found: list[SpanExporter] = []
    for name in (n.strip() for n in environ["OTEL_TRACES_EXPORTER"].split(",")):
        if name == "otlp":
            # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _INSECURE, _CERTIFICATE, _TIMEOUT itself.
            found.append(OTLPSpanExporter())
        elif name == "console":
            found.append(ConsoleSpanExporter())
        elif name and name != "none":
            raise TracingError(
                f"OTEL_TRACES_EXPORTER names {name!r}; modelplane exports traces with one of"
                f" {', '.join(EXPORTERS)} (or none)"
            )
    return found


def provider_from_environment(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A tracer provider exporting as OTEL_* says, or None when tracing is not asked for.

    TracingError when it is asked for and the `otel` extra is not installed, or names an unknown exporter.
    """
    environ = os.environ if environ is None else environ
    if not tracing_requested(environ):
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingError(
            "OTEL_TRACES_EXPORTER asks for traces, and the OpenTelemetry SDK is not installed:"
            " pip install 'modelplane[otel]', or unset OTEL_TRACES_EXPORTER"
        ) from None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without either, its
    # service.name is "unknown_service...", which the default replaces.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(environ):
        # Batched on a thread of its own (sized by OTEL_BSP_*): a call never waits on the collector.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@dataclass
class Tracing:
    """The tracing of one server process: the provider, and the instrumentation that wraps asyncpg."""

    provider: TracerProvider
    _asyncpg: Any = None

    def server_interceptor(self) -> grpc.aio.ServerInterceptor:  # type: ignore[type-arg]
        """The gRPC instrumentation's aio interceptor: a span per call, its parent taken from the call's
        traceparent metadata; the handler it finds is already wrapped in the call's scope (calls.py),
        which so runs inside the span."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[type-arg,no-untyped-call]
            tracer_provider=self.provider
        )
        return interceptor

    def instrument_storage(self) -> None:
        """A span for every statement the pool runs (asyncpg's instrumentation, process-wide)."""
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        if self._asyncpg is None:
            instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=self.provider)
                self._asyncpg = instrumentor

    def shutdown(self) -> None:
        """Exports what is still batched and undoes the asyncpg instrumentation."""
        if self._asyncpg is not None:
            self._asyncpg.uninstrument()
            self._asyncpg = None
        self.provider.shutdown()
