"""Two replicas on hosts of their own (network namespaces on one bridge), balanced both ways gRPC is balanced:
by the client (round_robin over both addresses, with gRPC health checking) and by haproxy with
deploy/haproxy/modelplane.cfg. Both replicas serve one client connection; a replica killed under load costs no
acknowledged write; restarted, it takes calls again; cut from Postgres, it turns NOT_SERVING and the balancer
stops sending it calls. Each replica reaches the test's Postgres through a relay of its own on the root end
of the bridge, so one replica's Postgres can be cut while the other keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelplane.client.channel import Connection, TlsOptions, connect
from modelplane.client.errors import EtagMismatch, ModelplaneError, Unknown
from modelplane.client.retry import NO_RETRY
from modelplane.client.service_config import BALANCING_SERVICE_CONFIG
from modelplane.v1 import registry_pb2
from tests.support.certificates import make_self_signed
from tests.support.netns import Host, Network, unavailable_reason
from tests.support.processes import SHUTDOWN_GRACE, STARTUP_LIMIT, environment, modelplane_command
from tests.support.tcp_proxy import TcpProxy

T = TypeVar("T")

# Two replicas start (and one starts again) and the balancers need seconds to see each change.
slow = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = REPO / "deploy" / "haproxy" / "modelplane.cfg"
PORT = 50051
# The name in the TLS proxy's certificate, which the client checks.
PROXY_NAME = "modelplane-proxy"
CREATE = "/modelplane.v1.ModelRegistryService/CreateModel"
# Calls in one round of load, and how many run at once; enough that both replicas get some.
ROUND = 40
CONCURRENCY = 4
# How long a balancer may take to notice a change (haproxy checks every second, two in a row decide).
SETTLE = 30.0
# Numbers each round of load, so that model ids never repeat within a test.
_BATCHES = itertools.count(1)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, *, within: float = SETTLE) -> None:
    """Polls `check` every 0.2 s until it holds; fails naming `what` after `within` seconds."""
    give_up = time.monotonic() + within
    for _ in range(int(within / 0.2) + 1):
        if await check():
            return
        if time.monotonic() > give_up:
            break
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within:g} s")


SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(address: str) -> int | None:
    """The replica's overall health status, or None when it does not answer."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    status: int = reply.status
    return status


@dataclass
class Replica:
    """`modelplane serve --workers 1` in a namespace of its own, reaching Postgres through `relay`."""

    name: str
    host: Host
    relay: TcpProxy
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host.address}:{PORT}"

    def start(self) -> None:
        args = [
            *modelplane_command(), "serve", "--workers", "1", "--address", self.address,
            "--database-url", self.relay.url_through(self.database_url),
            "--shutdown-grace", str(SHUTDOWN_GRACE),
        ]  # fmt: skip
        # Appended to: a restarted replica's calls are counted after its first life's.
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.host.command(args), stdout=log_file, stderr=subprocess.STDOUT, env=environment()
            )

    def kill(self) -> None:
        """SIGKILL: the replica dies mid-call, with no goodbye to its clients or Postgres."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=SHUTDOWN_GRACE + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def served(self, method: str = CREATE) -> int:
        """Calls of `method` this replica answered OK, by its access log."""
        return self.log_path.read_text().count(f"modelplane.access: {method} OK ")

    def reached(self, method: str = CREATE) -> int:
        """Calls of `method` that reached this replica, whatever it answered (it logs every failed call)."""
        return self.log_path.read_text().count(f"modelplane.access: {method} ")

    async def wait_serving(self) -> None:
        assert self.process is not None

        async def serving() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.log_path.read_text()
            return await health_of(self.address) == SERVING

        await eventually(serving, f"{self.name} SERVING", within=STARTUP_LIMIT)


@dataclass
class Cluster:
    network: Network
    replicas: list[Replica]
    token: str
    tmp_path: Path
    haproxy: subprocess.Popen[bytes] | None = None
    proxy_address: str = ""
    stats_socket: Path = field(default_factory=Path)


def _create_token(database_url: str) -> str:
    """An admin token made with the CLI, as an operator would: the replicas listen beyond loopback, so auth
    is on."""
    created = subprocess.run(
        [*modelplane_command(), "token", "create", "--name", "balancer-test", "--role", "admin",
         "--database-url", database_url],
        capture_output=True, text=True, env=environment(), timeout=60, check=True,
    )  # fmt: skip
    return created.stdout.strip()


@pytest.fixture(scope="session")
def netns() -> None:
    """Skips, saying why, where network namespaces cannot be made (CI runs as root, where they can)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"{reason} (CI runs this as root)")


@pytest.fixture
async def cluster(netns: None, database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two replicas SERVING in namespaces of their own; everything made is removed, on failure too."""
    token = await asyncio.to_thread(_create_token, database_url)
    with Network() as network:
        relays: list[TcpProxy] = []
        replicas: list[Replica] = []
        try:
            for name in ("r1", "r2"):
                relay = TcpProxy.for_url(database_url, listen_host=network.root_address)
                await relay.start()
                relays.append(relay)
                host = network.add_host(name)
                replicas.append(Replica(name, host, relay, database_url, tmp_path / f"{name}.log"))
            for replica in replicas:
                replica.start()
            # Blocking waits would stall the relays, which run on this loop; every wait here awaits.
            for replica in replicas:
                await replica.wait_serving()
            yield Cluster(network, replicas, token, tmp_path)
        finally:
            for replica in replicas:
                await asyncio.to_thread(replica.stop)
            for relay in relays:
                await relay.close()


def _haproxy_states(stats_socket: Path) -> dict[str, str]:
    """Each replica's state as haproxy sees it ("UP", "DOWN", ...), from "show stat" on its admin socket."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.settimeout(5)
        admin.connect(str(stats_socket))
        admin.sendall(b"show stat\n")
        reply = b""
        for _ in range(1000):
            chunk = admin.recv(65536)
            if not chunk:
                break
            reply += chunk
    rows = csv.DictReader(io.StringIO(reply.decode().removeprefix("# ")))
    return {row["svname"]: row["status"] for row in rows if row["pxname"] == "replicas"}


@contextlib.asynccontextmanager
async def behind_haproxy(cluster: Cluster, settings: dict[str, str] | None = None) -> AsyncIterator[Cluster]:
    """The cluster behind haproxy (deploy/haproxy/modelplane.cfg as shipped, with `settings` added to its
    environment) on a host of its own."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    host = cluster.network.add_host("lb")
    cluster.proxy_address = f"{host.address}:{PORT}"
    cluster.stats_socket = cluster.tmp_path / "haproxy.sock"
    env = environment(
        {
            "MODELPLANE_PROXY_BIND": cluster.proxy_address,
            "MODELPLANE_REPLICA_1": cluster.replicas[0].address,
            "MODELPLANE_REPLICA_2": cluster.replicas[1].address,
            "MODELPLANE_PROXY_STATS": str(cluster.stats_socket),
            **(settings or {}),
        }
    )
    log_path = cluster.tmp_path / "haproxy.log"
    cluster.haproxy = _start_haproxy(host, env, log_path)
    try:
        await wait_haproxy(cluster, {"replica1": "UP", "replica2": "UP"})
        yield cluster
    finally:
        cluster.haproxy.terminate()
        try:
            cluster.haproxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.haproxy.kill()
            cluster.haproxy.wait(timeout=30)


@pytest.fixture
async def proxied(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster behind haproxy speaking plaintext HTTP/2 to clients."""
    async with behind_haproxy(cluster) as proxied:
        yield proxied


def _start_haproxy(host: Host, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            host.command(["haproxy", "-db", "-f", str(HAPROXY_CONFIG)]),
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


async def wait_haproxy(cluster: Cluster, states: dict[str, str]) -> None:
    async def reached() -> bool:
        assert cluster.haproxy is not None
        assert cluster.haproxy.poll() is None, "haproxy exited"
        if not cluster.stats_socket.exists():
            return False
        seen = await asyncio.to_thread(_haproxy_states, cluster.stats_socket)
        # "UP 1/2" and the like are transitions; only the settled state counts.
        return all(seen.get(name) == state for name, state in states.items())

    await eventually(reached, f"haproxy seeing {states}")


@dataclass
class Load:
    """What a round of load got: the names acknowledged, and the calls cut short and resent.

    A call cut short is one whose replica died after it had sent the response headers (modelplane sends
    x-request-id in them at once): haproxy 2.6 then ends the client's stream without trailers, which gRPC
    reports as UNKNOWN ("Stream removed"), a code the client does not retry on its own because it cannot
    know whether the call ran. The caller resends it with the same request_id, so it runs at most once.
    """

    names: list[str] = field(default_factory=list)
    cut_short: list[str] = field(default_factory=list)


# Resends of one call cut short; each replica dies once per test at most.
RESENDS = 2
# Compare-and-set increments per counting task at most, and attempts at one before the test gives up.
CAS_STEPS = 10_000
CAS_ATTEMPTS = 50


async def resent_if_cut_short(call: Callable[[], Awaitable[T]], cut_short: list[str], label: str) -> T:
    """`call`, sent again when it was cut short (it carries its request_id, so it runs at most once); each
    resend is noted in `cut_short` under `label`. See Load."""
    for resend in range(RESENDS + 1):
        try:
            return await call()
        except Unknown:
            if resend == RESENDS:
                raise
            cut_short.append(label)
    raise AssertionError("unreachable")


async def create_models(connection: Connection, prefix: str, count: int = ROUND) -> Load:
    """Creates `count` models, CONCURRENCY at a time. A call that fails past the client's retries (and the
    resends of a call cut short) fails the test: the balancer's job is that none does."""
    load = Load()
    pending = iter(range(count))
    batch = next(_BATCHES)

    async def worker() -> None:
        for number in pending:
            model_id = f"{prefix}-{batch}-{number}"
            create = functools.partial(
                connection.registry.create_model,
                model_id=model_id,
                model=registry_pb2.Model(provider="local"),
                request_id=f"{model_id}-{uuid.uuid4().hex}",
            )
            model = await resent_if_cut_short(create, load.cut_short, model_id)
            load.names.append(model.name)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return load


async def count_by_compare_and_set(
    connection: Connection, name: str, stop: asyncio.Event, cut_short: list[str]
) -> int:
    """Adds 1 to the number in model `name`'s description until `stop` is set (CAS_STEPS at most), each
    time a read and an update under the etag read (a stale etag: read again); returns how many updates
    were acknowledged."""
    acknowledged = 0
    while not stop.is_set() and acknowledged < CAS_STEPS:
        for _attempt in range(CAS_ATTEMPTS):
            # A read cut short by the replica's death is sent again like a write (see Load): it changes
            # nothing, so sending it twice is safe.
            read = functools.partial(connection.registry.get_model, name=name)
            model = await resent_if_cut_short(read, cut_short, name)
            update = functools.partial(
                connection.registry.update_model,
                model=registry_pb2.Model(
                    name=name, description=str(int(model.description) + 1), etag=model.etag
                ),
                update_mask=["description"],
                request_id=uuid.uuid4().hex,
            )
            try:
                await resent_if_cut_short(update, cut_short, name)
            except EtagMismatch:
                continue
            acknowledged += 1
            break
        else:
            raise AssertionError(f"no update of {name} got through in {CAS_ATTEMPTS} attempts")
    return acknowledged


async def assert_all_readable(connection: Connection, names: list[str]) -> None:
    for name in names:
        model = await connection.registry.get_model(name=name)
        assert model.name == name


async def kill_one_under_load(connection: Connection, cluster: Cluster) -> Load:
    """Kills replica 1 while calls run: every call is acknowledged, every acknowledged model is readable,
    and the survivor took the calls after the kill."""
    first, second = cluster.replicas
    before = second.served()
    counter = await connection.registry.create_model(
        model_id=f"counter-{next(_BATCHES)}", model=registry_pb2.Model(provider="local", description="0")
    )
    cut_short: list[str] = []
    # The counters go on until the load (which spans the kill) is done.
    load_done = asyncio.Event()
    counting = [
        asyncio.create_task(count_by_compare_and_set(connection, counter.name, load_done, cut_short))
        for _ in range(CONCURRENCY)
    ]
    load = asyncio.create_task(create_models(connection, "during-kill", count=5 * ROUND))
    give_up = time.monotonic() + SETTLE
    while first.served() + second.served() <= before + ROUND:
        assert not load.done(), "the load ended before the kill"
        assert time.monotonic() < give_up, "the load never got under way"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(first.kill)
    try:
        done = await load
        load_done.set()
        counted = await asyncio.gather(*counting)
    except ModelplaneError as error:
        raise AssertionError(f"a call failed past the client's retries: {error}") from error
    # Compare-and-set across replicas and a death: every acknowledged update applied once, none lost.
    assert (await connection.registry.get_model(name=counter.name)).description == str(sum(counted))
    assert all(counted), counted
    done.cut_short.extend(cut_short)
    assert len(done.names) == 5 * ROUND
    assert len(set(done.names)) == 5 * ROUND
    await assert_all_readable(connection, done.names)
    assert second.served() > before
    return done


async def cut_postgres_and_check(
    connection: Connection, cluster: Cluster, stopped_sending: Callable[[], Awaitable[None]]
) -> None:
    """Cuts replica 1 from Postgres: its health turns NOT_SERVING, and once the balancer has seen it
    (`stopped_sending` returns), no call reaches it while the other replica answers them all; Postgres
    back, it turns SERVING again."""
    first, second = cluster.replicas
    await first.relay.cut()

    async def not_serving() -> bool:
        return await health_of(first.address) == NOT_SERVING

    await eventually(not_serving, "replica 1 NOT_SERVING without Postgres")
    await stopped_sending()
    await access_logs_written(cluster)
    before_first, before_second = first.reached(), second.served()
    done = await create_models(connection, "while-cut")
    await access_logs_written(cluster)
    # reached() counts failed calls too: a call sent to the cut replica would show, whatever it answered.
    assert first.reached() == before_first
    assert second.served() == before_second + ROUND
    await assert_all_readable(connection, done.names)
    await first.relay.restore()
    await first.wait_serving()


async def access_logs_written(cluster: Cluster) -> None:
    """Waits until no replica's log has grown for 0.1 s (5 s at most): a server writes the access-log lines
    of a turn of its event loop together, after the turn, so a call's line can follow its response."""
    deadline = time.monotonic() + 5.0
    sizes: list[int] | None = None
    while time.monotonic() < deadline:
        now = [replica.log_path.stat().st_size for replica in cluster.replicas]
        if now == sizes:
            return
        sizes = now
        await asyncio.sleep(0.1)


async def spread_over_both(connection: Connection, cluster: Cluster) -> None:
    first, second = cluster.replicas
    done = await create_models(connection, "spread")
    await access_logs_written(cluster)
    assert first.served() > 0, (first.served(), second.served())
    assert second.served() > 0, (first.served(), second.served())
    assert first.served() + second.served() == ROUND
    await assert_all_readable(connection, done.names)


@slow
async def test_client_side_round_robin_spreads_calls_and_survives_a_replica(cluster: Cluster) -> None:
    first, second = cluster.replicas
    target = f"ipv4:{first.address},{second.address}"
    # gRPC's client-side balancing: a subchannel per address, calls spread over those whose health is SERVING.
    async with connect(target, token=cluster.token, balance=True) as connection:
        # One channel, both replicas: round_robin keeps a connection to each and alternates calls.
        await spread_over_both(connection, cluster)

        done = await kill_one_under_load(connection, cluster)
        # Straight to the replica, its death ends the connection: UNAVAILABLE, which the client retries.
        assert done.cut_short == []

        first.start()
        await first.wait_serving()
        before = first.served()

        async def first_takes_calls() -> bool:
            await create_models(connection, "after-restart", count=CONCURRENCY)
            return first.served() > before

        # The channel reconnects to the restarted replica on its own backoff; calls reach it once it has.
        await eventually(first_takes_calls, "the restarted replica taking calls", within=STARTUP_LIMIT)

        async def health_watch_saw_it() -> None:
            # gRPC's client health check watches Health/Watch on each subchannel; once it has heard
            # NOT_SERVING, round_robin leaves that subchannel out, and a batch of calls all go elsewhere.
            async def left_out() -> bool:
                before = first.reached()
                await create_models(connection, "probe-cut", count=2 * CONCURRENCY)
                return first.reached() == before

            await eventually(left_out, "round_robin leaving out the NOT_SERVING replica")

        await cut_postgres_and_check(connection, cluster, health_watch_saw_it)


@slow
async def test_haproxy_balances_calls_takes_out_dead_and_not_serving_replicas(proxied: Cluster) -> None:
    cluster = proxied
    first, _ = cluster.replicas
    async with connect(cluster.proxy_address, token=cluster.token) as connection:
        # One HTTP/2 connection to haproxy; it balances each call (stream), not the connection.
        await spread_over_both(connection, cluster)

        await kill_one_under_load(connection, cluster)
        await wait_haproxy(cluster, {"replica1": "DOWN", "replica2": "UP"})

        first.start()
        await first.wait_serving()
        await wait_haproxy(cluster, {"replica1": "UP", "replica2": "UP"})
        await access_logs_written(cluster)
        before = first.served()
        await create_models(connection, "after-restart")
        await access_logs_written(cluster)
        assert first.served() > before

        async def haproxy_took_it_out() -> None:
            await wait_haproxy(cluster, {"replica1": "DOWN", "replica2": "UP"})

        await cut_postgres_and_check(connection, cluster, haproxy_took_it_out)
        await wait_haproxy(cluster, {"replica1": "UP", "replica2": "UP"})


@slow
async def test_haproxy_terminates_tls_for_clients(cluster: Cluster) -> None:
    # The proxy's own certificate (haproxy takes the chain and the key in one file); the client trusts it as
    # its CA and checks the name in it.
    cert, key = cluster.tmp_path / "proxy.crt", cluster.tmp_path / "proxy.key"
    make_self_signed(cert, key, common_name=PROXY_NAME, subject_alt_name=f"DNS:{PROXY_NAME}")
    bundle = cluster.tmp_path / "proxy.pem"
    bundle.write_bytes(cert.read_bytes() + key.read_bytes())
    async with behind_haproxy(cluster, {"MODELPLANE_PROXY_CERT": str(bundle)}) as proxied:
        tls = TlsOptions.from_files(root_certificates=cert, server_name=PROXY_NAME)
        async with connect(proxied.proxy_address, token=proxied.token, tls=tls) as connection:
            # TLS to haproxy, one HTTP/2 connection; it still balances each call over both replicas.
            await spread_over_both(connection, proxied)
        # Plaintext HTTP/2 to a TLS listener is no gRPC call: the client cannot get through.
        async with connect(proxied.proxy_address, token=proxied.token, retry=NO_RETRY) as plaintext:
            with pytest.raises(ModelplaneError):
                await plaintext.registry.get_model(name="models/anything")


def test_no_address_outside_the_namespaces(netns: None) -> None:
    """Closing the network leaves no address, link or namespace of it behind."""
    before = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    with Network() as network:
        network.add_host("x1")
        during = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
        assert network.root_address in during
    after = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert after == before
    assert f"mp{os.getpid() % 100000}" not in namespaces


def test_the_readme_names_the_tested_service_config_and_proxy_settings() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Replicas behind a balancer") :]
    quoted = re.search(r"`(\{\"loadBalancingConfig\".*?\})`", section)
    assert quoted is not None
    assert json.loads(quoted.group(1)) == json.loads(BALANCING_SERVICE_CONFIG)
    settings = set(re.findall(r"\$\{(MODELPLANE_[A-Z_0-9]+)\}", HAPROXY_CONFIG.read_text()))
    assert settings == {
        "MODELPLANE_PROXY_BIND",
        "MODELPLANE_REPLICA_1",
        "MODELPLANE_REPLICA_2",
        "MODELPLANE_PROXY_STATS",
        "MODELPLANE_PROXY_CERT",
    }
    for name in settings:
        assert f"`{name}`" in section, name


def test_the_proxy_health_check_is_one_grpc_health_call() -> None:
    """The tcp-check's bytes are what the config's comment says: the HTTP/2 preface, an empty SETTINGS
    frame, the HEADERS of a POST to Health/Check, and a DATA frame ending the stream with an empty
    HealthCheckRequest; the reply it waits for is a HealthCheckResponse saying SERVING."""
    config = HAPROXY_CONFIG.read_text()
    sent = re.search(r"^\s*tcp-check send-binary ([0-9a-f]+)$", config, re.MULTILINE)
    expected = re.search(r"^\s*tcp-check expect binary ([0-9a-f]+)$", config, re.MULTILINE)
    assert sent is not None
    assert expected is not None
    data = bytes.fromhex(sent.group(1))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert data.startswith(preface)
    frames: list[tuple[int, int, int, bytes]] = []
    rest = data[len(preface) :]
    while rest:
        length = int.from_bytes(rest[:3], "big")
        frames.append((rest[3], rest[4], int.from_bytes(rest[5:9], "big"), rest[9 : 9 + length]))
        rest = rest[9 + length :]
    settings, headers, body = frames
    assert settings == (0x4, 0, 0, b"")
    kind, flags, stream, block = headers
    assert (kind, flags, stream) == (0x1, 0x4, 1)  # HEADERS, END_HEADERS, stream 1
    # HPACK: :method POST and :scheme http from the static table, then literals (no Huffman coding).
    assert block.startswith(b"\x83\x86")
    for literal in (b"/grpc.health.v1.Health/Check", b"application/grpc", b"te", b"trailers"):
        assert bytes([len(literal)]) + literal in block
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()
    assert body == (0x0, 0x1, 1, b"\x00" + len(request).to_bytes(4, "big") + request)
    serving = health_pb2.HealthCheckResponse(status=SERVING).SerializeToString()
    assert bytes.fromhex(expected.group(1)) == b"\x00" + len(serving).to_bytes(4, "big") + serving
