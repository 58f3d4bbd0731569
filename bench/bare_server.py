"""The benchmark's baseline server: a bare grpc.aio server with one empty unary method and nothing else.

Run by bench/run.py as `python -m bench.bare_server --address HOST:PORT` in a process of its own, with
grpc.aio's default options, so a modelplane RPC's throughput divided by this one's says what modelplane adds
to the gRPC stack and Python. It serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import grpc

# The method the load calls: no request fields, no response fields, no interceptors, no serializers.
SERVICE = "bench.Bare"
METHOD = "Empty"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


async def _empty(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""


async def serve(address: str) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(_empty)}
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen on {address}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bare_server", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT to listen on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())
