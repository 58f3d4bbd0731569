"""API test fixtures: a real modelplane server on 127.0.0.1:0 over a throw-away database, and a channel to it.

`server` and `channel` cover most tests (auth off). `start_server(**overrides)` starts more servers, or
servers with other settings (auth on, a metrics endpoint, another database URL); each is stopped at the end.
`proxy` stands between a server and Postgres, for outages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.config import ServerConfig
from tests.support import StartServer


def server_config(**overrides: Any) -> ServerConfig:
    """Settings for a server under test: loopback, any free port, auth off, a quick health probe."""
    settings: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "auth": False,
        "health_probe_interval": 0.1,
        "shutdown_grace": 1.0,
        "watch_progress_interval": 0.5,
        **overrides,
    }
    return ServerConfig(**settings)


@pytest.fixture
async def start_server(database_url: str) -> AsyncIterator[StartServer]:
    """Starts a server with `ServerConfig` overrides; waits until it is SERVING unless told not to."""
    started: list[ModelplaneServer] = []

    async def start(*, wait_serving: bool = True, **overrides: Any) -> ModelplaneServer:
        server = build_server(server_config(**{"database_url": database_url, **overrides}))
        await server.start()
        started.append(server)
        if wait_serving:
            await server.wait_serving(timeout=30)
        return server

    yield start
    for server in reversed(started):
        await server.stop(grace=0)


@pytest.fixture
async def server(start_server: StartServer) -> ModelplaneServer:
    """A SERVING server with auth off on the test's own migrated database."""
    return await start_server()


@pytest.fixture
async def channel(server: ModelplaneServer) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure channel to `server`."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield channel
