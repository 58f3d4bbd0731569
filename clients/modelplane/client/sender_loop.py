"""The thread-to-loop bridge of a background sender: any thread wakes it, waits for its progress or stops it.

A `SenderLoop` runs one coroutine either on a new event loop of its own daemon thread (`own_thread=True`)
or as a task on the event loop running where it is made. Its two asyncio events belong to that loop: the
coroutine waits on `wakeup` and ends when `stopping` is set. Other threads never touch them directly;
`wake` and `stop` hand the setting to the loop. `notify` (from the loop) and `wait_for` (from any other
thread) let a thread block until the coroutine has made the progress it needs, without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["SenderLoop"]

Main = Callable[[], Coroutine[Any, Any, None]]


class SenderLoop:
    """One background coroutine on its own thread's loop or on the caller's, and the ways to reach it.

    Make it, then `start(main)`: `main()` is called on the loop's thread (so what it makes, a grpc.aio
    channel for one, belongs to that loop). Without `own_thread` it must be made inside a running loop,
    else RuntimeError.
    """

    def __init__(self, *, name: str, own_thread: bool) -> None:
        self.name = name
        # asyncio.Event binds to a loop on first use, so these serve the sender's loop whichever it is.
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self._progress = threading.Condition(threading.Lock())
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread_id: int | None = None
        # With its own thread, the loop is made by start(): one made here would leak if the owner's
        # construction failed before starting it.
        self._loop: asyncio.AbstractEventLoop | None = None
        if own_thread:
            self._thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        else:
            self._loop = asyncio.get_running_loop()
            self._loop_thread_id = threading.get_ident()
        self._main: Main | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the coroutine runs on; RuntimeError before a SenderLoop with its own thread starts."""
        if self._loop is None:
            raise RuntimeError("the SenderLoop has not started")
        return self._loop

    @property
    def owns_thread(self) -> bool:
        return self._thread is not None

    def start(self, main: Main) -> None:
        """Runs `main()` until it returns; it should return soon after `stopping` is set."""
        if self._main is not None:
            raise RuntimeError("a SenderLoop runs one coroutine, once")
        self._main = main
        if self._thread is not None:
            self._loop = asyncio.new_event_loop()
            self._thread.start()
            self._loop_thread_id = self._thread.ident
        else:
            self._task = self.loop.create_task(main(), name=self.name)

    def on_loop_thread(self) -> bool:
        """True on the thread that runs the loop: there, blocking waits would stall the sender itself."""
        return threading.get_ident() == self._loop_thread_id

    # From any thread.

    def wake(self) -> None:
        """Sets `wakeup` on the loop. Does nothing before a start or once the loop is closed (the sender
        has ended)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.wakeup.set)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Blocks until `predicate()` holds, re-checked at each `notify`, at most `timeout` seconds (None:
        no limit); returns its last value. Not from the loop's own thread."""
        with self._progress:
            return self._progress.wait_for(predicate, timeout)

    def stop(self, timeout: float | None) -> None:
        """Sets `stopping` and waits at most `timeout` seconds for the coroutine to end (and, with its own
        thread, for the loop to close). Not from the loop's own thread."""
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                # RuntimeError: the loop is already closed, so the sender has already ended.
                self.loop.call_soon_threadsafe(self._set_stopping)
            if self._thread.ident is not None:
                self._thread.join(timeout)
        else:
            asyncio.run_coroutine_threadsafe(self._stop_task(), self.loop).result(timeout)

    async def astop(self) -> None:
        """`stop` for async code, on any loop; with its own thread, the join runs on a worker thread."""
        if self._thread is not None:
            await asyncio.to_thread(self.stop, None)
        elif asyncio.get_running_loop() is self.loop:
            await self._stop_task()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop_task(), self.loop))

    # On the loop.

    def notify(self) -> None:
        """Wakes every thread in `wait_for` to check its predicate again."""
        with self._progress:
            self._progress.notify_all()

    def _set_stopping(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    async def _stop_task(self) -> None:
        self._set_stopping()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _thread_main(self) -> None:
        assert self._main is not None
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
