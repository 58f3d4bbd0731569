"""A TCP proxy on loopback that a test can cut and restore, to take Postgres away from a running server.

Cut closes every proxied connection and stops listening, so new connections are refused just as when
Postgres is down; restore listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards 127.0.0.1:<port> to upstream_host:upstream_port until cut."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy in front of the Postgres of `url`; ValueError when the URL names no TCP host."""
        parts = urlsplit(url)
        if not parts.hostname or parts.hostname.startswith("/"):
            raise ValueError(f"not a TCP Postgres URL: {url}")
        return cls(parts.hostname, parts.port or 5432)

    def url_through(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuses new connections and drops every open one."""
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.close()
            await listener.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._pumps.clear()

    async def restore(self) -> None:
        """Accepts connections again, on the same port."""
        if self._listener is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, upstream_writer))
        for reader, writer in ((client_reader, upstream_writer), (upstream_reader, client_writer)):
            task = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end the other too, as a real network failure would.
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
