"""A realistic registry for the benchmark: models of several providers, three versions each, with aliases,
varied capabilities, context windows, prices and labels, so that constraint resolution has real work to do.

Everything is written through the public API, under one id prefix, so it can be removed again from a
database that outlives the benchmark.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf import field_mask_pb2

from modelplane.v1 import common_pb2, registry_pb2

if TYPE_CHECKING:
    # Only in the generated type stubs: ModelRegistryServiceStub(aio_channel) is typed as this.
    from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceAsyncStub

Cap = registry_pb2.Capability

PROVIDERS = ("openai", "anthropic", "google", "mistral", "local")
TIERS = ("economy", "standard", "premium")
REGIONS = ("eu", "us")
CONTEXT_WINDOWS = (8_192, 16_384, 32_768, 128_000, 200_000, 1_000_000)
OPTIONAL_CAPABILITIES = (Cap.CAPABILITY_JSON_MODE, Cap.CAPABILITY_VISION, Cap.CAPABILITY_AUDIO)
# Every fifth model is an embedding model: it never matches a chat request, which a resolver must see.
EMBEDDING_EVERY = 5
# A fixed seed: every run measures the same registry.
RANDOM_SEED = 20_240_601
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class SeededRegistry:
    """What the seeding wrote and what the load needs: the names to read and the requests to resolve."""

    prefix: str
    models: tuple[str, ...]
    versions: tuple[str, ...]
    aliases: tuple[str, ...]
    constraints: tuple[registry_pb2.ModelConstraints, ...]


def _usd(micros: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="USD", micros=micros)


def _version(rng: random.Random, model_id: str, number: int, embedding: bool) -> registry_pb2.ModelVersion:
    """Version `number` (1..3) of a model: later versions gain capabilities and context, prices drift."""
    if embedding:
        capabilities = [Cap.CAPABILITY_EMBEDDING]
        window = rng.choice(CONTEXT_WINDOWS[:3])
        max_output = 1
    else:
        capabilities = [Cap.CAPABILITY_CHAT, Cap.CAPABILITY_STREAMING, Cap.CAPABILITY_COMPLETION]
        capabilities += [c for c in OPTIONAL_CAPABILITIES if rng.random() < 0.3 * number]
        if number >= 2 or rng.random() < 0.5:
            capabilities.append(Cap.CAPABILITY_TOOL_USE)
        if number == 3 and rng.random() < 0.5:
            capabilities.append(Cap.CAPABILITY_REASONING)
        window = CONTEXT_WINDOWS[min(len(CONTEXT_WINDOWS) - 1, rng.randrange(3) + number)]
        max_output = min(window // 4, 32_768)
    input_price = rng.randrange(20, 15_000) * 1_000
    pricing = registry_pb2.TokenPricing(
        # A few models are priced in euros: a USD price cap must reject them, not compare the numbers.
        currency_code="EUR" if rng.random() < 0.1 else "USD",
        input_micros_per_million=input_price,
        output_micros_per_million=input_price * rng.randrange(2, 6),
    )
    if rng.random() < 0.5:
        pricing.cached_input_micros_per_million = input_price // 10
    return registry_pb2.ModelVersion(
        description=f"release {number} of {model_id}",
        source_uri=f"s3://models/{model_id}/{number}",
        source_sha256=f"{rng.getrandbits(256):064x}",
        capabilities=capabilities,
        context_window=window,
        max_output_tokens=max_output,
        pricing=pricing,
        labels={"eval": rng.choice(("passed", "passed", "pending")), "release": f"r{number}"},
    )


def new_version_template(model_id: str) -> registry_pb2.ModelVersion:
    """The version the write benchmark publishes again and again: a typical chat model release."""
    return registry_pb2.ModelVersion(
        description=f"nightly build of {model_id}",
        source_uri=f"s3://models/{model_id}/nightly",
        capabilities=[Cap.CAPABILITY_CHAT, Cap.CAPABILITY_STREAMING, Cap.CAPABILITY_TOOL_USE],
        context_window=128_000,
        max_output_tokens=16_384,
        pricing=registry_pb2.TokenPricing(
            currency_code="USD", input_micros_per_million=2_500_000, output_micros_per_million=10_000_000
        ),
        labels={"eval": "pending", "release": "nightly"},
    )


def _constraints(first_chat_model: str) -> tuple[registry_pb2.ModelConstraints, ...]:
    """Typical requests of an inference client, from broad to narrow; each must match some version."""
    return (
        registry_pb2.ModelConstraints(
            required_capabilities=[Cap.CAPABILITY_CHAT, Cap.CAPABILITY_TOOL_USE],
            min_context_window=32_768,
            max_output_price=_usd(40_000_000),
        ),
        registry_pb2.ModelConstraints(
            provider="anthropic", required_capabilities=[Cap.CAPABILITY_CHAT, Cap.CAPABILITY_STREAMING]
        ),
        registry_pb2.ModelConstraints(required_capabilities=[Cap.CAPABILITY_EMBEDDING]),
        registry_pb2.ModelConstraints(
            required_capabilities=[Cap.CAPABILITY_CHAT, Cap.CAPABILITY_JSON_MODE],
            labels={"tier": "economy"},
        ),
        registry_pb2.ModelConstraints(
            required_capabilities=[Cap.CAPABILITY_REASONING],
            min_context_window=128_000,
            max_input_price=_usd(15_000_000),
        ),
        registry_pb2.ModelConstraints(
            model=f"models/{first_chat_model}",
            required_capabilities=[Cap.CAPABILITY_CHAT],
            labels={"eval": "passed"},
        ),
    )


async def seed_registry(
    stub: ModelRegistryServiceAsyncStub, *, models: int, versions_per_model: int
) -> SeededRegistry:
    """Writes the registry; raises RuntimeError when a constraint request of the load would match nothing."""
    rng = random.Random(RANDOM_SEED)
    # Starts with a letter (model ids must) and is unique, so runs on a shared database do not collide.
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    model_ids: list[str] = []
    version_names: list[str] = []
    alias_names: list[str] = []
    for index in range(models):
        provider = PROVIDERS[index % len(PROVIDERS)]
        embedding = index % EMBEDDING_EVERY == EMBEDDING_EVERY - 1
        model_id = f"{prefix}-{provider}-{'embed' if embedding else 'chat'}-{index:02d}"
        await stub.CreateModel(
            registry_pb2.CreateModelRequest(
                model_id=model_id,
                model=registry_pb2.Model(
                    provider=provider,
                    display_name=f"{provider.title()} model {index}",
                    labels={"tier": rng.choice(TIERS), "region": rng.choice(REGIONS)},
                ),
            ),
            timeout=CALL_TIMEOUT,
        )
        model_ids.append(model_id)
        created: list[str] = []
        for number in range(1, versions_per_model + 1):
            response = await stub.CreateModelVersion(
                registry_pb2.CreateModelVersionRequest(
                    parent=f"models/{model_id}",
                    model_version=_version(rng, model_id, min(number, 3), embedding),
                ),
                timeout=CALL_TIMEOUT,
            )
            created.append(response.model_version.name)
        version_names.extend(created)
        # The newest version is on staging, the one before on prod; the oldest of every third model is
        # deprecated, so resolution skips it while its alias history still names it.
        aliases = {"staging": created[-1], "prod": created[-2] if len(created) > 1 else created[-1]}
        if index % 4 == 0:
            aliases["canary"] = created[-1]
        for alias, version in aliases.items():
            name = f"models/{model_id}/aliases/{alias}"
            await stub.SetAlias(
                registry_pb2.SetAliasRequest(name=name, version=version, reason="benchmark seed"),
                timeout=CALL_TIMEOUT,
            )
            alias_names.append(name)
        if index % 3 == 0 and len(created) > 2:
            await stub.UpdateModelVersion(
                registry_pb2.UpdateModelVersionRequest(
                    model_version=registry_pb2.ModelVersion(
                        name=created[0], state=registry_pb2.MODEL_VERSION_STATE_DEPRECATED
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["state"]),
                ),
                timeout=CALL_TIMEOUT,
            )
    constraints = _constraints(next(m for m in model_ids if "-chat-" in m))
    for i, wanted in enumerate(constraints):
        try:
            await stub.ResolveModel(
                registry_pb2.ResolveModelRequest(constraints=wanted), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(
                f"constraint request {i} of the load matches nothing: {exc.details()}"
            ) from exc
    return SeededRegistry(
        prefix=prefix,
        models=tuple(model_ids),
        versions=tuple(version_names),
        aliases=tuple(alias_names),
        constraints=constraints,
    )


async def remove_seed(stub: ModelRegistryServiceAsyncStub, seeded: SeededRegistry) -> None:
    """Deletes every seeded model with its versions, aliases and history (and what the load added)."""
    for model_id in seeded.models:
        await stub.DeleteModel(
            registry_pb2.DeleteModelRequest(name=f"models/{model_id}", force=True), timeout=CALL_TIMEOUT
        )
