"""Client-side balancing over a DNS name with several A records: calls spread over the replicas it names, and
go on when one of them is killed.

Two replicas listen on the same port of 127.0.0.1 and 127.0.0.2 over one database: one in this process,
one a `modelplane serve` process that the test kills (SIGKILL). A DNS server of the test's own on loopback
answers `replicas.modelplane.test` with both addresses, and the client's target names it as the authority
(`dns://127.0.0.1:PORT/replicas.modelplane.test:PORT`), which gRPC's c-ares resolver asks: nothing of the
machine's /etc/hosts or resolvers is read or changed. The calls the in-process replica served are read from
its metrics registry; the others went to the process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from modelplane.client import connect
from modelplane.server.app import ModelplaneServer
from modelplane.v1 import registry_pb2
from tests.support import StartServer
from tests.support.dns_server import DnsServer
from tests.support.loopback import free_port
from tests.support.processes import launched, wait_serving

NAME = "replicas.modelplane.test"
# Calls of each round; bounded, each with the client's deadline.
CALLS = 40


def _get_model_calls(server: ModelplaneServer) -> float:
    value = server.metrics.registry.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_type": "unary",
            "grpc_service": "modelplane.v1.ModelRegistryService",
            "grpc_method": "GetModel",
            "grpc_code": "OK",
        },
    )
    return value or 0.0


async def test_a_dns_name_with_two_records_balances_and_survives_a_killed_replica(
    start_server: StartServer, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    first = await start_server(address=f"127.0.0.1:{port}")
    second_address = f"127.0.0.2:{port}"
    args = [
        "serve",
        "--address",
        second_address,
        "--database-url",
        database_url,
        "--no-auth",
        "--workers",
        "1",
    ]
    log_path = tmp_path / "second.log"
    with launched(args, tmp_path, log_path) as second:
        with grpc.insecure_channel(second_address) as probe:
            await asyncio.to_thread(wait_serving, second, probe, log_path)
        async with DnsServer(NAME, ["127.0.0.1", "127.0.0.2"]) as dns:
            target = f"dns://{dns.authority}/{NAME}:{port}"
            async with connect(target, balance=True) as conn:
                await conn.registry.create_model(
                    model_id="spread", model=registry_pb2.Model(provider="local")
                )
                # A replica gets calls once its health check has said SERVING; until both have, calls go to
                # the one that has. Calls until each has served one (bounded), then the spread from there.
                warm_up_calls, warm_up_end = 0, asyncio.get_running_loop().time() + 10
                while asyncio.get_running_loop().time() < warm_up_end:
                    await conn.registry.get_model(name="models/spread")
                    warm_up_calls += 1
                    if 0 < _get_model_calls(first) < warm_up_calls:
                        break
                start_here = _get_model_calls(first)
                for _ in range(CALLS):
                    await conn.registry.get_model(name="models/spread")
                assert dns.queries >= 1
                # round_robin takes the addresses in turn: each replica served a good share of the calls.
                served_here = _get_model_calls(first) - start_here
                assert CALLS // 4 <= served_here <= CALLS - CALLS // 4, served_here

                second.kill()
                await asyncio.to_thread(second.wait, 30)
                before = _get_model_calls(first)
                for _ in range(CALLS):
                    model = await conn.registry.get_model(name="models/spread")
                    assert model.name == "models/spread"
                # Every call of the round reached the replica still up.
                assert _get_model_calls(first) - before == CALLS
