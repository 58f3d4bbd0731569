"""Stopping a background task for sure, even when a cancellation is lost.

On Python 3.11, asyncio.wait_for (used by asyncpg's timeouts and by our probes) can swallow a cancellation
that arrives just as the awaited operation finishes; a loop that relied on that one cancel would then run
on forever and its stop would never return. So the cancel is repeated until the task is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

# Seconds between repeated cancels, and how long to keep trying before giving up on the task.
CANCEL_RETRY = 0.2
CANCEL_LIMIT = 10.0


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, quiet: bool = False) -> None:
    """Cancels `task` and returns once it has ended (or after CANCEL_LIMIT seconds, logged). The error
    the task ended with is logged, unless `quiet`: for a task whose failure its caller reports."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_LIMIT
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY)
        if loop.time() > deadline:
            log.error(
                "the task %s did not end within %.0f s of being cancelled", task.get_name(), CANCEL_LIMIT
            )
            return
    if not task.cancelled() and task.exception() is not None and not quiet:
        log.warning("the task %s ended with %r", task.get_name(), task.exception())
