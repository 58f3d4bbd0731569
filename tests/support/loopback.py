"""Waiting on loopback tests: a port nothing listens on yet, and polling until a condition holds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, for a server a test starts later on purpose."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def until(condition: Callable[[], bool], what: str = "the condition", *, within: float = 20.0) -> None:
    """Polls `condition` (state another thread or task moves) until it holds; fails the test naming `what`
    when it has not after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 -- the state belongs to another thread or task
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within:g} s") from None
