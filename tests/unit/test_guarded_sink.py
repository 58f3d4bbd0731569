"""GuardedSink: how clients emit, so that a broken sink loses events but never the calls they describe."""

from __future__ import annotations

import logging

import pytest

from modelplane.client.events import GuardedSink

LOG = logging.getLogger("tests.guarded_sink")


class Collecting:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


class Broken:
    def emit(self, event: object) -> None:
        raise RuntimeError(f"cannot take {event}")


def test_events_reach_the_sink() -> None:
    sink = Collecting()
    guarded = GuardedSink(sink, LOG)

    guarded.emit("a")
    guarded.emit("b")

    assert sink.events == ["a", "b"]
    assert guarded.errors == 0


def test_without_a_sink_events_go_nowhere() -> None:
    guarded = GuardedSink(None, LOG)
    guarded.emit("a")
    assert guarded.errors == 0


def test_a_raising_sink_is_counted_each_time_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    guarded = GuardedSink(Broken(), LOG)

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        for index in range(3):
            guarded.emit(index)

    assert guarded.errors == 3
    (record,) = caplog.records
    assert record.exc_info is not None
    assert "cannot take 0" in str(record.exc_info[1])
