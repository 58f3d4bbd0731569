"""Watchers never miss a change: writers commit out of revision order, and a reader of `revision > N` still
sees every change once, in revision order, however its reads interleave with the commits."""

from __future__ import annotations

import asyncio
import random

from modelplane.server.store.changes import END_OF_REVISION, changes_after
from modelplane.server.store.mutations import WriteRequest, mutation
from modelplane.server.store.pool import Database

WRITERS = 12
WRITES_EACH = 15


class Refused(Exception):
    """A write that rolls back after taking its revision."""


async def _write(database: Database, rng: random.Random, writer: int, n: int) -> int | None:
    """One write that takes its revision early and then holds its transaction a random moment, so that
    commits overtake each other; one in seven rolls back after taking its revision."""
    try:
        async with mutation(database, WriteRequest(actor="tester", method="Test")) as m:
            m.change(
                resource_type="thing", resource=f"things/{writer}-{n}", kind="created", snapshot={"n": n}
            )
            await m.revision()
            await asyncio.sleep(rng.random() * 0.01)
            if rng.random() < 1 / 7:
                raise Refused
    except Refused:
        return None
    return m.taken_revision


async def test_a_watcher_never_sees_a_smaller_revision_commit_after_it_moved_past(database: Database) -> None:
    rng = random.Random(7)
    delivered: list[tuple[int, int]] = []
    published: list[int] = []
    done = asyncio.Event()

    async def watcher() -> None:
        position = (0, END_OF_REVISION)
        while True:
            finished = done.is_set()
            async with database.connection() as conn:
                latest, rows = await changes_after(
                    conn,
                    revision=position[0],
                    seq=position[1],
                    resource_types=["thing"],
                    resource=None,
                    limit=7,
                )
            published.append(latest)
            for row in rows:
                delivered.append((row.revision, row.seq))
                position = (row.revision, row.seq)
            if len(rows) < 7 and latest > position[0]:
                position = (latest, END_OF_REVISION)
            if finished and not rows:
                return
            await asyncio.sleep(0)

    async def writer(i: int) -> list[int | None]:
        return [await _write(database, rng, i, n) for n in range(WRITES_EACH)]

    watching = asyncio.create_task(watcher())
    results = await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    done.set()
    await watching

    committed = sorted(r for rs in results for r in rs if r is not None)
    async with database.connection() as conn:
        stored = [(r["revision"], r["seq"]) for r in await conn.fetch("SELECT revision, seq FROM changes")]
    # Commits did overtake each other (else the test proves nothing), and some revisions rolled back.
    assert len(committed) < WRITERS * WRITES_EACH
    # Every committed change reached the watcher exactly once, in revision order: none was skipped because
    # a larger revision committed first.
    assert delivered == sorted(stored)
    assert [revision for revision, _ in delivered] == committed
    # The published revision only ever grew, and ended past every revision taken, rolled back or not.
    assert published == sorted(published)
    async with database.connection() as conn:
        assert published[-1] == await conn.fetchval("SELECT last_value FROM revision_seq")


async def test_a_write_returns_only_once_every_smaller_revision_has_settled(database: Database) -> None:
    order: list[str] = []
    taken = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        async with mutation(database, WriteRequest(actor="tester", method="Test")) as m:
            m.change(resource_type="thing", resource="things/slow", kind="created", snapshot={})
            await m.revision()
            taken.set()
            await release.wait()
            order.append("slow commits")

    async def quick() -> None:
        async with mutation(database, WriteRequest(actor="tester", method="Test")) as m:
            m.change(resource_type="thing", resource="things/quick", kind="created", snapshot={})
        order.append("quick returns")

    slow_write = asyncio.create_task(slow())
    await taken.wait()
    quick_write = asyncio.create_task(quick())
    # The quick write commits (with the larger revision) and waits; let it get that far before the slow
    # one commits.
    await asyncio.sleep(0.2)
    release.set()
    await asyncio.gather(slow_write, quick_write)
    assert order == ["slow commits", "quick returns"]
    async with database.connection() as conn:
        assert await conn.fetchval("SELECT revision FROM revision_counter") == 2
        # The control-plane log events reached the log tail's feed in revision order.
        fed = await conn.fetch(
            "SELECT e.change_revision FROM log_tail_batches b"
            " JOIN log_events e ON e.ingest_batch = b.ingest_batch"
            " WHERE e.kind = 'control_plane_change' ORDER BY b.number"
        )
    assert [r["change_revision"] for r in fed] == [1, 2]
