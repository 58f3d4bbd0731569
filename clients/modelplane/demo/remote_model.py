"""The story teller's model, reached over HTTP: a TextGenerator that posts each prompt to the inference
service, and the JSON form of a CompletionResult that the two sides exchange. Temperature is left to the
inference service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from modelplane.inference import ChatMessage, CompletionResult, Cost, TokenUsage


def completion_to_json(result: CompletionResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "model_version": result.model_version,
        "model_source": result.model_source,
        "usage": {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "cached_input_tokens": result.usage.cached_input_tokens,
            "reasoning_tokens": result.usage.reasoning_tokens,
        },
        "latency": result.latency,
        "cost": None if result.cost is None else [result.cost.currency_code, result.cost.micros],
        "finish_reason": result.finish_reason,
        "provider_model": result.provider_model,
    }


def completion_from_json(data: dict[str, Any]) -> CompletionResult:
    cost = data["cost"]
    return CompletionResult(
        text=data["text"],
        model_version=data["model_version"],
        model_source=data["model_source"],
        usage=TokenUsage(**data["usage"]),
        latency=data["latency"],
        cost=None if cost is None else Cost(currency_code=cost[0], micros=cost[1]),
        finish_reason=data["finish_reason"],
        provider_model=data["provider_model"],
    )


class RemoteModel:
    """Completes prompts through the inference service at `address`; the slot that routed the request picks
    the model there (each slot's LLMClient follows its own alias)."""

    def __init__(self, client: httpx.AsyncClient, address: str) -> None:
        self._client = client
        self._url = f"http://{address}/generate"

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
        if not isinstance(prompt, str):
            raise TypeError("the inference service takes a plain prompt")
        body = {
            "deployment": deployment,
            "slot": traffic_slot,
            "prompt": prompt,
            "max_output_tokens": max_output_tokens,
            "trace_id": trace_id,
            "request_id": request_id,
        }
        response = await self._client.post(self._url, json=body)
        response.raise_for_status()
        return completion_from_json(response.json())
