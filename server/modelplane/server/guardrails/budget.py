"""Check threads: every check runs on one, within its time budget, so the event loop never runs a rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from modelplane.server.guardrails.engine import CheckTimeout

T = TypeVar("T")
# Threads that run checks. A check still waiting for a thread when its budget runs out is not started.
CHECK_THREADS = 4


class CheckThreads:
    """Runs work(deadline) on a check thread; CheckTimeout when its budget runs out first.

    The engine looks at the deadline as it goes, so a thread whose caller gave up soon stops too."""

    def __init__(self, threads: int = CHECK_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="modelplane-check")

    async def run(self, work: Callable[[float], T], budget: float) -> T:
        deadline = time.perf_counter() + budget
        future = asyncio.get_running_loop().run_in_executor(self._pool, work, deadline)
        try:
            return await asyncio.wait_for(future, budget)
        except TimeoutError:
            raise CheckTimeout from None

    def close(self) -> None:
        """Drops the checks not started; running ones stop at their deadlines, and nothing waits for them."""
        self._pool.shutdown(wait=False, cancel_futures=True)
