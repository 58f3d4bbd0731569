"""Cutting queued events into numbered LogBatch requests, each reporting the events lost since the last."""

from __future__ import annotations

import logging

from modelplane.client.event_queue import EventQueue
from modelplane.client.log_events import to_log_event
from modelplane.v1 import logs_pb2

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_SIZE", "Batch", "BatchCutter"]

logger = logging.getLogger(__name__)

# A batch is cut before its encoded size passes this, well under the 4 MiB message limit of both sides.
MAX_BATCH_BYTES = 3 * 1024 * 1024
# The server refuses larger batches (LogBatch.events).
MAX_BATCH_SIZE = 1000


class Batch:
    """One numbered batch; kept until acknowledged, and sent unchanged again after a reconnect."""

    __slots__ = ("events", "request", "sends", "sent_at", "sequence")

    def __init__(self, sequence: int, request: logs_pb2.StreamLogEventsRequest, events: int) -> None:
        self.sequence = sequence
        self.request = request
        self.events = events
        self.sends = 0
        self.sent_at = 0.0


class BatchCutter:
    """Takes events off `queue`, converts them (stamped with `service` and `instance` where they name none)
    and numbers them 1, 2, ... as batches of at most `batch_size` events and about MAX_BATCH_BYTES.

    Every batch carries in `dropped_since_last` the losses since the previous one: events the queue
    dropped, events that could not be converted (`unconvertible`) and events of batches the server
    refused (`reject`). A loss is reported exactly once. Used by the sender alone: not thread-safe (the
    queue it reads is).
    """

    def __init__(
        self, queue: EventQueue, *, client_id: str, service: str, instance: str, batch_size: int
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
        self.queue = queue
        self.client_id = client_id
        self.service = service
        self.instance = instance
        self.batch_size = batch_size
        self.sequence = 0
        # unconvertible and rejected count events since the start; the unreported parts go in the next batch.
        self.unconvertible = 0
        self.rejected = 0
        self._unconvertible_reported = 0
        self._unreported_rejected = 0

    def reject(self, events: int) -> None:
        """The server refused a batch of `events` events: they are lost, and reported in the next batch."""
        self.rejected += events
        self._unreported_rejected += events

    def unreported_losses(self) -> int:
        """Losses the next batch would report, without taking them."""
        return self.queue.unreported_dropped() + self._unreported_own_losses()

    def next_batch(self) -> Batch | None:
        """The next batch; None when there is neither an event nor a loss to report. A batch may hold no
        event: it then only reports losses."""
        queue = self.queue
        if not queue and not self.unreported_losses():
            return None
        events: list[logs_pb2.LogEvent] = []
        size = 0
        while len(events) < self.batch_size:
            try:
                event = queue.pop()
            except IndexError:
                break
            try:
                message = to_log_event(event, service=self.service, instance=self.instance)
            except Exception as error:
                # One bad event must not stop the others.
                self.unconvertible += 1
                if self.unconvertible == 1:
                    logger.warning(
                        "LogShipper %s: dropping an event it cannot convert: %s", self.client_id, error
                    )
                continue
            events.append(message)
            size += message.ByteSize()
            if size >= MAX_BATCH_BYTES:
                break
        dropped = queue.take_dropped() + self._unreported_own_losses()
        self._unconvertible_reported = self.unconvertible
        self._unreported_rejected = 0
        if not events and not dropped:
            return None
        self.sequence += 1
        request = logs_pb2.StreamLogEventsRequest(
            batch=logs_pb2.LogBatch(
                client_id=self.client_id, sequence=self.sequence, dropped_since_last=dropped, events=events
            )
        )
        return Batch(self.sequence, request, len(events))

    def _unreported_own_losses(self) -> int:
        return self.unconvertible - self._unconvertible_reported + self._unreported_rejected
