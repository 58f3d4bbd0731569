"""LLMClient: completes prompts with the model the registry chooses, prices each call and reports it.

Model choice. Without a registry the client always uses its configured model. With one, the first call
(or `current_model()`) resolves the alias or the constraints, once, however many calls arrive together;
the chosen version is cached and a background task watches the registry from the revision of that
answer: when the alias moves, the client switches to the new version; with constraints, any change to
models or versions makes it resolve again. A broken watch stream is reopened with backoff (capped at
`refresh_interval`), resolving afresh before it watches again, so no move is missed.

Registry trouble never fails an inference. If the registry cannot be reached on the first resolution
(UNAVAILABLE, DEADLINE_EXCEEDED, a connection error, or no answer within `resolve_timeout`), calls use
the configured model, marked `model_source="configured_fallback"`, while the background task keeps
trying; once it succeeds, calls use the registry's version. If the registry goes away later, calls keep
the last version it chose. Other first-resolution errors (an unknown alias, no matching model, a denied
token) are configuration errors and are raised to the caller, and the next call tries again.

Provider model ids. A registry version names its provider's model in `source_uri`: a leading
"<scheme>:" that is not followed by "//" is the provider's prefix and is dropped ("openai:gpt-4o" ->
"gpt-4o", "local:echo" -> "echo"); any other URI ("s3://models/chat/7", "llama3") is used as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from opentelemetry import trace

from modelplane.client.events import EventSink, EventStatus, GuardedSink, InferenceEvent
from modelplane.client.retry import Backoff, BackoffPolicy, is_unreachable
from modelplane.inference.providers import (
    ChatMessage,
    GenerationRequest,
    Provider,
    TokenUsage,
    as_messages,
)
from modelplane.pricing import Cost, cost_of
from modelplane.v1 import registry_pb2

logger = logging.getLogger(__name__)

ModelSource = Literal["registry", "configured", "configured_fallback"]

_PROVIDER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?!//)")
# The registry watch is reopened after at least half of 50 ms, doubling up to refresh_interval.
_FIRST_RETRY_DELAY = 0.05
_MAX_ERROR_MESSAGE = 500
_TRAFFIC_SLOTS = ("", "stable", "canary")
_tracer = trace.get_tracer("modelplane.inference")


def provider_model_id(source_uri: str) -> str:
    """The provider's model id named by a version's source_uri (see the module doc for the mapping)."""
    stripped = _PROVIDER_PREFIX.sub("", source_uri, count=1)
    return stripped or source_uri


class ModelRegistry(Protocol):
    """What LLMClient needs of the registry client (modelplane.client.registry.ModelRegistryClient)."""

    async def resolve_model(
        self,
        *,
        alias: str | None = None,
        constraints: registry_pb2.ModelConstraints | None = None,
    ) -> registry_pb2.ResolveModelResponse:
        """Resolve an alias or constraints to a version, with the revision it was read at."""
        ...

    async def get_model_version(self, *, name: str) -> registry_pb2.ModelVersion:
        """Get one version by resource name."""
        ...

    def watch_models(self, *, start_revision: int = 0) -> AsyncIterator[registry_pb2.WatchModelsResponse]:
        """Stream every registry change from start_revision on (inclusive; 0: from now)."""
        ...


@dataclass(frozen=True)
class ConfiguredModel:
    """The model to use without a registry, or while the registry cannot be reached.

    `model` is the provider's model id ("gpt-4o"); `version` is the registry version it stands for, when
    known ("models/chat/versions/3"), so events stay joinable; `pricing` prices its calls (no cost
    is reported without it).
    """

    model: str
    version: str = ""
    pricing: registry_pb2.TokenPricing | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("ConfiguredModel.model must not be empty")


@dataclass(frozen=True)
class SelectedModel:
    """The model calls use now and where it came from."""

    provider_model: str
    # The registry version's resource name, or "" for a configured model that names none.
    model_version: str
    source: ModelSource
    pricing: registry_pb2.TokenPricing | None


@dataclass(frozen=True)
class CompletionResult:
    """The outcome of one `complete` call."""

    text: str
    model_version: str
    model_source: ModelSource
    usage: TokenUsage
    # Seconds spent in the provider call alone (model resolution is not included).
    latency: float
    # None when the model's prices are unknown.
    cost: Cost | None
    finish_reason: str
    provider_model: str


class LLMClient:
    """Completes prompts through `provider` with the model chosen as the module doc describes.

    Give `registry` with exactly one of `alias` (an alias resource name, "models/chat/aliases/prod") or
    `constraints`; without a registry, `model` is always used. `events` receives one InferenceEvent per
    call. Nothing is awaited here: the registry is first asked on the first call.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        model: ConfiguredModel,
        registry: ModelRegistry | None = None,
        alias: str | None = None,
        constraints: registry_pb2.ModelConstraints | None = None,
        events: EventSink | None = None,
        refresh_interval: float = 30.0,
        resolve_timeout: float = 5.0,
    ) -> None:
        if registry is not None and (alias is None) == (constraints is None):
            raise ValueError("with a registry, give exactly one of alias and constraints")
        if registry is None and (alias is not None or constraints is not None):
            raise ValueError("alias and constraints need a registry")
        if alias is not None and not alias:
            raise ValueError("alias must not be empty")
        if refresh_interval <= 0 or resolve_timeout <= 0:
            raise ValueError("refresh_interval and resolve_timeout must be positive")
        self._provider = provider
        self._provider_name = str(getattr(provider, "name", type(provider).__name__))
        self._configured = model
        self._registry = registry
        self._alias = alias
        self._constraints = constraints
        self._events = GuardedSink(events, logger)
        self._reconnect = BackoffPolicy(
            initial=min(_FIRST_RETRY_DELAY, refresh_interval), maximum=refresh_interval, jitter=0.5
        )
        self._resolve_timeout = resolve_timeout
        self._selected: SelectedModel | None = None
        self._lock = asyncio.Lock()
        self._follower: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def sink_errors(self) -> int:
        """How many times the event sink raised (each time the event was dropped and the call went on)."""
        return self._events.errors

    async def current_model(self) -> SelectedModel:
        """The model the next call will use, resolving it first if no call has yet."""
        return await self._select()

    async def complete(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        trace_id: str = "",
        request_id: str = "",
        deployment: str = "",
        traffic_slot: str = "",
    ) -> CompletionResult:
        """Generate an answer to `prompt` (a user message, or a whole conversation).

        `trace_id` and `request_id` link the call's event to the caller's request; `deployment` and
        `traffic_slot` ("stable" or "canary") to the deployment slot that routed it, which is what a rollout's
        analysis gates on inference signals read. Raises the provider's error (ProviderError) when
        generation fails, after reporting the failed call to the event sink; registry trouble never makes
        it fail (see the module doc).
        """
        if traffic_slot not in _TRAFFIC_SLOTS:
            raise ValueError(f"traffic_slot must be one of {sorted(_TRAFFIC_SLOTS)}, not {traffic_slot!r}")
        messages = as_messages(prompt)
        selected = await self._select()
        request = GenerationRequest(
            model=selected.provider_model,
            messages=messages,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
        )
        # A span of the model call (GenAI conventions), current while the call's event is made, so the
        # event's span_id is this call's; a no-op without an OpenTelemetry SDK.
        with _tracer.start_as_current_span(
            f"chat {selected.provider_model}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": self._provider_name,
                "gen_ai.request.model": selected.provider_model,
            },
        ) as span:
            started = time.perf_counter()
            try:
                generation = await self._provider.generate(request)
            except Exception as exc:
                self._events.emit(
                    self._event(
                        selected,
                        "error",
                        time.perf_counter() - started,
                        error_type=type(exc).__name__,
                        error_message=str(exc)[:_MAX_ERROR_MESSAGE],
                        trace_id=trace_id,
                        request_id=request_id,
                        deployment=deployment,
                        traffic_slot=traffic_slot,
                    )
                )
                span.set_attribute("error.type", type(exc).__name__)
                raise
            latency = time.perf_counter() - started
            usage = generation.usage
            cost = cost_of(selected.pricing, usage)
            self._events.emit(
                self._event(
                    selected,
                    "ok",
                    latency,
                    usage=usage,
                    cost=cost,
                    finish_reason=generation.finish_reason,
                    trace_id=trace_id,
                    request_id=request_id,
                    deployment=deployment,
                    traffic_slot=traffic_slot,
                )
            )
            if span.is_recording():
                span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                if generation.finish_reason:
                    span.set_attribute("gen_ai.response.finish_reasons", [generation.finish_reason])
        return CompletionResult(
            text=generation.text,
            model_version=selected.model_version,
            model_source=selected.source,
            usage=usage,
            latency=latency,
            cost=cost,
            finish_reason=generation.finish_reason,
            provider_model=selected.provider_model,
        )

    async def close(self) -> None:
        """Stop following the registry. The provider and the registry client are left to their owners."""
        self._closed = True
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            try:
                await follower
            except asyncio.CancelledError:
                # Only swallow the follower's own cancellation, never one aimed at the caller.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Model selection.

    def _configured_selection(self, source: ModelSource) -> SelectedModel:
        return SelectedModel(
            provider_model=self._configured.model,
            model_version=self._configured.version,
            source=source,
            pricing=self._configured.pricing,
        )

    def _use_version(self, version: registry_pb2.ModelVersion) -> None:
        selected = SelectedModel(
            provider_model=provider_model_id(version.source_uri),
            model_version=version.name,
            source="registry",
            pricing=version.pricing if version.HasField("pricing") else None,
        )
        previous = self._selected
        self._selected = selected
        if (
            previous is None
            or previous.model_version != selected.model_version
            or previous.source != "registry"
        ):
            logger.info("using model version %s (%s)", selected.model_version, selected.provider_model)

    async def _select(self) -> SelectedModel:
        if self._closed:
            raise RuntimeError("LLMClient is closed")
        selected = self._selected
        if selected is not None:
            return selected
        async with self._lock:
            if self._selected is None:
                await self._first_selection()
            assert self._selected is not None
            return self._selected

    async def _first_selection(self) -> None:
        if self._registry is None:
            self._selected = self._configured_selection("configured")
            return
        try:
            response = await self._resolve()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            logger.warning(
                "model registry unreachable (%s); using the configured model %s until it answers",
                exc,
                self._configured.model,
            )
            self._selected = self._configured_selection("configured_fallback")
            self._start_following(None)
            return
        self._use_version(response.model_version)
        self._start_following(response.revision)

    async def _resolve(self) -> registry_pb2.ResolveModelResponse:
        assert self._registry is not None
        call = (
            self._registry.resolve_model(alias=self._alias)
            if self._alias is not None
            else self._registry.resolve_model(constraints=self._constraints)
        )
        return await asyncio.wait_for(call, self._resolve_timeout)

    def _start_following(self, revision: int | None) -> None:
        if self._follower is None and not self._closed:
            self._follower = asyncio.create_task(self._follow(revision), name="LLMClient registry watch")

    async def _follow(self, revision: int | None) -> None:
        """Watch the registry for as long as the client is open; None means resolve before watching."""
        assert self._registry is not None
        backoff = Backoff(self._reconnect)
        if revision is None:
            await asyncio.sleep(self._reconnect.initial)
        while True:
            failure: Exception | None = None
            try:
                if revision is None:
                    response = await self._resolve()
                    self._use_version(response.model_version)
                    revision = response.revision
                # The resolution saw everything up to its revision; start_revision is inclusive.
                stream = self._registry.watch_models(start_revision=revision + 1)
                try:
                    async for message in stream:
                        backoff.reset()
                        if message.HasField("change"):
                            await self._on_change(message.change)
                finally:
                    # Close the stream now rather than when it is collected, so its RPC ends with us.
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
            except Exception as exc:
                failure = exc
            revision = None
            delay = backoff.next_delay()
            if failure is not None:
                # The cached choice stays in use meanwhile; the next round resolves afresh.
                logger.warning("model registry not followed (%s); trying again in %.2f s", failure, delay)
            await asyncio.sleep(delay)

    async def _on_change(self, change: registry_pb2.ModelChange) -> None:
        assert self._registry is not None
        if self._alias is not None:
            # A deleted alias leaves the last version in use: deleting a name should not stop the traffic.
            if not change.HasField("alias") or change.alias.name != self._alias:
                return
            current = self._selected
            if (
                current is not None
                and current.source == "registry"
                and current.model_version == change.alias.version
            ):
                return
            version = await self._registry.get_model_version(name=change.alias.version)
            self._use_version(version)
            return
        # With constraints, any new, changed or deleted model or version may change the best match.
        response = await self._resolve()
        self._use_version(response.model_version)

    # Events.

    def _event(
        self,
        selected: SelectedModel,
        status: EventStatus,
        latency: float,
        *,
        usage: TokenUsage | None = None,
        cost: Cost | None = None,
        finish_reason: str = "",
        error_type: str = "",
        error_message: str = "",
        trace_id: str = "",
        request_id: str = "",
        deployment: str = "",
        traffic_slot: str = "",
    ) -> InferenceEvent:
        usage = usage or TokenUsage()
        return InferenceEvent(
            model_version=selected.model_version,
            provider=self._provider_name,
            provider_model=selected.provider_model,
            model_source=selected.source,
            status=status,
            latency_seconds=latency,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_micros=cost.micros if cost is not None else None,
            cost_currency_code=cost.currency_code if cost is not None else "",
            finish_reason=finish_reason,
            error_type=error_type,
            error_message=error_message,
            trace_id=trace_id,
            request_id=request_id,
            deployment=deployment,
            traffic_slot=traffic_slot,
        )
