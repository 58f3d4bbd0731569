"""Sends stored log events on to an OTLP/gRPC receiver (a collector, a log store), in commit order, from a
position kept in a file, so a stopped exporter resumes where it was.

For a team whose event volume outgrows one Postgres: modelplane keeps what rollout gates and cost need,
and the whole stream goes on to a store built for bulk. Delivery is at least once: the position is
written after the receiver has acknowledged the events before it, so a crash in between sends some events
again, each with its event id as `log.record.uid`, by which a receiver tells a repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from modelplane.server.logs.domain import LogEvent
from modelplane.server.logs.otlp_records import export_request
from modelplane.server.logs.service import LogService
from modelplane.server.logs.store import TailPosition

log = logging.getLogger(__name__)

# Records in one export request: what collectors accept by default, well below 4 MiB of events.
EVENTS_PER_EXPORT = 500
# Seconds one export may take, and between polls of the feed when following and nothing is new.
EXPORT_TIMEOUT = 30.0
POLL_INTERVAL = 1.0
# A receiver answering UNAVAILABLE (or not in time) is tried again after 0.5 s, doubling up to 30 s.
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 30.0
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class ExportError(RuntimeError):
    """The export cannot go on; the message says why and what to do."""


class PositionFile:
    """Where the exporter is in the commit feed, in a small JSON file replaced whole on each write (a
    crash leaves the old position or the new one, never half of one)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> TailPosition | None:
        """The stored position; None when the file does not exist. ExportError when it is not one."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            moment = data.get("event_time")
            return TailPosition(
                number=int(data["number"]),
                event_time=datetime.fromisoformat(moment) if moment else None,
                event_id=str(data.get("event_id", "")),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportError(
                f"{self.path} does not hold an export position ({exc}); remove it to start over"
            ) from None

    def save(self, position: TailPosition) -> None:
        data = {
            "number": position.number,
            "event_time": position.event_time.isoformat() if position.event_time else None,
            "event_id": position.event_id,
        }
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data), encoding="utf-8")
        os.replace(partial, self.path)


@dataclass(frozen=True)
class ExportStats:
    """What one run of the exporter did."""

    exported: int = 0
    rejected: int = 0
    requests: int = 0


class OtlpLogExporter:
    """Reads the log collector's commit feed from a position and exports what it reads, round by round."""

    def __init__(
        self,
        service: LogService,
        stub: logs_service_pb2_grpc.LogsServiceStub,
        positions: PositionFile,
        *,
        filter_text: str = "",
        metadata: Sequence[tuple[str, str]] = (),
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._service = service
        self._stub = stub
        self._positions = positions
        self._filter = filter_text
        self._metadata = tuple(metadata)
        self._poll_interval = poll_interval
        self.stats = ExportStats()

    async def start_position(self, *, from_oldest: bool) -> TailPosition:
        """The stored position, else the feed's oldest entry (`from_oldest`) or now. ExportError when the
        stored one is older than the feed keeps: the events in between can no longer be read from it."""
        stored = self._positions.load()
        if stored is None:
            if from_oldest:
                return TailPosition(await self._service.feed_start() - 1)
            return await self._service.feed_position()
        oldest = await self._service.feed_start()
        if stored.number < oldest - 1:
            raise ExportError(
                f"the position in {self._positions.path} (feed entry {stored.number}) is older than the feed"
                f" keeps (from entry {oldest}): events committed in between were not exported. Export them"
                " from QueryLogEvents by time, then remove the file to go on from now"
            )
        return stored

    async def run(self, position: TailPosition, *, follow: bool) -> ExportStats:
        """Exports from `position`; returns when the feed is read to its end, or (`follow`) never."""
        while True:
            read = await self._service.read_feed(position, self._filter)
            for start in range(0, len(read.events), EVENTS_PER_EXPORT):
                await self._export(read.events[start : start + EVENTS_PER_EXPORT])
            if read.position != position:
                self._positions.save(read.position)
                position = read.position
                continue
            if not follow:
                return self.stats
            await asyncio.sleep(self._poll_interval)

    async def _export(self, events: Sequence[LogEvent]) -> None:
        request = export_request(list(events))
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                response = await self._stub.Export(request, timeout=EXPORT_TIMEOUT, metadata=self._metadata)
                break
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    raise ExportError(
                        f"the receiver refused an export: {error.code().name} {error.details()}"
                    ) from None
                log.warning("the receiver answered %s; trying again in %.1f s", error.code().name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
        rejected = response.partial_success.rejected_log_records
        if rejected:
            # Rejected for good by the receiver (its rules); sending them again would change nothing.
            reason = response.partial_success.error_message
            log.warning("the receiver rejected %d records: %s", rejected, reason)
        self.stats = ExportStats(
            exported=self.stats.exported + len(events) - rejected,
            rejected=self.stats.rejected + rejected,
            requests=self.stats.requests + 1,
        )


def _channel(endpoint: str) -> grpc.aio.Channel:
    """A channel to an OTLP endpoint as OTEL_EXPORTER_OTLP_ENDPOINT writes one: http:// in plaintext,
    https:// over TLS with gRPC's bundled roots."""
    scheme, _, target = endpoint.partition("://")
    target = target.rstrip("/")
    if scheme == "http" and target:
        return grpc.aio.insecure_channel(target)
    if scheme == "https" and target:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
    raise ExportError(f"the endpoint {endpoint!r} must be http://HOST:PORT or https://HOST:PORT")


def parse_headers(text: str) -> list[tuple[str, str]]:
    """OTEL_EXPORTER_OTLP_HEADERS' form, "key=value,key2=value2", as gRPC metadata (keys in lower case)."""
    headers: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ExportError(f"the header {item!r} must be KEY=VALUE")
        headers.append((key.strip().lower(), value.strip()))
    return headers


async def export_events(
    database_url: str,
    endpoint: str,
    position_file: Path,
    *,
    headers: Sequence[tuple[str, str]] = (),
    filter_text: str = "",
    follow: bool = False,
    from_oldest: bool = False,
) -> ExportStats:
    """What `modelplane export-otlp` runs: exports the events of the database at `database_url` to
    `endpoint` from the position in `position_file` (else the oldest event the feed keeps, or now)."""
    from modelplane.server.store.pool import Database, PoolSettings

    database = Database(database_url, PoolSettings(min_size=1, max_size=2))
    await database.open()
    try:
        async with _channel(endpoint) as channel:
            stub = logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
            exporter = OtlpLogExporter(
                LogService(database),
                stub,
                PositionFile(position_file),
                filter_text=filter_text,
                metadata=headers,
            )
            position = await exporter.start_position(from_oldest=from_oldest)
            return await exporter.run(position, follow=follow)
    finally:
        await database.close()
