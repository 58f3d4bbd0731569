"""The demo's story teller: the deployment's endpoints. Each is an HTTP address that ServiceCoordinator routes
requests to; each request becomes a narrative written by the inference service and checked by the
guardrails monitor (NarrativeGenerator), its check linked to the deployment, slot, model version and trace.

Commands: `{"op": "report_ready", "addresses": [...]}` reports those endpoints READY to the deployment
manager, as a starting endpoint does, so a canary on them can take traffic.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import httpx

from modelplane.client import Connection, LogShipper
from modelplane.demo.json_http import BadRequest, JsonHttpServer
from modelplane.demo.remote_model import RemoteModel
from modelplane.demo.service_runtime import run_service
from modelplane.demo.story_setting import DEPLOYMENT, POLICY
from modelplane.storyteller import FailMode, NarrativeGenerator

MAX_PROMPT = 4_000


class StorytellerService:
    def __init__(self, connection: Connection, shipper: LogShipper, inference: str, endpoints: int) -> None:
        self._connection = connection
        self._http_client = httpx.AsyncClient(timeout=10.0)
        self._generator = NarrativeGenerator(
            RemoteModel(self._http_client, inference),
            guardrails=connection.guardrails,
            policy=POLICY,
            fail_mode=FailMode.CLOSED,
            events=shipper,
        )
        self._servers = [JsonHttpServer(self.tell) for _ in range(endpoints)]
        self.ready: dict[str, Any] = {}

    async def start(self) -> None:
        self.ready = {"endpoints": [await server.start() for server in self._servers]}

    async def tell(self, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
        """One narrative: {"prompt"} in, with the routing headers ServiceCoordinator sends."""
        slot = headers.get("x-modelplane-traffic-slot", "")
        if slot not in ("stable", "canary"):
            raise BadRequest("the x-modelplane-traffic-slot header must be stable or canary")
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str) or not 0 < len(prompt) <= MAX_PROMPT:
            raise BadRequest(f'"prompt" must be text of 1 to {MAX_PROMPT} characters')
        narrative = await self._generator.generate(
            prompt,
            trace_id=headers.get("x-modelplane-trace-id", ""),
            request_id=headers.get("x-request-id", ""),
            deployment=headers.get("x-modelplane-deployment", ""),
            traffic_slot="canary" if slot == "canary" else "stable",
        )
        return {
            "slot": slot,
            "status": str(narrative.status),
            "model_version": narrative.model_version,
            "text": narrative.text,
        }

    async def command(self, command: dict[str, Any]) -> Any:
        if command.get("op") != "report_ready":
            raise ValueError(f"the story teller takes no command {command.get('op')!r}")
        for address in command["addresses"]:
            await self._connection.deployments.report_endpoint_health(
                deployment=DEPLOYMENT, address=address, ready=True
            )
        return {"reported": command["addresses"]}

    async def aclose(self) -> None:
        for server in self._servers:
            await server.aclose()
        await self._http_client.aclose()


async def start(args: argparse.Namespace, connection: Connection, shipper: LogShipper) -> StorytellerService:
    service = StorytellerService(connection, shipper, args.inference, args.endpoints)
    await service.start()
    return service


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inference", required=True, help="the inference service, HOST:PORT")
    parser.add_argument("--endpoints", type=int, default=3, help="how many endpoint addresses to serve")


def main() -> None:
    run_service("storyteller", start, add_arguments=_arguments)


if __name__ == "__main__":
    main()
