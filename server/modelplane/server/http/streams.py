"""Server streams over HTTP: Server-Sent Events (the default) or newline-delimited JSON, and resuming a
watch from a browser's Last-Event-ID.

SSE: each message is one event whose data is the message's JSON; a stream that ends with an error sends
one `event: error` whose data is the google.rpc.Status JSON. NDJSON (Accept: application/x-ndjson): one
line per message, `{"result": ...}`, and `{"error": status}` last on an error, as grpc-gateway writes.

Watch streams (a request with `start_revision`, responses holding a `change` or a `progress` with a
`revision`) carry SSE ids that resume exactly: a progress mark's id is its revision N ("everything up to
N was sent": resume at N + 1); a change's id is "N:k", the k-th change of revision N (one revision can
hold several changes, and a stream can end between them: resume at N and skip the first k).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from modelplane.server.errors import InvalidArgument
from modelplane.v1.error_reason_pb2 import ErrorReason

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
LAST_EVENT_ID = "last-event-id"
START_REVISION = "start_revision"
# An SSE comment: EventSource ignores it; it keeps an idle stream from looking dead to proxies.
SSE_KEEPALIVE = b": keep-alive\n\n"


def wants_ndjson(accept: str) -> bool:
    """NDJSON only when asked for by name; SSE otherwise (a browser's EventSource asks for SSE)."""
    return NDJSON in accept.lower()


def sse_event(data: Any, *, event: str = "", event_id: str = "") -> bytes:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    # json.dumps writes no raw newline, so the data is one `data:` line.
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def ndjson_line(key: str, data: Any) -> bytes:
    return (json.dumps({key: data}, separators=(",", ":")) + "\n").encode()


def is_resumable(request: Descriptor, response: Descriptor) -> bool:
    """True for a watch: the request takes start_revision, each response is a change or a progress mark
    with a revision."""
    if START_REVISION not in request.fields_by_name:
        return False
    for name in ("change", "progress"):
        field = response.fields_by_name.get(name)
        if field is None or field.message_type is None or "revision" not in field.message_type.fields_by_name:
            return False
    return True


@dataclass(frozen=True)
class ResumePoint:
    """Where a watch picks up: its start_revision, and how many changes of that revision to skip."""

    start_revision: int
    skip: int

    @classmethod
    def parse(cls, last_event_id: str) -> ResumePoint:
        revision, sep, seen = last_event_id.strip().partition(":")
        try:
            number = int(revision)
            count = int(seen) if sep else 0
        except ValueError:
            number = count = -1
        if number < 0 or count < 0:
            raise InvalidArgument.field(
                START_REVISION,
                f"Last-Event-ID {last_event_id[:40]!r} is not an id this server sent (N or N:k); drop the"
                " header to watch from start_revision",
                reason=ErrorReason.ERROR_REASON_MALFORMED_REQUEST,
            )
        if sep:
            return cls(number, count)
        return cls(number + 1, 0)


class WatchIds:
    """Gives each message of a watch its SSE id, and drops the changes a resumed client already has."""

    def __init__(self, resume: ResumePoint | None) -> None:
        self._revision = -1
        self._count = 0
        # The changes of the resume revision that the client has: only that revision's are skipped.
        self._skip_revision = resume.start_revision if resume is not None else -1
        self._skip = resume.skip if resume is not None else 0

    def id_of(self, message: Message) -> str | None:
        """The message's id, or None when the client already has it (skip it)."""
        if message.HasField("progress"):
            return str(message.progress.revision)  # type: ignore[attr-defined]
        revision: int = message.change.revision  # type: ignore[attr-defined]
        if revision != self._revision:
            self._revision, self._count = revision, 0
        self._count += 1
        if revision == self._skip_revision and self._count <= self._skip:
            return None
        return f"{revision}:{self._count}"
