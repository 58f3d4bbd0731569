"""A small HTTP/1.1 server for JSON POSTs on asyncio, which the demo's services listen with: what
`HttpTransport` (orchestration) and the story teller's inference calls post to.

One handler per server gets the decoded body and the request headers (lower-cased) and returns what is
sent back as JSON; it raises BadRequest for a request it does not take (its status, 400 by default).
Connections are kept alive; every read is bounded in bytes and in time, and a handler that raises anything
else answers 500 with one line, never a traceback (which goes to the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[Any, Mapping[str, str]], Awaitable[Any]]

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
# An idle kept-alive connection is closed after this many seconds, a slow request cut off.
READ_TIMEOUT = 30.0
_REASONS = {200: "OK", 400: "Bad Request", 413: "Content Too Large", 500: "Internal Server Error"}


class BadRequest(Exception):
    """A request this server does not take: answered with `status` and the message, then closed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class JsonHttpServer:
    """Serves `handler` on HOST:PORT (port 0: any free one); `address` is where it listens once started."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.address = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES)
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{bound_host}:{bound_port}"
        return self.address

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            # Kept-alive connections would hold wait_closed open until their peers leave.
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        request = await _read_request(reader)
                except BadRequest as error:
                    await _respond(writer, error.status, {"error": str(error)}, keep_alive=False)
                    return
                if request is None:
                    return
                body, headers = request
                try:
                    answer = await self._handler(body, headers)
                except BadRequest as error:
                    await _respond(writer, error.status, {"error": str(error)})
                    continue
                except Exception as error:
                    log.exception("the handler failed")
                    await _respond(writer, 500, {"error": f"{type(error).__name__}: {error}"})
                    continue
                await _respond(writer, 200, answer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[Any, dict[str, str]] | None:
    """The next request's JSON body and headers; None when the peer closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise BadRequest("the request head is too large", 413) from None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method = request_line.split(" ", 1)[0]
    if method != "POST":
        raise BadRequest(f"only POST is served, not {method}")
    headers: dict[str, str] = {}
    for line in lines:
        name, separator, value = line.partition(":")
        if separator:
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest("content-length must be a number") from None
    if not 0 <= length <= MAX_BODY_BYTES:
        raise BadRequest(f"the body must be at most {MAX_BODY_BYTES} bytes", 413)
    raw = await reader.readexactly(length)
    try:
        return (json.loads(raw) if raw else None), headers
    except ValueError:
        raise BadRequest("the body must be JSON") from None


async def _respond(writer: asyncio.StreamWriter, status: int, body: Any, *, keep_alive: bool = True) -> None:
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()
