"""End-to-end fixtures: a real modelplane server on loopback, auth off, over the test's own database, that a
consumer (or its own process) talks to. A module that needs other settings defines its own `server`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.config import ServerConfig


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[ModelplaneServer]:
    """A SERVING server on 127.0.0.1, any free port; idle watches send progress every 0.5 s."""
    config = ServerConfig(
        address="127.0.0.1:0", database_url=database_url, auth=False, watch_progress_interval=0.5
    )
    running = build_server(config)
    await running.start()
    try:
        await running.wait_serving()
        yield running
    finally:
        await running.stop(0)
