"""A bounded FIFO of events that any thread may put into; when full it drops the oldest and counts it."""

from __future__ import annotations

import contextlib
import threading
from collections import deque

__all__ = ["EventQueue"]


class EventQueue:
    """A bounded FIFO of events that any thread may put into: when full, `put` drops the OLDEST event and
    counts it, so the newest events survive an outage. Only the drop count needs the lock (it must be
    exact); `pop` takes no lock (deque.popleft is atomic), so the consumer never makes a producer wait.
    """

    __slots__ = (
        "_closed",
        "_dropped_reported",
        "_events",
        "_lock",
        "accepted",
        "capacity",
        "dropped",
        "refused",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._events: deque[object] = deque()
        self._lock = threading.Lock()
        self._closed = False
        # accepted counts events put; dropped those pushed out by a put into a full queue; refused those
        # put after close (never accepted).
        self.accepted = 0
        self.dropped = 0
        self.refused = 0
        self._dropped_reported = 0

    def put(self, event: object) -> int:
        """Appends `event`, dropping the oldest first when full; returns the length after, 0 when closed."""
        with self._lock:
            if self._closed:
                self.refused += 1
                return 0
            events = self._events
            if len(events) >= self.capacity:
                # IndexError: the consumer emptied the queue meanwhile, so nothing needs dropping.
                with contextlib.suppress(IndexError):
                    events.popleft()
                    self.dropped += 1
            events.append(event)
            self.accepted += 1
            return len(events)

    def pop(self) -> object:
        """The oldest event, removed; IndexError when empty."""
        return self._events.popleft()

    def take_dropped(self) -> int:
        """How many events were dropped since the last call."""
        with self._lock:
            dropped = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            return dropped

    def unreported_dropped(self) -> int:
        """How many events were dropped since the last `take_dropped`, without resetting it."""
        with self._lock:
            return self.dropped - self._dropped_reported

    def close(self) -> None:
        """Refuses (and counts) every later put."""
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def clear(self) -> int:
        """Empties the queue; returns how many events it held."""
        with self._lock:
            count = len(self._events)
            self._events.clear()
            return count

    def __len__(self) -> int:
        return len(self._events)
