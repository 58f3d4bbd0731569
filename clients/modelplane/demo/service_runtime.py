"""How each of the demo's consumer services runs as a process of its own, and how the story talks to it.

A service process connects to the server, ships every event it makes through one LogShipper, and speaks
JSON lines: one `{"ready": ...}` line on stdout once it serves, then one `{"reply": ...}` line for each
command read from stdin, and a last `{"stopped": ...}` line with its shipper's counters once stdin closes.
The command `{"op": "flush"}` is answered by every service: it waits until the server has acknowledged
every event emitted so far and replies with the counters. Log lines go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from modelplane.client import Connection, LogShipper, connect

# Events are shipped often, so a flush before the story's aggregation returns quickly.
FLUSH_INTERVAL = 0.05
FLUSH_TIMEOUT = 20.0


class Service(Protocol):
    """One consumer service inside its process."""

    # What the ready line tells the story (addresses it listens on, ...).
    ready: dict[str, Any]

    async def command(self, command: dict[str, Any]) -> Any:
        """Carries out one command from the story; the answer is sent back as the reply."""
        ...

    async def aclose(self) -> None:
        """Stops taking work and closes the clients it opened."""
        ...


StartService = Callable[[argparse.Namespace, Connection, LogShipper], Awaitable[Service]]


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def shipper_counters(shipper: LogShipper) -> dict[str, int]:
    return {key: value for key, value in dataclasses.asdict(shipper.stats).items() if isinstance(value, int)}


async def _serve(name: str, args: argparse.Namespace, start: StartService) -> None:
    async with connect(args.server) as connection:
        shipper = LogShipper(connection, service=name, instance=f"{name}-1", flush_interval=FLUSH_INTERVAL)
        service = await start(args, connection, shipper)
        say({"ready": service.ready})
        try:
            while line := await asyncio.to_thread(sys.stdin.readline):
                command = json.loads(line)
                if command.get("op") == "flush":
                    flushed = await shipper.aflush(FLUSH_TIMEOUT)
                    say({"reply": {"flushed": flushed, **shipper_counters(shipper)}})
                else:
                    say({"reply": await service.command(command)})
        finally:
            await service.aclose()
            await shipper.aclose(timeout=FLUSH_TIMEOUT)
        say({"stopped": shipper_counters(shipper)})


def run_service(
    name: str,
    start: StartService,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
) -> None:
    """The main function of service `name`: `--server HOST:PORT`, then whatever `add_arguments` adds."""
    parser = argparse.ArgumentParser(prog=f"python -m modelplane.demo.{name}_service")
    parser.add_argument("--server", required=True, help="the modelplane server, HOST:PORT")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_serve(name, args, start))
