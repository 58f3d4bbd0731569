"""The demo's orchestration service: the front door. ServiceCoordinator follows the deployment's traffic table
through WatchDeployment and routes each reader's request to a story teller endpoint over HTTP, with no RPC
per request; every routed call is shipped as a RoutingEvent.

Commands: `{"op": "traffic", "round": R, "count": N}` sends N requests (readers `reader-R-0` ...) and replies
with how they went: per slot, model version and narrative status, how many.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections import Counter
from typing import Any

from modelplane.client import Connection, LogShipper
from modelplane.demo.service_runtime import run_service
from modelplane.demo.story_setting import DEPLOYMENT
from modelplane.orchestration import HttpTransport, ServiceCoordinator

SUBJECTS = ("a lighthouse", "a lost kite", "the river otter", "a clockwork fox", "the night market")
# Requests of one round in flight at once, as a busy front door has.
CONCURRENCY = 8
MAX_ROUND = 1_000


class OrchestrationService:
    def __init__(self, connection: Connection, shipper: LogShipper) -> None:
        self._coordinator = ServiceCoordinator(
            deployments=connection.deployments,
            transport=HttpTransport(path="/story", default_timeout=10.0),
            events=shipper,
            watch=[DEPLOYMENT],
        )
        self.ready: dict[str, Any] = {}

    async def start(self) -> None:
        table = await self._coordinator.follow(DEPLOYMENT)
        if table is None:
            raise RuntimeError(f"no traffic table for {DEPLOYMENT}: create the deployment first")
        self.ready = {"deployment": DEPLOYMENT, "table_revision": table.revision}

    async def command(self, command: dict[str, Any]) -> Any:
        if command.get("op") != "traffic":
            raise ValueError(f"the orchestration service takes no command {command.get('op')!r}")
        round_number, count = int(command["round"]), int(command["count"])
        if not 0 < count <= MAX_ROUND:
            raise ValueError(f"a round is 1 to {MAX_ROUND} requests")
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(index: int) -> None:
            reader = f"reader-{round_number}-{index}"
            async with gate:
                try:
                    answer = await self._coordinator.call(
                        DEPLOYMENT,
                        {"prompt": f"Tell {reader} a story about {SUBJECTS[index % len(SUBJECTS)]}"},
                        routing_key=reader,
                        trace_id=uuid.uuid4().hex,
                        request_id=f"{reader}-{uuid.uuid4().hex[:8]}",
                    )
                except Exception as error:
                    outcomes[f"error {type(error).__name__}"] += 1
                    return
            outcomes[" ".join((answer["model_version"], answer["slot"], answer["status"]))] += 1

        await asyncio.gather(*(one(index) for index in range(count)))
        return dict(outcomes)

    async def aclose(self) -> None:
        await self._coordinator.aclose()


async def start(
    args: argparse.Namespace, connection: Connection, shipper: LogShipper
) -> OrchestrationService:
    service = OrchestrationService(connection, shipper)
    await service.start()
    return service


def main() -> None:
    run_service("orchestration", start)


if __name__ == "__main__":
    main()
