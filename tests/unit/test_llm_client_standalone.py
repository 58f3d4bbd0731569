"""LLMClient without a registry server: the configured model, costs, events, provider errors, LocalProvider.

The last tests drive model selection through an in-memory registry that speaks the ModelRegistry
protocol; the same behaviour against the real server is in tests/e2e/test_llm_client_registry.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelplane.client.errors import AliasNotFound, Unavailable
from modelplane.client.events import EventSink, InferenceEvent
from modelplane.inference import (
    ChatMessage,
    ConfiguredModel,
    Cost,
    Generation,
    GenerationRequest,
    LLMClient,
    LocalProvider,
    ProviderError,
    provider_model_id,
)
from modelplane.inference.local_provider import count_tokens
from modelplane.v1 import registry_pb2

PRICING = registry_pb2.TokenPricing(
    currency_code="USD",
    input_micros_per_million=2_000_000,
    output_micros_per_million=8_000_000,
    cached_input_micros_per_million=500_000,
)


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


class RaisingSink:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: object) -> None:
        self.calls += 1
        raise RuntimeError("sink is broken")


class FailingProvider:
    name = "failing"

    async def generate(self, request: GenerationRequest) -> Generation:
        raise ProviderError("rate limited", provider="failing", status=429, retryable=True)


def inference_events(sink: CollectingSink) -> list[InferenceEvent]:
    events = [e for e in sink.events if isinstance(e, InferenceEvent)]
    assert len(events) == len(sink.events)
    return events


# LocalProvider.


async def test_local_provider_is_deterministic_and_counts_tokens() -> None:
    provider = LocalProvider()
    request = GenerationRequest(model="m", messages=(ChatMessage("user", "Hello, world!"),))
    first = await provider.generate(request)
    second = await LocalProvider().generate(request)
    assert first == second
    assert first.input_tokens == 4  # "Hello" "," "world" "!"
    assert first.output_tokens == count_tokens(first.text) == len(first.text.split())
    assert 8 <= first.output_tokens <= 24
    assert first.finish_reason == "stop"
    other_request = GenerationRequest(model="m", messages=(ChatMessage("user", "Hi"),))
    other = await provider.generate(other_request)
    assert other.text != first.text
    assert provider.requests == [request, other_request]


async def test_local_provider_cuts_at_max_output_tokens_and_reports_cache_and_reasoning() -> None:
    provider = LocalProvider(cached_input_tokens=3, reasoning_tokens=5)
    request = GenerationRequest(
        model="m", messages=(ChatMessage("user", "one two three four"),), max_output_tokens=2
    )
    generation = await provider.generate(request)
    assert generation.finish_reason == "length"
    assert len(generation.text.split()) == 2
    assert generation.output_tokens == 2 + 5
    assert generation.reasoning_tokens == 5
    assert generation.cached_input_tokens == 3
    # The cache can never report more than the prompt had.
    short = await provider.generate(GenerationRequest(model="m", messages=(ChatMessage("user", "hi"),)))
    assert short.cached_input_tokens == short.input_tokens == 1


# LLMClient with the configured model.


async def test_configured_model_is_used_and_priced() -> None:
    provider = LocalProvider(cached_input_tokens=2)
    sink = CollectingSink()
    async with LLMClient(
        provider,
        model=ConfiguredModel("local-small", version="models/small/versions/1", pricing=PRICING),
        events=sink,
    ) as llm:
        result = await llm.complete("Tell me a story about a fox.", max_output_tokens=50, temperature=0.2)
    assert provider.requests[0].model == "local-small"
    assert provider.requests[0].messages == (ChatMessage("user", "Tell me a story about a fox."),)
    assert provider.requests[0].max_output_tokens == 50
    assert provider.requests[0].temperature == 0.2
    assert result.model_source == "configured"
    assert result.model_version == "models/small/versions/1"
    assert result.provider_model == "local-small"
    assert result.usage.input_tokens == 8
    assert result.usage.cached_input_tokens == 2
    assert result.finish_reason == "stop"
    assert result.latency >= 0
    # 6 uncached at 2/M + 2 cached at 0.5/M + n output at 8/M, rounded once.
    n = result.usage.output_tokens
    expected = (6 * 2_000_000 + 2 * 500_000 + n * 8_000_000 + 500_000) // 1_000_000
    assert result.cost == Cost("USD", expected)

    [event] = inference_events(sink)
    assert event.status == "ok"
    assert event.model_version == "models/small/versions/1"
    assert event.provider == "local"
    assert event.provider_model == "local-small"
    assert event.model_source == "configured"
    assert (event.input_tokens, event.output_tokens, event.cached_input_tokens) == (8, n, 2)
    assert (event.cost_currency_code, event.cost_micros) == ("USD", expected)
    assert event.latency_seconds == result.latency
    assert event.error_type == ""


async def test_chat_messages_pass_through_and_no_pricing_means_no_cost() -> None:
    provider = LocalProvider()
    conversation = [ChatMessage("system", "Be brief."), ChatMessage("user", "Why is the sky blue?")]
    async with LLMClient(provider, model=ConfiguredModel("m")) as llm:
        result = await llm.complete(conversation)
        selected = await llm.current_model()
    assert provider.requests[0].messages == tuple(conversation)
    assert result.cost is None
    assert result.model_version == ""
    assert (selected.provider_model, selected.source, selected.pricing) == ("m", "configured", None)


async def test_trace_request_and_deployment_slot_reach_the_event() -> None:
    sink = CollectingSink()
    async with LLMClient(LocalProvider(), model=ConfiguredModel("m"), events=sink) as llm:
        await llm.complete(
            "hi",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            request_id="req-1",
            deployment="deployments/chat-prod",
            traffic_slot="canary",
        )
        await llm.complete("hi again")
    first, second = inference_events(sink)
    assert (first.trace_id, first.request_id) == ("0af7651916cd43dd8448eb211c80319c", "req-1")
    assert (first.deployment, first.traffic_slot) == ("deployments/chat-prod", "canary")
    assert (second.trace_id, second.request_id, second.deployment, second.traffic_slot) == ("", "", "", "")
    assert first.event_id != second.event_id


async def test_an_unknown_traffic_slot_is_refused_before_the_provider_is_asked() -> None:
    provider = LocalProvider()
    async with LLMClient(provider, model=ConfiguredModel("m")) as llm:
        with pytest.raises(ValueError, match="traffic_slot"):
            await llm.complete("hi", traffic_slot="blue")
    assert provider.requests == []


async def test_a_raising_sink_never_breaks_the_call() -> None:
    sink = RaisingSink()
    llm = LLMClient(LocalProvider(), model=ConfiguredModel("m"), events=sink)
    results = [await llm.complete(f"prompt {i}") for i in range(3)]
    await llm.close()
    assert all(r.text for r in results)
    assert sink.calls == 3
    assert llm.sink_errors == 3


async def test_provider_error_propagates_and_is_reported() -> None:
    sink = CollectingSink()
    llm = LLMClient(FailingProvider(), model=ConfiguredModel("m", pricing=PRICING), events=sink)
    with pytest.raises(ProviderError, match="rate limited") as caught:
        await llm.complete("hi", request_id="req-9")
    await llm.close()
    assert caught.value.status == 429
    assert caught.value.retryable
    [event] = inference_events(sink)
    assert event.status == "error"
    assert event.error_type == "ProviderError"
    assert "rate limited" in event.error_message
    assert event.request_id == "req-9"
    assert event.cost_micros is None
    assert event.provider == "failing"


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly one of alias and constraints"):
        LLMClient(LocalProvider(), model=ConfiguredModel("m"), registry=MemoryRegistry())
    with pytest.raises(ValueError, match="need a registry"):
        LLMClient(LocalProvider(), model=ConfiguredModel("m"), alias="models/a/aliases/prod")
    with pytest.raises(ValueError, match="must not be empty"):
        ConfiguredModel("")
    llm = LLMClient(LocalProvider(), model=ConfiguredModel("m"))
    with pytest.raises(ValueError, match="prompt"):
        await llm.complete("")
    with pytest.raises(ValueError, match="prompt"):
        await llm.complete([])
    await llm.close()
    with pytest.raises(RuntimeError, match="closed"):
        await llm.complete("hi")


def test_sinks_and_providers_satisfy_their_protocols() -> None:
    assert isinstance(CollectingSink(), EventSink)
    from modelplane.inference import Provider

    assert isinstance(LocalProvider(), Provider)


@pytest.mark.parametrize(
    ("uri", "model_id"),
    [
        ("openai:gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
        ("local:echo", "echo"),
        ("hf:meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("s3://models/chat/7", "s3://models/chat/7"),
        ("llama3", "llama3"),
        ("ollama:llama3:8b", "llama3:8b"),
    ],
)
def test_provider_model_id_from_source_uri(uri: str, model_id: str) -> None:
    assert provider_model_id(uri) == model_id


# Model selection against an in-memory registry.


def version(name: str, source_uri: str, output_price: int = 8_000_000) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        name=name,
        source_uri=source_uri,
        pricing=registry_pb2.TokenPricing(
            currency_code="USD", input_micros_per_million=1_000_000, output_micros_per_million=output_price
        ),
    )


class MemoryRegistry:
    """Answers resolve_model from a dict of aliases and streams changes pushed into a queue."""

    def __init__(self) -> None:
        self.versions: dict[str, registry_pb2.ModelVersion] = {}
        self.aliases: dict[str, str] = {}
        self.resolve_calls = 0
        self.failure: Exception | None = None
        self.revision = 1
        self.changes: asyncio.Queue[registry_pb2.WatchModelsResponse] = asyncio.Queue()
        self.watch_starts: list[int] = []

    async def resolve_model(
        self,
        *,
        alias: str | None = None,
        constraints: registry_pb2.ModelConstraints | None = None,
    ) -> registry_pb2.ResolveModelResponse:
        self.resolve_calls += 1
        await asyncio.sleep(0.01)  # lets concurrent first calls pile up behind the first
        if self.failure is not None:
            raise self.failure
        assert alias is not None
        if alias not in self.aliases:
            raise AliasNotFound(f"{alias} not found")
        return registry_pb2.ResolveModelResponse(
            model_version=self.versions[self.aliases[alias]], revision=self.revision
        )

    async def get_model_version(self, *, name: str) -> registry_pb2.ModelVersion:
        return self.versions[name]

    async def watch_models(
        self, *, start_revision: int = 0
    ) -> AsyncIterator[registry_pb2.WatchModelsResponse]:
        self.watch_starts.append(start_revision)
        if self.failure is not None:
            raise self.failure
        while True:
            yield await self.changes.get()

    def move(self, alias: str, to: str) -> None:
        self.aliases[alias] = to
        self.revision += 1
        change = registry_pb2.ModelChange(
            revision=self.revision,
            kind=registry_pb2.CHANGE_KIND_UPDATED,
            resource=alias,
            alias=registry_pb2.ModelAlias(name=alias, version=to),
        )
        self.changes.put_nowait(registry_pb2.WatchModelsResponse(change=change))


ALIAS = "models/chat/aliases/prod"


def memory_registry() -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.versions["models/chat/versions/1"] = version("models/chat/versions/1", "openai:gpt-4o-mini")
    registry.versions["models/chat/versions/2"] = version("models/chat/versions/2", "openai:gpt-4o")
    registry.aliases[ALIAS] = "models/chat/versions/1"
    return registry


async def wait_until_model(llm: LLMClient, model_version: str) -> None:
    """Polls until the client uses `model_version` (it switches in a background task); fails after ~10 s."""
    current = ""
    for _ in range(1000):
        current = (await llm.current_model()).model_version
        if current == model_version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still on {current!r}, expected {model_version!r}")


async def test_registry_is_asked_once_lazily_then_alias_moves_are_followed() -> None:
    registry = memory_registry()
    provider = LocalProvider()
    llm = LLMClient(provider, model=ConfiguredModel("fallback"), registry=registry, alias=ALIAS)
    assert registry.resolve_calls == 0
    results = await asyncio.gather(*(llm.complete(f"q{i}") for i in range(100)))
    assert registry.resolve_calls == 1
    assert {(r.model_version, r.model_source, r.provider_model) for r in results} == {
        ("models/chat/versions/1", "registry", "gpt-4o-mini")
    }
    registry.move(ALIAS, "models/chat/versions/2")
    await wait_until_model(llm, "models/chat/versions/2")
    result = await llm.complete("after the move")
    await llm.close()
    assert (result.model_version, result.provider_model) == ("models/chat/versions/2", "gpt-4o")
    # Resolved at revision 1, followed from the next one: start_revision is inclusive.
    assert registry.watch_starts == [2]


async def test_unreachable_registry_falls_back_then_recovers() -> None:
    registry = memory_registry()
    registry.failure = Unavailable("connection refused")
    sink = CollectingSink()
    llm = LLMClient(
        LocalProvider(),
        model=ConfiguredModel("fallback", pricing=PRICING),
        registry=registry,
        alias=ALIAS,
        events=sink,
        refresh_interval=0.05,
    )
    result = await llm.complete("hi")
    assert (result.model_source, result.provider_model, result.model_version) == (
        "configured_fallback",
        "fallback",
        "",
    )
    assert result.cost is not None
    assert inference_events(sink)[0].model_source == "configured_fallback"
    registry.failure = None
    await wait_until_model(llm, "models/chat/versions/1")
    recovered = await llm.complete("hi")
    await llm.close()
    assert recovered.model_source == "registry"


async def test_refusal_by_the_registry_is_raised_not_hidden() -> None:
    registry = memory_registry()
    llm = LLMClient(
        LocalProvider(), model=ConfiguredModel("m"), registry=registry, alias="models/chat/aliases/nope"
    )
    with pytest.raises(AliasNotFound):
        await llm.complete("hi")
    # Not cached: the next call asks again.
    with pytest.raises(AliasNotFound):
        await llm.current_model()
    await llm.close()
    assert registry.resolve_calls == 2
