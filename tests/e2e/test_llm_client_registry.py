"""Inference with the registry: LLMClient against the real registry server on loopback (lazy resolution,
once; alias moves; constraints; the configured model as a fallback when the registry cannot be reached),
and standalone, with no registry configured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from modelplane.client import NO_RETRY, Connection, ModelRegistryClient, connect
from modelplane.client.events import InferenceEvent
from modelplane.inference import ConfiguredModel, LLMClient, LocalProvider
from modelplane.inference.llm_client import ModelRegistry
from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.config import ServerConfig
from modelplane.v1 import registry_pb2
from tests.support.loopback import free_port

CHAT = "models/chat"
PROD = "models/chat/aliases/prod"
FALLBACK = ConfiguredModel(
    "fallback-model",
    pricing=registry_pb2.TokenPricing(
        currency_code="USD", input_micros_per_million=1_000_000, output_micros_per_million=1_000_000
    ),
)


@pytest.fixture
async def connection(server: ModelplaneServer) -> AsyncIterator[Connection]:
    async with connect(server.target) as conn:
        yield conn


def pricing(output_micros: int) -> registry_pb2.TokenPricing:
    return registry_pb2.TokenPricing(
        currency_code="USD", input_micros_per_million=1_000_000, output_micros_per_million=output_micros
    )


async def add_version(
    registry: ModelRegistryClient, model: str, source_uri: str, *, output_micros: int = 4_000_000
) -> registry_pb2.ModelVersion:
    return await registry.create_model_version(
        parent=model,
        model_version=registry_pb2.ModelVersion(
            source_uri=source_uri,
            capabilities=[registry_pb2.CAPABILITY_CHAT],
            context_window=128_000,
            max_output_tokens=4_096,
            pricing=pricing(output_micros),
        ),
    )


@pytest.fixture
async def chat_versions(
    connection: Connection,
) -> tuple[registry_pb2.ModelVersion, registry_pb2.ModelVersion]:
    """models/chat with two versions (gpt-4o-mini, then gpt-4o) and the alias prod on the first."""
    registry = connection.registry
    await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
    first = await add_version(registry, CHAT, "openai:gpt-4o-mini", output_micros=600_000)
    second = await add_version(registry, CHAT, "openai:gpt-4o", output_micros=10_000_000)
    await registry.set_alias(name=PROD, version=first.name)
    return first, second


class CountingRegistry:
    """The real client, counting resolutions; LLMClient sees only the ModelRegistry protocol."""

    def __init__(self, inner: ModelRegistryClient) -> None:
        self.inner = inner
        self.resolve_calls = 0

    async def resolve_model(
        self,
        *,
        alias: str | None = None,
        constraints: registry_pb2.ModelConstraints | None = None,
    ) -> registry_pb2.ResolveModelResponse:
        self.resolve_calls += 1
        return await self.inner.resolve_model(alias=alias, constraints=constraints)

    async def get_model_version(self, *, name: str) -> registry_pb2.ModelVersion:
        return await self.inner.get_model_version(name=name)

    def watch_models(self, *, start_revision: int = 0) -> AsyncIterator[registry_pb2.WatchModelsResponse]:
        return self.inner.watch_models(start_revision=start_revision)


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[InferenceEvent] = []

    def emit(self, event: object) -> None:
        assert isinstance(event, InferenceEvent)
        self.events.append(event)


async def wait_until_model(llm: LLMClient, model_version: str) -> None:
    """Polls until the client uses `model_version` (it switches in a background task); fails after ~10 s."""
    current = ""
    for _ in range(1000):
        current = (await llm.current_model()).model_version
        if current == model_version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still on {current!r}, expected {model_version!r}")


def the_real_client_satisfies_the_protocol(client: ModelRegistryClient) -> ModelRegistry:
    # Checked by mypy: ModelRegistryClient can be given to LLMClient as it is.
    return client


async def test_resolves_the_alias_lazily_and_once_for_fifty_concurrent_first_calls(
    connection: Connection, chat_versions: tuple[registry_pb2.ModelVersion, registry_pb2.ModelVersion]
) -> None:
    first, _ = chat_versions
    registry = CountingRegistry(connection.registry)
    provider = LocalProvider()
    sink = CollectingSink()
    async with LLMClient(provider, model=FALLBACK, registry=registry, alias=PROD, events=sink) as llm:
        await asyncio.sleep(0.05)
        assert registry.resolve_calls == 0
        results = await asyncio.gather(*(llm.complete(f"question {i}") for i in range(50)))
    assert registry.resolve_calls == 1
    assert {(r.model_version, r.model_source, r.provider_model) for r in results} == {
        (first.name, "registry", "gpt-4o-mini")
    }
    assert {request.model for request in provider.requests} == {"gpt-4o-mini"}
    # Priced with the registry version's prices: 1 USD/M input, 0.60 USD/M output.
    result = results[0]
    assert result.cost is not None
    expected = (
        result.usage.input_tokens * 1_000_000 + result.usage.output_tokens * 600_000 + 500_000
    ) // 10**6
    assert result.cost.micros == expected
    assert len(sink.events) == 50
    assert {e.model_version for e in sink.events} == {first.name}


async def test_follows_an_alias_move(
    connection: Connection, chat_versions: tuple[registry_pb2.ModelVersion, registry_pb2.ModelVersion]
) -> None:
    first, second = chat_versions
    async with LLMClient(LocalProvider(), model=FALLBACK, registry=connection.registry, alias=PROD) as llm:
        before = await llm.complete("hello")
        await connection.registry.set_alias(name=PROD, version=second.name, expected_version=first.name)
        await wait_until_model(llm, second.name)
        after = await llm.complete("hello")
    assert (before.model_version, before.provider_model) == (first.name, "gpt-4o-mini")
    assert (after.model_version, after.provider_model, after.model_source) == (
        second.name,
        "gpt-4o",
        "registry",
    )
    assert after.cost is not None
    assert (
        after.cost.micros
        == (after.usage.input_tokens * 1_000_000 + after.usage.output_tokens * 10_000_000 + 500_000) // 10**6
    )


async def test_resolves_by_constraints_and_follows_a_cheaper_new_version(
    connection: Connection, chat_versions: tuple[registry_pb2.ModelVersion, registry_pb2.ModelVersion]
) -> None:
    first, _ = chat_versions
    constraints = registry_pb2.ModelConstraints(
        model=CHAT, required_capabilities=[registry_pb2.CAPABILITY_CHAT], min_context_window=100_000
    )
    async with LLMClient(
        LocalProvider(), model=FALLBACK, registry=connection.registry, constraints=constraints
    ) as llm:
        result = await llm.complete("hello")
        # The cheapest output price wins; a new, cheaper version takes over once it is published.
        cheaper = await add_version(connection.registry, CHAT, "openai:gpt-4o-nano", output_micros=100_000)
        await wait_until_model(llm, cheaper.name)
        later = await llm.complete("hello")
    assert (result.model_version, result.provider_model, result.model_source) == (
        first.name,
        "gpt-4o-mini",
        "registry",
    )
    assert (later.model_version, later.provider_model) == (cheaper.name, "gpt-4o-nano")


async def test_standalone_with_no_registry_configured_the_configured_model_answers() -> None:
    sink = CollectingSink()
    configured = ConfiguredModel("gpt-4o-mini", version="models/chat/versions/1", pricing=pricing(600_000))
    async with LLMClient(LocalProvider(), model=configured, events=sink) as llm:
        result = await llm.complete("hello")
    assert (result.model_source, result.model_version, result.provider_model) == (
        "configured",
        "models/chat/versions/1",
        "gpt-4o-mini",
    )
    # Priced with the configured prices: 1 USD/M input, 0.60 USD/M output.
    assert result.cost is not None
    expected = (
        result.usage.input_tokens * 1_000_000 + result.usage.output_tokens * 600_000 + 500_000
    ) // 10**6
    assert result.cost.micros == expected
    [event] = sink.events
    assert (event.model_source, event.model_version, event.cost_micros) == (
        "configured",
        "models/chat/versions/1",
        expected,
    )


# gRPC waits 1 s and more before redialling a refused address; keep the test quick.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 100),
)


async def test_nothing_listening_falls_back_to_the_configured_model() -> None:
    sink = CollectingSink()
    async with (
        connect(f"127.0.0.1:{free_port()}", retry=NO_RETRY, timeout=2) as connection,
        LLMClient(
            LocalProvider(), model=FALLBACK, registry=connection.registry, alias=PROD, events=sink
        ) as llm,
    ):
        result = await llm.complete("hello")
        assert (await llm.current_model()).source == "configured_fallback"
    assert (result.model_source, result.provider_model, result.model_version) == (
        "configured_fallback",
        "fallback-model",
        "",
    )
    assert result.text
    assert result.cost is not None
    [event] = sink.events
    assert (event.status, event.model_source) == ("ok", "configured_fallback")


async def test_registry_down_at_first_call_then_up_switches_to_the_registry(
    database_url: str,
) -> None:
    # Reserve a port, start nothing on it yet: the first call must fall back, then pick up the registry.
    port = free_port()
    async with connect(f"127.0.0.1:{port}", retry=NO_RETRY, timeout=2, options=FAST_RECONNECT) as connection:
        llm = LLMClient(
            LocalProvider(), model=FALLBACK, registry=connection.registry, alias=PROD, refresh_interval=0.2
        )
        try:
            down = await llm.complete("hello")
            assert down.model_source == "configured_fallback"

            config = ServerConfig(address=f"127.0.0.1:{port}", database_url=database_url, auth=False)
            server = build_server(config)
            await server.start()
            try:
                await server.wait_serving()
                # Its own subchannel pool: gRPC would otherwise share the refused connection's backoff.
                async with connect(server.target, options=(("grpc.use_local_subchannel_pool", 1),)) as admin:
                    await admin.registry.create_model(
                        model_id="chat", model=registry_pb2.Model(provider="openai")
                    )
                    version = await add_version(admin.registry, CHAT, "openai:gpt-4o-mini")
                    await admin.registry.set_alias(name=PROD, version=version.name)
                await wait_until_model(llm, version.name)
                up = await llm.complete("hello")
            finally:
                await server.stop(0)
        finally:
            await llm.close()
    assert (up.model_source, up.provider_model) == ("registry", "gpt-4o-mini")


async def test_server_stopped_later_keeps_the_last_registry_version(
    database_url: str,
) -> None:
    config = ServerConfig(address="127.0.0.1:0", database_url=database_url, auth=False)
    server = build_server(config)
    await server.start()
    stopped = False
    try:
        await server.wait_serving()
        async with connect(server.target, retry=NO_RETRY, timeout=2) as connection:
            registry = connection.registry
            await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
            version = await add_version(registry, CHAT, "openai:gpt-4o-mini")
            await registry.set_alias(name=PROD, version=version.name)
            async with LLMClient(
                LocalProvider(), model=FALLBACK, registry=registry, alias=PROD, refresh_interval=0.2
            ) as llm:
                before = await llm.complete("hello")
                await server.stop(0)
                stopped = True
                after = await llm.complete("hello")
    finally:
        if not stopped:
            await server.stop(0)
    assert (before.model_source, before.model_version) == ("registry", version.name)
    # The registry going away later changes nothing for calls: the version it chose stays in use.
    assert (after.model_source, after.model_version, after.provider_model) == (
        "registry",
        version.name,
        "gpt-4o-mini",
    )
