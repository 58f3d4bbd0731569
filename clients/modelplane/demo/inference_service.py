"""The demo's inference service: LLMClient behind one HTTP address, answering the story teller's model calls.

It keeps one LLMClient per traffic slot, each picking its model from the registry: the stable slot follows
the environment's alias (moved by the deployment manager when a canary succeeds), the canary slot the alias
the release pipeline points at the version it canaries. Every call is priced from the version's registry
prices and shipped as an InferenceEvent.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from modelplane.client import Connection, LogShipper
from modelplane.demo.json_http import BadRequest, JsonHttpServer
from modelplane.demo.remote_model import completion_to_json
from modelplane.demo.service_runtime import run_service
from modelplane.demo.story_provider import StoryProvider
from modelplane.demo.story_setting import CANARY_ALIAS, MISCHIEF, PROD_ALIAS, STABLE_RELEASE
from modelplane.inference import ConfiguredModel, LLMClient

# The prompt a call may send, in characters, and the most tokens it may ask for.
MAX_PROMPT = 4_000
MAX_OUTPUT_TOKENS = 4_000


class InferenceService:
    def __init__(self, connection: Connection, shipper: LogShipper) -> None:
        provider = StoryProvider(MISCHIEF)
        # Used only while the registry cannot be reached.
        configured = ConfiguredModel(STABLE_RELEASE.provider_model, pricing=STABLE_RELEASE.pricing)
        self._clients = {
            slot: LLMClient(
                provider, registry=connection.registry, alias=alias, model=configured, events=shipper
            )
            for slot, alias in (("stable", PROD_ALIAS), ("canary", CANARY_ALIAS))
        }
        self._http = JsonHttpServer(self.generate)
        self.ready: dict[str, Any] = {}

    async def start(self) -> None:
        self.ready = {"address": await self._http.start()}

    async def generate(self, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
        """One completion: {"deployment", "slot", "prompt", "max_output_tokens", "trace_id", "request_id"} in,
        the CompletionResult out; the call's event is linked to that deployment slot."""
        if not isinstance(body, dict) or body.get("slot") not in self._clients:
            raise BadRequest('the body must name the "slot": "stable" or "canary"')
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not 0 < len(prompt) <= MAX_PROMPT:
            raise BadRequest(f'"prompt" must be text of 1 to {MAX_PROMPT} characters')
        limit = body.get("max_output_tokens")
        if limit is not None and not (isinstance(limit, int) and 0 < limit <= MAX_OUTPUT_TOKENS):
            raise BadRequest(f'"max_output_tokens" must be 1 to {MAX_OUTPUT_TOKENS} when given')
        slot = body["slot"]
        result = await self._clients[slot].complete(
            prompt,
            max_output_tokens=limit,
            trace_id=str(body.get("trace_id", "")),
            request_id=str(body.get("request_id", "")),
            deployment=str(body.get("deployment", "")),
            traffic_slot=slot,
        )
        return completion_to_json(result)

    async def command(self, command: dict[str, Any]) -> Any:
        raise ValueError(f"the inference service takes no command {command.get('op')!r}")

    async def aclose(self) -> None:
        await self._http.aclose()
        for client in self._clients.values():
            await client.close()


async def start(args: argparse.Namespace, connection: Connection, shipper: LogShipper) -> InferenceService:
    service = InferenceService(connection, shipper)
    await service.start()
    return service


def main() -> None:
    run_service("inference", start)


if __name__ == "__main__":
    main()
