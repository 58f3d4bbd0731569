"""A DNS server on loopback that answers one name with the A records a test gives: a name with many replicas.

gRPC's c-ares resolver asks it when a target names it as the authority (`dns://127.0.0.1:PORT/NAME:443`), so
a test resolves a name with several addresses without touching the machine's /etc/hosts or resolvers.
It speaks just enough of RFC 1035 over UDP: a query for the name's A records gets them; any other query (AAAA,
TXT, another name) gets an answer with none, so that the resolver takes the A records and goes on.
"""

from __future__ import annotations

import asyncio
import struct
from types import TracebackType
from typing import cast

_QTYPE_A = 1
_QCLASS_IN = 1
# A response, recursion desired and available, no error; the same with "name error" (NXDOMAIN).
_FLAGS_OK = 0x8180
_FLAGS_NXDOMAIN = 0x8183
_TTL = 1


def _question(packet: bytes) -> tuple[str, int, int, int]:
    """The query's name (lower case, no final dot), type, class and where its question ends."""
    labels: list[str] = []
    at = 12
    while packet[at]:
        length = packet[at]
        labels.append(packet[at + 1 : at + 1 + length].decode("ascii").lower())
        at += 1 + length
    qtype, qclass = struct.unpack("!HH", packet[at + 1 : at + 5])
    return ".".join(labels), qtype, qclass, at + 5


def answer(packet: bytes, name: str, addresses: list[str]) -> bytes:
    """The response to one query packet: `addresses` for an A query of `name`, no records otherwise."""
    (query_id,) = struct.unpack("!H", packet[:2])
    asked, qtype, qclass, end = _question(packet)
    question = packet[12:end]
    records = b""
    count = 0
    if asked == name.lower() and qtype == _QTYPE_A and qclass == _QCLASS_IN:
        for address in addresses:
            rdata = bytes(int(part) for part in address.split("."))
            # The name as a pointer to the question's (offset 12), then type, class, TTL and the address.
            records += struct.pack("!HHHIH", 0xC00C, _QTYPE_A, _QCLASS_IN, _TTL, len(rdata)) + rdata
            count += 1
    flags = _FLAGS_OK if asked == name.lower() else _FLAGS_NXDOMAIN
    return struct.pack("!HHHHHH", query_id, flags, 1, count, 0, 0) + question + records


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        assert self._transport is not None
        self._server.queries += 1
        try:
            reply = answer(data, self._server.name, self._server.addresses)
        except (IndexError, struct.error, UnicodeDecodeError, ValueError):
            return  # not a query this server understands: no answer, as from a server that dropped it
        self._transport.sendto(reply, addr)


class DnsServer:
    """Answers `name`'s A queries with `addresses` (changeable between queries) on 127.0.0.1:port, UDP."""

    def __init__(self, name: str, addresses: list[str]) -> None:
        self.name = name
        self.addresses = list(addresses)
        self.port = 0
        self.queries = 0
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def authority(self) -> str:
        """The `host:port` of a `dns://` target's authority."""
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            self._transport.close()
