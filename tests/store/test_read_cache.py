"""The read cache serves a value only while no newer commit has been heard of, and never a stale one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from modelplane.server.store.mutations import WriteRequest, mutation
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.server.store.watch import ChangeFeed


async def commit(database: Database, resource: str) -> int:
    async with mutation(database, WriteRequest(actor="t", method="Test")) as m:
        return await m.record(resource_type="thing", resource=resource, kind="created", snapshot=None)


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Polls a condition the feed makes true from its own task (there is no event to wait on)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the condition belongs to another task's state
            await asyncio.sleep(0.01)


@pytest.fixture
async def live_feed(database_url: str) -> AsyncIterator[ChangeFeed]:
    """A change feed on the test's database, started and live; stopped after the test."""
    feed = ChangeFeed(database_url, poll_interval=0.2)
    await feed.start()
    try:
        await wait_until(lambda: feed.live)
        yield feed
    finally:
        await feed.stop()


async def test_entries_live_until_a_newer_commit_is_heard_of(database: Database, database_url: str) -> None:
    feed = ChangeFeed(database_url, poll_interval=0.2)
    cache: ReadCache[str] = ReadCache(feed)
    # Not live yet: nothing is kept.
    cache.put("k", "v0", 0)
    assert cache.get("k") is None
    await feed.start()
    try:
        await wait_until(lambda: feed.live)
        first = await commit(database, "things/a")
        await wait_until(lambda: feed.latest == first)
        cache.put("k", "v1", first)
        assert cache.get("k") == "v1"
        # A value read at an older revision than the feed knows is not kept.
        cache.put("old", "stale", first - 1)
        assert cache.get("old") is None

        # A commit elsewhere: once its notification arrives, the entry is gone.
        second = await commit(database, "things/b")
        await wait_until(lambda: feed.latest == second)
        assert cache.get("k") is None
    finally:
        await feed.stop()
    assert not feed.live
    assert cache.get("k") is None


async def test_own_writes_empty_the_cache_before_the_notification(
    database: Database, live_feed: ChangeFeed
) -> None:
    feed = live_feed
    cache: ReadCache[str] = ReadCache(feed)
    revision = feed.latest
    cache.put("k", "before", revision)
    assert cache.get("k") == "before"
    # This replica wrote revision + 1: from now on nothing older is served or kept, even though the
    # feed may not have heard of it yet.
    cache.written(revision + 1)
    assert cache.get("k") is None
    cache.put("k", "raced", revision)
    assert cache.get("k") is None

    loads = 0

    async def load() -> tuple[str, int]:
        nonlocal loads
        loads += 1
        return "fresh", feed.latest

    await commit(database, "things/c")
    await wait_until(lambda: feed.latest == revision + 1)
    assert await cache.read("k", load) == "fresh"
    assert await cache.read("k", load) == "fresh"
    assert loads == 1


async def test_reads_that_miss_together_share_one_load_as_new_as_their_own(
    database: Database, live_feed: ChangeFeed
) -> None:
    feed = live_feed
    cache: ReadCache[str] = ReadCache(feed)
    first = await commit(database, "things/a")
    await wait_until(lambda: feed.latest == first)
    loads: list[str] = []
    release = asyncio.Event()

    def loader(value: str, revision: int, *, fail: bool = False) -> Callable[[], Awaitable[tuple[str, int]]]:
        async def load() -> tuple[str, int]:
            loads.append(value)
            await release.wait()
            if fail:
                raise RuntimeError("the first reader's load failed")
            return value, revision

        return load

    # Twenty reads of one key at once: one load, and every read gets its value.
    reads = [asyncio.create_task(cache.read("k", loader("v1", first))) for _ in range(20)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*reads) == ["v1"] * 20
    assert loads == ["v1"]

    # A read after this replica's own write does not join a load that began before it.
    loads.clear()
    release.clear()
    second = await commit(database, "things/b")
    await wait_until(lambda: feed.latest == second)
    before = asyncio.create_task(cache.read("j", loader("old", second)))
    await asyncio.sleep(0.01)
    cache.written(second + 1)
    after = asyncio.create_task(cache.read("j", loader("new", second + 1)))
    await asyncio.sleep(0.01)
    release.set()
    assert (await before, await after) == ("old", "new")
    assert loads == ["old", "new"]

    # The first reader's load fails: that reader hears its error, the others load for themselves.
    loads.clear()
    release.clear()
    third = await commit(database, "things/c")
    await wait_until(lambda: feed.latest == third)
    failing = asyncio.create_task(cache.read("f", loader("x", third, fail=True)))
    await asyncio.sleep(0.01)
    joined = [asyncio.create_task(cache.read("f", loader("y", third))) for _ in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*joined) == ["y"] * 3
    with pytest.raises(RuntimeError):
        await failing
    assert loads == ["x", "y", "y", "y"]
