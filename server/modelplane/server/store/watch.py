"""The change feed behind every watch RPC: the change table is the truth, LISTEN/NOTIFY only a wake-up.

One LISTEN connection per server process wakes every watcher when the published revision moves (see
store/publish.py); a watcher then reads `revision > N`, up to the published revision, from the change
table. A lost notification costs at most one poll interval, never a change, so the feed stays correct
across reconnects and between replicas. Each poll also publishes: revisions whose writer died between its
COMMIT and its publication are published within one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from modelplane.server.store.pool import CONNECTION_ERRORS
from modelplane.server.store.publish import CHANGES_CHANNEL, publish
from modelplane.server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_RECOVERABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


class ChangeFeed:
    """Wakes watchers when a revision newer than theirs may have committed."""

    def __init__(self, url: str, *, poll_interval: float = 1.0) -> None:
        self._url = url
        # Without a working LISTEN connection watchers still poll at this interval.
        self._poll_interval = poll_interval
        self._latest = 0
        # True while the LISTEN connection is up and caught up: only then is `latest` current.
        self._live = False
        # Set (and replaced) whenever a newer revision is seen: a wake-up for everyone waiting.
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="modelplane-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)

    @property
    def latest(self) -> int:
        """The newest revision seen committed."""
        return self._latest

    @property
    def live(self) -> bool:
        """Whether every commit is being heard of now (a notification arrives within milliseconds)."""
        return self._live

    async def wait_after(self, revision: int, max_wait: float) -> None:
        """Returns when a revision above `revision` may exist, or after `max_wait` seconds at the latest."""
        if self._latest > revision:
            return
        if self._task is None:
            max_wait = min(max_wait, self._poll_interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=max_wait)

    def _advance(self, revision: int) -> None:
        if revision > self._latest:
            self._latest = revision
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _listen(self) -> None:
        while True:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=2, command_timeout=2)

                def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
                    self._advance(int(str(payload)))

                await conn.add_listener(CHANGES_CHANNEL, on_notify)
                # Catch up with what committed while no listener was connected.
                self._advance(await publish(conn))
                self._live = True
                while not conn.is_closed():
                    await asyncio.sleep(self._poll_interval)
                    # A cheap liveness probe; also wakes watchers if a notification was missed.
                    self._advance(await publish(conn))
            except asyncio.CancelledError:
                raise
            except _RECOVERABLE as exc:
                log.debug("change feed reconnecting: %s", exc)
                await asyncio.sleep(self._poll_interval)
            finally:
                self._live = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=1)
