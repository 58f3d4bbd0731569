"""The seam between LLMClient and whoever generates text: the Provider protocol and its values.

A provider takes one GenerationRequest (the provider's own model id plus chat messages) and answers one
Generation with the text and the token counts the provider reported; it raises ProviderError on failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Token counts are pricing's vocabulary, shared with the server; re-exported for providers.
from modelplane.pricing import TokenUsage as TokenUsage


@dataclass(frozen=True)
class ChatMessage:
    """One chat message: `role` is "system", "user", "assistant" (or what the provider accepts)."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if not self.role:
            raise ValueError("ChatMessage.role must not be empty")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. `model` is the provider's model id (e.g. "gpt-4o"), not a registry name."""

    model: str
    messages: tuple[ChatMessage, ...]
    # None leaves the limit to the provider.
    max_output_tokens: int | None = None
    # None leaves the sampling temperature to the provider.
    temperature: float | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("GenerationRequest.model must not be empty")
        if not self.messages:
            raise ValueError("GenerationRequest.messages must not be empty")
        if self.max_output_tokens is not None and self.max_output_tokens <= 0:
            raise ValueError("GenerationRequest.max_output_tokens must be positive")


@dataclass(frozen=True)
class Generation:
    """A provider's answer: the text, its token counts (see TokenUsage) and why generation stopped."""

    text: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    # "stop", "length", "content_filter", ... as the provider says; "" when it says nothing.
    finish_reason: str = ""

    def __post_init__(self) -> None:
        # Building the usage validates the counts once, in one place.
        _ = self.usage

    @property
    def usage(self) -> TokenUsage:
        """The four token counts as one value."""
        return TokenUsage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )


class ProviderError(Exception):
    """A provider failed to generate: an HTTP error, a timeout, a malformed answer.

    `status` is the HTTP status when there was one; `code` is the provider's own error code or type;
    `retryable` says whether the same request may succeed later (timeouts, 429, 5xx).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        code: str = "",
        retryable: bool = False,
    ) -> None:
        prefix = f"{provider}: " if provider else ""
        suffix = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.message = message
        self.provider = provider
        self.status = status
        self.code = code
        self.retryable = retryable


@runtime_checkable
class Provider(Protocol):
    """Generates text for a request; raises ProviderError when it cannot."""

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate one answer for the request."""
        ...


def as_messages(prompt: str | Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """A plain prompt becomes one user message; a sequence of messages is kept as it is."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("prompt must not be empty")
        return (ChatMessage(role="user", content=prompt),)
    messages = tuple(prompt)
    if not messages:
        raise ValueError("prompt must hold at least one message")
    for message in messages:
        if not isinstance(message, ChatMessage):
            raise TypeError(f"prompt messages must be ChatMessage, not {type(message).__name__}")
    return messages
