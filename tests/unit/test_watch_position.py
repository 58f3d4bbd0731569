"""Where a resumable watch reopens: past a progress mark, or at a change's revision, dropping its repeats.

The property test plays a change log with several changes per revision against streams broken anywhere, and
checks that what the caller receives is the log from the start revision on, each change once.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.client.resumable_stream import WatchPosition


def test_a_progress_mark_reopens_after_its_revision() -> None:
    position = WatchPosition(0)
    assert position.receive("progress", 7)
    assert position.reopen() == 8
    assert position.received_at_start == 0


def test_a_change_reopens_at_its_revision_and_drops_what_was_delivered() -> None:
    position = WatchPosition(3)
    assert position.receive("change", 5)
    assert position.receive("change", 5)
    assert position.reopen() == 5
    # The reopened stream sends both changes of revision 5 again, then a third one.
    assert not position.receive("change", 5)
    assert not position.receive("change", 5)
    assert position.receive("change", 5)
    assert (position.start_revision, position.received_at_start) == (5, 3)


def test_before_any_message_the_watch_reopens_where_it_began() -> None:
    assert WatchPosition(0).reopen() == 0
    assert WatchPosition(1).reopen() == 1


def test_a_later_revision_ends_the_repeats() -> None:
    position = WatchPosition(0)
    assert position.receive("change", 4)
    assert position.reopen() == 4
    assert position.receive("change", 6)
    assert position.reopen() == 6
    assert position.receive("change", 6) is False


def test_a_message_without_an_event_changes_nothing() -> None:
    position = WatchPosition(2)
    assert position.receive(None, 0)
    assert (position.reopen(), position.received_at_start) == (2, 0)


Change = tuple[int, int]  # (revision, sequence within the revision)


@st.composite
def change_logs(draw: st.DrawFn) -> list[Change]:
    """Revisions 1..n (some holding no change the watch sees), each with 0 to 3 changes."""
    counts = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12))
    return [(revision, seq) for revision, count in enumerate(counts, start=1) for seq in range(count)]


def _stream(log: list[Change], start: int, progress_after: set[int]) -> list[tuple[str, int, int]]:
    """What the server sends from `start` (inclusive): changes, and progress marks after some revisions."""
    sent: list[tuple[str, int, int]] = []
    for index, (revision, seq) in enumerate(log):
        if revision < start:
            continue
        sent.append(("change", revision, seq))
        last_of_revision = index + 1 == len(log) or log[index + 1][0] != revision
        if last_of_revision and revision in progress_after:
            sent.append(("progress", revision, -1))
    return sent


@given(
    log=change_logs(),
    start=st.integers(min_value=1, max_value=4),
    breaks=st.lists(st.integers(min_value=0, max_value=6), max_size=6),
    progress_after=st.sets(st.integers(min_value=1, max_value=12)),
)
@settings(max_examples=300, deadline=None, derandomize=True)
def test_broken_streams_deliver_the_log_once_in_order(
    log: list[Change], start: int, breaks: list[int], progress_after: set[int]
) -> None:
    position = WatchPosition(start)
    delivered: list[Change] = []
    # Each stream ends after the number of messages in `breaks`; the last one runs to the end of the log.
    for limit in [*breaks, None]:
        messages = _stream(log, position.reopen(), progress_after)
        for kind, revision, seq in messages if limit is None else messages[:limit]:
            if position.receive(kind, revision) and kind == "change":
                delivered.append((revision, seq))
    assert delivered == [change for change in log if change[0] >= start]
