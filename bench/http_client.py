"""A lean HTTP/1.1 client for benchmark load on one loopback server: asyncio streams, requests as prebuilt
bytes, idle connections kept for the next call (keep-alive) unless the server closes them. It reads only
bodies with a Content-Length (JSON APIs such as MLflow's send one), so that as little of the machine as
possible goes to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

# The largest response head read (status line and headers).
HEAD_LIMIT = 64 * 1024


class HttpError(Exception):
    """The server's answer could not be read as this client reads answers."""


class LeanHttp:
    """Keep-alive connections to one server, each used by one call at a time."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://HOST:PORT, got {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port
        self._authority = f"{parts.hostname}:{parts.port}"
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def get(self, target: str) -> bytes:
        """The bytes of a GET of `target` (path and query), built once and sent many times."""
        return f"GET {target} HTTP/1.1\r\nHost: {self._authority}\r\n\r\n".encode()

    def post_json(self, target: str, body: bytes) -> bytes:
        """The bytes of a POST of a JSON body to `target`."""
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {self._authority}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """The status and body of the answer to `request`. A kept connection the server has closed since
        is replaced once."""
        if self._idle:
            reader, writer = self._idle.pop()
            try:
                return await self._exchange(reader, writer, request)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
            except BaseException:
                writer.close()
                raise
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            return await self._exchange(reader, writer, request)
        except BaseException:
            writer.close()
            raise

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > HEAD_LIMIT:
            raise HttpError("response head too long")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length: int | None = None
        keep = True
        for line in header_lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise HttpError("chunked answers are not read here")
        if length is None:
            raise HttpError("the answer has no Content-Length")
        body = await reader.readexactly(length)
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status, body

    async def aclose(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
