"""A background task is stopped even when it swallows a cancellation, as wait_for can on Python 3.11."""

from __future__ import annotations

import asyncio

from modelplane.server.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    swallowed = 0

    async def stubborn_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1  # lost, like a cancel that met a finishing wait_for
                    continue
                raise

    task = asyncio.create_task(stubborn_loop())
    await asyncio.sleep(0.01)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert swallowed == 1


async def test_nothing_to_stop_is_fine() -> None:
    await cancel_and_wait(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)
    assert done.done()
