"""The HTTP face of one server process: its listening sockets, its private channel to the process's own
gRPC server, the app between them, and their start and stop.

The channel goes over a Unix socket in a directory only this user can enter, added to the gRPC server as
one more port: HTTP requests are calls of that server (its call scope, auth and errors included) without
a second TLS handshake, and nothing beyond this machine's user can reach that port.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path

import grpc

from modelplane.server.config import ServerConfig
from modelplane.server.http.app import build_app
from modelplane.server.http.listener import HttpListener, bind_sockets

# Long enough for any response the gRPC server may send (its own limit applies first).
_UNBOUNDED = -1


class HttpFace:
    """Created by bind() before the gRPC server starts (it adds the private port); start() after."""

    def __init__(self, config: ServerConfig, directory: Path, sockets: list[socket.socket]) -> None:
        self._config = config
        self._directory = directory
        self._sockets = sockets
        self._channel: grpc.aio.Channel | None = None
        self._listener: HttpListener | None = None

    @classmethod
    def bind(cls, config: ServerConfig, grpc_server: grpc.aio.Server) -> HttpFace:
        """Binds the HTTP address and adds the private port to `grpc_server`. Raises ListenError."""
        from modelplane.server.app import ListenError, check_can_listen

        assert config.http_address is not None
        if not config.shared_port:
            check_can_listen(config.http_address, "the HTTP address")
        try:
            sockets = bind_sockets(config.http_address, shared_port=config.shared_port)
        except OSError as exc:
            raise ListenError(f"cannot listen on the HTTP address {config.http_address}: {exc}") from None
        directory = Path(tempfile.mkdtemp(prefix="modelplane-http-"))
        if not grpc_server.add_insecure_port(f"unix:{directory / 'grpc.sock'}"):
            for sock in sockets:
                sock.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise ListenError(f"cannot open the HTTP face's private gRPC socket in {directory}")
        return cls(config, directory, sockets)

    @property
    def port(self) -> int:
        port: int = self._sockets[0].getsockname()[1]
        return port

    @property
    def target(self) -> str:
        """host:port a client on this machine dials."""
        from modelplane.server.app import local_target

        host = self._config.http_address.rpartition(":")[0].strip("[]") if self._config.http_address else ""
        return local_target(host, self.port)

    async def start(self, services: Iterable[str]) -> None:
        from google.protobuf import descriptor_pool

        pool = descriptor_pool.Default()
        limit = self._config.max_message_bytes
        self._channel = grpc.aio.insecure_channel(
            f"unix:{self._directory / 'grpc.sock'}",
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", _UNBOUNDED),
            ],
        )
        app = build_app(
            self._channel,
            [pool.FindServiceByName(name) for name in services],
            max_body_bytes=limit,
        )
        self._listener = HttpListener(
            app, self._sockets, tls=self._config.tls, grace=self._config.shutdown_grace
        )
        await self._listener.start()

    async def stop(self) -> None:
        try:
            if self._listener is not None:
                await self._listener.stop()
            else:
                for sock in self._sockets:
                    sock.close()
        finally:
            if self._channel is not None:
                await self._channel.close(None)
            shutil.rmtree(self._directory, ignore_errors=True)
