"""The ingestion stream's concurrency parts without a database: CommitPipeline commits overlapping
commits in the order they started and hands their results out oldest first, through a failure in the
middle and a cancellation; QueuedReader bounds what it reads ahead and keeps what it does not hand out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from modelplane.server.logs.pipeline import END, CommitPipeline, InOrder, PredecessorFailed, QueuedReader


class Commits:
    """Fake commits that go through both InOrder gates and log each step; each waits on its own gate."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.orders: dict[str, InOrder] = {}

    def commit(self, name: str, *, fail: bool = False) -> Callable[[InOrder], Awaitable[str]]:
        gate = self.gates[name] = asyncio.Event()

        async def run(order: InOrder) -> str:
            self.orders[name] = order
            await order.rows_may_go_in()
            self.log.append(f"{name} rows")
            order.rows_in.set()
            await gate.wait()
            if fail:
                raise ValueError(name)
            await order.may_commit()
            self.log.append(f"{name} commit")
            return name

        return run


async def _settle() -> None:
    """Lets every task that can run go as far as it can (each gate costs a few turns of the loop)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_overlapping_commits_commit_and_come_out_in_the_order_they_started() -> None:
    commits = Commits()
    pipeline: CommitPipeline[str] = CommitPipeline(3)
    for name in "abc":
        pipeline.start(commits.commit(name))
    assert pipeline.full
    # The last ready to commit first: it still waits for the two before it.
    commits.gates["c"].set()
    commits.gates["b"].set()
    await _settle()
    assert commits.log == ["a rows", "b rows", "c rows"]
    assert pipeline.take_finished() == []
    commits.gates["a"].set()
    assert [await pipeline.take_oldest() for _ in range(3)] == ["a", "b", "c"]
    assert commits.log == ["a rows", "b rows", "c rows", "a commit", "b commit", "c commit"]
    assert len(pipeline) == 0


async def test_finished_commits_are_taken_oldest_first_up_to_one_still_running() -> None:
    commits = Commits()
    pipeline: CommitPipeline[str] = CommitPipeline(3)
    for name in "abc":
        pipeline.start(commits.commit(name))
    commits.gates["a"].set()
    await _settle()
    assert pipeline.take_finished() == ["a"]
    commits.gates["c"].set()
    await _settle()
    assert pipeline.take_finished() == []  # c is done only after b
    commits.gates["b"].set()
    await _settle()
    assert pipeline.take_finished() == ["b", "c"]


async def test_a_failure_in_the_middle_rolls_back_every_commit_after_it() -> None:
    commits = Commits()
    pipeline: CommitPipeline[str] = CommitPipeline(3)
    pipeline.start(commits.commit("a"))
    pipeline.start(commits.commit("b", fail=True))
    pipeline.start(commits.commit("c"))
    for gate in commits.gates.values():
        gate.set()
    assert await pipeline.take_oldest() == "a"
    with pytest.raises(ValueError, match="b"):
        await pipeline.take_oldest()
    with pytest.raises(PredecessorFailed):
        await pipeline.take_oldest()
    assert "c commit" not in commits.log
    assert len(pipeline) == 0


async def test_closing_cancels_what_runs_and_its_followers_never_commit() -> None:
    commits = Commits()
    pipeline: CommitPipeline[str] = CommitPipeline(2)
    pipeline.start(commits.commit("a"))
    pipeline.start(commits.commit("b"))
    with pytest.raises(RuntimeError):
        pipeline.start(commits.commit("c"))
    await _settle()
    first = pipeline.oldest()
    assert first is not None
    follower = InOrder(commits.orders["b"])
    commits.gates["b"].set()
    await pipeline.close()
    assert first.cancelled()
    assert commits.orders["a"].finished.result() is False
    assert commits.orders["b"].finished.result() is False
    with pytest.raises(PredecessorFailed):
        await follower.may_commit()
    assert not any(step.endswith("commit") for step in commits.log)
    assert len(pipeline) == 0


async def test_a_cancelled_taker_leaves_the_commit_to_close() -> None:
    commits = Commits()
    pipeline: CommitPipeline[str] = CommitPipeline(2)
    pipeline.start(commits.commit("a"))
    taker = asyncio.create_task(pipeline.take_oldest())
    await _settle()
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    assert len(pipeline) == 1
    await pipeline.close()
    assert commits.log == ["a rows"]


async def _counted(items: list[object], pulled: list[int], fail: bool = False) -> AsyncIterator[object]:
    for item in items:
        pulled.append(1)
        yield item
    if fail:
        raise ConnectionError("client went away")


async def test_the_reader_reads_at_most_its_bound_ahead_and_hands_out_groups() -> None:
    pulled: list[int] = []
    reader = QueuedReader(_counted(list(range(10)), pulled), 3)
    await _settle()
    # Three queued, one more pulled and waiting for room.
    assert len(pulled) == 4
    assert await reader.take() == [0, 1, 2]
    await _settle()
    assert await reader.take() == [3, 4, 5]
    assert await reader.take() == [6, 7, 8]
    assert await reader.take() == [9, END]
    await reader.close()


async def test_the_reader_hands_out_the_source_failure_after_what_came_before() -> None:
    reader = QueuedReader(_counted(["x"], [], fail=True), 4)
    await _settle()
    x, failure = await reader.take()
    assert x == "x"
    assert isinstance(failure, ConnectionError)
    await reader.close()


async def test_the_reader_gives_way_to_what_ends_first_and_keeps_the_item_for_later() -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[str]:
        await release.wait()
        yield "late"

    reader = QueuedReader(slow(), 2)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    assert await reader.take(unless=done) == []
    release.set()
    await _settle()
    assert await reader.take(unless=done) == ["late", END]
    await reader.close()


async def test_closing_the_reader_stops_it_reading() -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[int]:
        n = 0
        while True:
            pulled.append(n)
            yield n
            n += 1

    reader = QueuedReader(endless(), 2)
    await _settle()
    await reader.close()
    count = len(pulled)
    await _settle()
    assert len(pulled) == count <= 3
