"""Publishes settled revisions: after its writes commit, a process moves the watchers' horizon and wakes them.

A write takes its revision from a sequence just before COMMIT (see schema/0011), so commits do not wait for
each other; `revision_counter.revision` is the published horizon below which every revision has committed or
rolled back, and every reader of `revision > N` reads only up to it. A write returns once the horizon covers
its revision (so what a caller wrote is in every watch and read that starts after the call returned), and the
concurrent writes of a process share one publication: one statement and one NOTIFY for the lot, however many
committed while the previous one ran.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref

from modelplane.server.store.pool import Connection, Database

log = logging.getLogger(__name__)

# The LISTEN/NOTIFY channel: only a wake-up hint carrying the published revision; watchers read the change
# table.
CHANGES_CHANNEL = "modelplane_changes"

# The longest a write waits for its revision to be published after it has committed: past it, the write
# returns all the same (it has committed) and the change feed's next poll publishes it.
PUBLISH_WAIT = 2.0

# Pauses between publications that did not reach a revision waited for (a smaller one still in flight,
# perhaps in another replica): from the first to the last, doubling.
RETRY_PAUSE = 0.001
MAX_RETRY_PAUSE = 0.05


async def publish(conn: Connection) -> int:
    """Moves the horizon up to the settled revision (a NOTIFY when it moved); returns the horizon."""
    return int(await conn.fetchval("SELECT publish_revision($1)", CHANGES_CHANNEL))


class RevisionPublisher:
    """One process's publications, one at a time: each write that committed waits for one that began after
    its commit and reached its revision."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._published = 0
        # The highest revision a waiting write committed.
        self._wanted = 0
        # Resolved when the publication after the running one (or the first) has finished.
        self._next: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def published(self) -> int:
        """The highest horizon this process has published or seen published."""
        return self._published

    async def committed(self, revision: int) -> None:
        """Returns once the horizon covers `revision`, a revision this process's write has just committed,
        or after PUBLISH_WAIT seconds (or a failed publication) at the latest."""
        if revision <= self._published:
            return
        self._wanted = max(self._wanted, revision)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_WAIT
        while revision > self._published:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning(
                    "revision %d not published within %.1f s; the feed's poll will", revision, PUBLISH_WAIT
                )
                return
            if self._next is None:
                self._next = loop.create_future()
            finished = self._next
            if self._task is None:
                # An empty context: the publication is no call's, and no call's deadline bounds it.
                self._task = loop.create_task(
                    self._run(), name="modelplane-revision-publisher", context=contextvars.Context()
                )
            try:
                await asyncio.wait_for(asyncio.shield(finished), remaining)
            except TimeoutError:
                continue
            except Exception:  # the write has committed; _run logged the failure
                return

    async def _run(self) -> None:
        pause = RETRY_PAUSE
        try:
            while self._next is not None:
                finished, self._next = self._next, None
                try:
                    async with self._database.connection() as conn:
                        horizon = await publish(conn)
                except Exception as exc:
                    log.debug("publishing revisions failed: %s", exc)
                    finished.set_exception(exc)
                    # Nobody may be left waiting on it: it would be an exception never retrieved.
                    finished.exception()
                    continue
                progressed = horizon > self._published
                self._published = max(self._published, horizon)
                finished.set_result(None)
                if self._wanted > self._published and self._next is not None and not progressed:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, MAX_RETRY_PAUSE)
                elif progressed:
                    pause = RETRY_PAUSE
        finally:
            self._task = None


_PUBLISHERS: weakref.WeakKeyDictionary[Database, RevisionPublisher] = weakref.WeakKeyDictionary()


def publisher_for(database: Database) -> RevisionPublisher:
    """The publisher of this database's writes in this process."""
    found = _PUBLISHERS.get(database)
    if found is None:
        found = _PUBLISHERS[database] = RevisionPublisher(database)
    return found
