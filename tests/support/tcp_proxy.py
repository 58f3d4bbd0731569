"""A TCP proxy on loopback that a test can cut and restore, stall or hold: a peer going away or going quiet.

Cut closes every proxied connection and stops listening, so new connections are refused just as when
Postgres (or a server) is down; restore listens again on the same port. Stall forwards nothing either way
and hold_responses nothing back, with the connections kept open, as a peer that stopped answering;
resume lets the kept bytes through.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards listen_host:<port> to upstream_host:upstream_port until cut, while neither stalled nor held.

    listen_host is 127.0.0.1 unless a test listens on an address of its own making (a network namespace's
    bridge), never on every interface."""

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.port = 0
        # Connections accepted so far (a client that reconnects shows here).
        self.accepted = 0
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._requests_flow = asyncio.Event()
        self._responses_flow = asyncio.Event()
        self._requests_flow.set()
        self._responses_flow.set()

    @classmethod
    def for_url(cls, url: str, *, listen_host: str = "127.0.0.1") -> TcpProxy:
        """A proxy in front of the Postgres of `url`; ValueError when the URL names no TCP host."""
        parts = urlsplit(url)
        if not parts.hostname or parts.hostname.startswith("/"):
            raise ValueError(f"not a TCP Postgres URL: {url}")
        return cls(parts.hostname, parts.port or 5432, listen_host=listen_host)

    def url_through(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{self.listen_host}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def target(self) -> str:
        """The proxy's "host:port", for a gRPC client."""
        return f"{self.listen_host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._accept, self.listen_host, self.port)
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

    def stall(self) -> None:
        """Forwards nothing either way, keeping every connection open."""
        self._requests_flow.clear()
        self._responses_flow.clear()

    def hold_responses(self) -> None:
        """Forwards requests and keeps every response back."""
        self._responses_flow.clear()

    def resume(self) -> None:
        """Ends a stall or hold: what was kept back goes through."""
        self._requests_flow.set()
        self._responses_flow.set()

    async def restore(self) -> None:
        """Accepts connections again, on the same port."""
        if self._listener is None:
            await self.start()

    async def close(self) -> None:
        self.resume()
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
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, upstream_writer))
        for reader, writer, flow in (
            (client_reader, upstream_writer, self._requests_flow),
            (upstream_reader, client_writer, self._responses_flow),
        ):
            task = asyncio.create_task(self._pump(reader, writer, flow))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: asyncio.Event
    ) -> None:
        try:
            while True:
                await flow.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    break
                # Bytes read just before a stall or hold are kept back until it ends, as a quiet peer would.
                await flow.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end the other too, as a real network failure would.
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
