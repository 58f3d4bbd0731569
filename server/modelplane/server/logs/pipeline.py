"""The concurrency of one ingestion stream: a reader that queues what the client sends, and a pipeline of
overlapping commits that still commit, and are acknowledged, in the order they started.

No SQL here: a commit is any coroutine that takes its InOrder and awaits its two gates (store.ingest is
the one the service gives).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from modelplane.server.tasks import cancel_and_wait

A = TypeVar("A")
T = TypeVar("T")


class PredecessorFailed(Exception):
    """The commit this one was to follow did not commit, so this one rolled back."""


class InOrder:
    """One of a stream's commits among the others, so that two of them overlap and still commit in order:
    each starts writing its rows once the one before has all its rows in (so the one before never waits on
    this one's rows), and commits once the one before has committed."""

    def __init__(self, before: InOrder | None) -> None:
        self.before = before
        self.rows_in = asyncio.Event()
        self.finished: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finish(self, committed: bool) -> None:
        if not self.finished.done():
            self.finished.set_result(committed)
        self.before = None  # a long stream must not keep a chain of every commit alive

    async def rows_may_go_in(self) -> None:
        before = self.before
        if before is not None and not before.finished.done():
            rows_in: asyncio.Future[bool] = asyncio.ensure_future(before.rows_in.wait())
            try:
                await asyncio.wait({rows_in, before.finished}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                rows_in.cancel()

    async def may_commit(self) -> None:
        before = self.before
        # Shielded: a cancelled follower must not cancel what the one before waits on.
        if before is not None and not await asyncio.shield(before.finished):
            raise PredecessorFailed("the commit before this one did not commit")


async def _finishing(order: InOrder, commit: Awaitable[A]) -> A:
    """Awaits the commit, then tells the one after it whether it committed."""
    try:
        result = await commit
    except BaseException:
        order.finish(committed=False)
        raise
    order.finish(committed=True)
    return result


class CommitPipeline(Generic[A]):
    """Commits started one after another, at most `depth` running at once, each chained to the one before
    by an InOrder; their results are taken oldest first. A failed commit raises when its result is taken,
    and the ones after it fail with PredecessorFailed. `close` cancels what still runs."""

    def __init__(self, depth: int, *, name: str = "modelplane-commit") -> None:
        self.depth = depth
        self._name = name
        self._running: deque[tuple[asyncio.Task[A], InOrder]] = deque()

    def __len__(self) -> int:
        return len(self._running)

    @property
    def full(self) -> bool:
        return len(self._running) >= self.depth

    def start(self, commit: Callable[[InOrder], Awaitable[A]]) -> None:
        """Starts `commit(order)`; it must be taken (or the pipeline closed) before more than `depth` run."""
        if self.full:
            raise RuntimeError(f"{self.depth} commits are running already; take the oldest first")
        order = InOrder(self._running[-1][1] if self._running else None)
        task = asyncio.create_task(_finishing(order, commit(order)), name=self._name)
        self._running.append((task, order))

    def oldest(self) -> asyncio.Task[A] | None:
        """The oldest running commit, to wait on beside something else; None when none runs."""
        return self._running[0][0] if self._running else None

    def take_finished(self) -> list[A]:
        """The results of the oldest commits that have ended, oldest first, up to the first still running."""
        results: list[A] = []
        while self._running and self._running[0][0].done():
            task, _ = self._running.popleft()
            results.append(task.result())
        return results

    async def take_oldest(self) -> A:
        """Waits for the oldest commit and returns its result."""
        task, _ = self._running[0]
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._running.popleft()

    async def close(self) -> None:
        """Cancels the commits no one will take; their errors are not reported (the caller's first failure,
        already raised, is)."""
        running = [task for task, _ in self._running]
        self._running.clear()
        await asyncio.gather(*(cancel_and_wait(task, quiet=True) for task in running))


class End:
    """The end of what the client sent."""


END = End()


class QueuedReader(Generic[T]):
    """Reads `source` in a task of its own into a queue of `bound` items; when the queue is full the reader
    waits and stops pulling, so the source's producer is slowed (for gRPC, by HTTP/2 flow control). What
    comes out is the items, then END, or the exception that ended `source`."""

    def __init__(self, source: AsyncIterator[T], bound: int, *, name: str = "modelplane-reader") -> None:
        self.bound = max(1, bound)
        self._queue: asyncio.Queue[T | End | Exception] = asyncio.Queue(maxsize=self.bound)
        self._task = asyncio.create_task(self._read(source), name=name)

    async def _read(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await self._queue.put(item)
            await self._queue.put(END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # taken by the consumer, which raises it after what came before
            await self._queue.put(exc)

    async def take(self, *, unless: asyncio.Future[Any] | None = None) -> list[T | End | Exception]:
        """What is queued, at least one item and at most `bound`, ending at END or an exception; waits for
        the first item. An empty list when `unless` ends first while nothing is queued (what comes later
        stays queued)."""
        if unless is not None and self._queue.empty():
            getter: asyncio.Future[Any] = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait({getter, unless}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if not getter.done() or getter.cancelled():
                return []
            items = [getter.result()]
        else:
            items = [await self._queue.get()]
        while (
            len(items) < self.bound and not isinstance(items[-1], End | Exception) and not self._queue.empty()
        ):
            items.append(self._queue.get_nowait())
        return items

    async def close(self) -> None:
        await cancel_and_wait(self._task)
