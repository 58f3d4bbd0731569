"""AI inference: LLMClient picks its model from the registry and prices every call."""

from modelplane.inference.llm_client import (
    CompletionResult,
    ConfiguredModel,
    LLMClient,
    ModelRegistry,
    ModelSource,
    SelectedModel,
    provider_model_id,
)
from modelplane.inference.local_provider import LocalProvider
from modelplane.inference.openai_provider import OpenAIChatProvider
from modelplane.inference.providers import (
    ChatMessage,
    Generation,
    GenerationRequest,
    Provider,
    ProviderError,
    TokenUsage,
)
from modelplane.pricing import Cost, cost_micros, cost_of

__all__ = [
    "ChatMessage",
    "CompletionResult",
    "ConfiguredModel",
    "Cost",
    "Generation",
    "GenerationRequest",
    "LLMClient",
    "LocalProvider",
    "ModelRegistry",
    "ModelSource",
    "OpenAIChatProvider",
    "Provider",
    "ProviderError",
    "SelectedModel",
    "TokenUsage",
    "cost_micros",
    "cost_of",
    "provider_model_id",
]
