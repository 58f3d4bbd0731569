"""The server's log handler: lines of an event loop's thread go out once per turn of the loop, in order."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from modelplane.server.log_lines import configure_logging

LOGGER = "modelplane.test.log_lines"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The stream the configured handler writes to, in place of stderr; logging as it was afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG")
    written = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    try:
        yield written
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _messages(stream: io.StringIO) -> list[str]:
    """This test's lines (asyncio logs its own at DEBUG)."""
    return [line.rpartition(": ")[2] for line in stream.getvalue().splitlines() if f" {LOGGER}: " in line]


def test_outside_a_loop_each_line_is_written_at_once(stream: io.StringIO) -> None:
    logging.getLogger(LOGGER).info("one")
    assert _messages(stream) == ["one"]


async def test_a_loops_info_lines_wait_for_the_end_of_its_turn(stream: io.StringIO) -> None:
    log = logging.getLogger(LOGGER)
    log.info("one")
    log.debug("two")
    assert _messages(stream) == []
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _messages(stream) == ["one", "two"]
    log.info("three")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _messages(stream) == ["one", "two", "three"]


async def test_a_warning_goes_out_at_once_after_the_lines_waiting(stream: io.StringIO) -> None:
    log = logging.getLogger(LOGGER)
    log.info("one")
    log.warning("two")
    assert _messages(stream) == ["one", "two"]


async def test_a_flush_writes_what_waits(stream: io.StringIO) -> None:
    logging.getLogger(LOGGER).info("one")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert _messages(stream) == ["one"]


def test_lines_left_by_a_loop_that_ended_go_out_with_the_next_loops(stream: io.StringIO) -> None:
    # A loop that ends before its turn does leaves its flush unrun; the next loop schedules its own.
    log = logging.getLogger(LOGGER)
    loop = asyncio.new_event_loop()

    async def log_and_stop() -> None:
        log.info("one")
        loop.stop()

    task = loop.create_task(log_and_stop())
    loop.run_forever()
    assert task.done()
    loop.close()

    async def log_again() -> None:
        log.info("two")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(log_again())
    assert _messages(stream) == ["one", "two"]
