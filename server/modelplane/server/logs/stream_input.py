"""A StreamLogEvents call's requests as batches, converted in slices that give way to the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from modelplane.server.logs import rows
from modelplane.server.logs.domain import LogBatch, Row, RowBatch
from modelplane.v1 import logs_pb2 as pb

# Events converted between two returns to the event loop in a stream. A stream's batch takes milliseconds
# to convert; done in one go it would hold up the commit of the batches before it at each of its round
# trips to Postgres, leaving the database idle, so conversion gives way this often.
STREAM_SLICE_EVENTS = 100


async def stream_batches(
    requests: AsyncIterator[pb.StreamLogEventsRequest],
) -> AsyncIterator[LogBatch | RowBatch]:
    """Each request's batch as rows (rows.batch_rows), or the slow path's domain batch naming its sequence."""
    async for request in requests:
        message = request.batch
        if rows.header_fits(message, client_required=True):
            found: list[Row] = []
            unpriced: list[int] = []
            events = message.events
            for start in range(0, len(events), STREAM_SLICE_EVENTS):
                if start:
                    await asyncio.sleep(0)
                if not rows.add_rows(
                    events, start, min(start + STREAM_SLICE_EVENTS, len(events)), found, unpriced
                ):
                    break
            else:
                yield rows.row_batch(message, found, unpriced)
                continue
        yield rows.long_way(message, "batch", {"sequence": str(message.sequence)})
