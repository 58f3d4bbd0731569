"""The HTTP listener: uvicorn serving the HTTP app on the server's own event loop, beside grpc.aio.

uvicorn's `Server.serve` also takes over SIGINT and SIGTERM, which belong to modelplane's stop sequence;
so the listener drives its public steps itself (startup on sockets bound here, main_loop, shutdown).
The sockets are bound here, the way the gRPC port is: SO_REUSEPORT only for workers sharing the port.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
from typing import Any

import uvicorn

from modelplane.server.config import TlsConfig

# Seconds a stopping listener lets open requests finish before cancelling them.
DEFAULT_GRACE = 5.0


def bind_sockets(address: str, *, shared_port: bool) -> list[socket.socket]:
    """Listening sockets for HOST:PORT, one per address HOST resolves to (port 0: one free port for all).
    Raises OSError when none can be bound."""
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    bound: list[socket.socket] = []
    failure: OSError | None = None
    candidates = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    for family, kind, proto, _, sockaddr in candidates:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if shared_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        bound.append(sock)
        port = sock.getsockname()[1]
    if not bound:
        raise failure or OSError(f"cannot listen on {address}")
    return bound


class HttpListener:
    """Serves an ASGI app on bound sockets until stop()."""

    def __init__(
        self, app: Any, sockets: list[socket.socket], *, tls: TlsConfig | None, grace: float
    ) -> None:
        self._sockets = sockets
        options: dict[str, Any] = {}
        if tls is not None:
            options = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}
            if tls.client_ca_file is not None:
                options |= {"ssl_ca_certs": str(tls.client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            http="h11",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(math.ceil(grace), 1),
            **options,
        )
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)
        self._loop: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        port: int = self._sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        await self._server.startup(sockets=self._sockets)
        self._loop = asyncio.create_task(self._server.main_loop(), name="modelplane-http")

    async def stop(self) -> None:
        """Refuses new connections, lets open requests finish within the grace, then closes."""
        if self._loop is None:
            for sock in self._sockets:
                sock.close()
            return
        self._server.should_exit = True
        await self._loop
        self._loop = None
        await self._server.shutdown(sockets=self._sockets)
