"""Hosts of their own on one machine: network namespaces joined by a bridge, for replicas behind a balancer.

A hub namespace holds the bridge; each host is a namespace joined to it by a veth pair, and the root
namespace (where the test and its Postgres relays run) by one more pair, whose root end takes the first
address. The /24 is one that no address or route of this machine uses, so every packet to it stays on
links this network made. Closing deletes every namespace and link it made, whatever happened before.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# Each `ip` command is quick; the bound only turns a wedged one into a failure.
IP_TIMEOUT = 10.0
# The third octet of 10.231.X.0/24 is taken from here, the first one this machine does not use.
THIRD_OCTETS = range(7, 250)
# Held while a network picks its /24 and puts its first address on a link, so that no other picks it too.
CLAIM_LOCK = Path("/run/modelplane-test-netns.lock")
_NETWORKS = itertools.count(1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=check)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, `ip netns add` refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need the `ip` command (iproute2)"
    probe = f"mpprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _subnet_in_use(prefix: str) -> bool:
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route", "show", "table", "all").stdout
    return f" {prefix}" in used or f"\n{prefix}" in used or used.startswith(prefix)


def free_subnet() -> ipaddress.IPv4Network:
    """The first 10.231.X.0/24 that no address or route of this machine touches."""
    for octet in THIRD_OCTETS:
        if not _subnet_in_use(f"10.231.{octet}."):
            return ipaddress.IPv4Network(f"10.231.{octet}.0/24")
    raise RuntimeError("every 10.231.X.0/24 is in use on this machine")


@dataclass(frozen=True)
class Host:
    """A namespace on the bridge, with its address."""

    namespace: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Network:
    """A bridge in a namespace of its own, the root namespace on it at `root_address`, and hosts on it."""

    def __init__(self) -> None:
        # Names unique to this network: the process, then its count of networks made.
        self.tag = f"{os.getpid() % 100000}n{next(_NETWORKS)}"
        self.subnet = ipaddress.IPv4Network("0.0.0.0/32")
        self.root_address = ""
        self._addresses: Iterator[ipaddress.IPv4Address] = iter(())
        self._hub = f"mp{self.tag}hub"
        self._root_link = f"mp{self.tag}r"
        self._namespaces: list[str] = []
        self.hosts: list[Host] = []

    def open(self) -> None:
        # Two test runs at once (two checkouts) would otherwise both find the same /24 free.
        with CLAIM_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = free_subnet()
            self._addresses = self.subnet.hosts()
            self.root_address = str(next(self._addresses))
            self._open()

    def _open(self) -> None:
        hub = self._hub
        _ip("netns", "add", hub)
        self._namespaces.append(hub)
        _ip("-n", hub, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        _ip("link", "add", self._root_link, "type", "veth", "peer", "name", "root", "netns", hub)
        _ip("addr", "add", f"{self.root_address}/{self.subnet.prefixlen}", "dev", self._root_link)
        _ip("link", "set", self._root_link, "up")
        _ip("-n", hub, "link", "set", "root", "master", "br0")
        _ip("-n", hub, "link", "set", "root", "up")

    def add_host(self, name: str) -> Host:
        """A new namespace on the bridge with the next free address; `name` is short (a few letters)."""
        namespace = f"mp{self.tag}{name}"
        address = str(next(self._addresses))
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip(
            "link",
            "add",
            "eth0",
            "netns",
            namespace,
            "type",
            "veth",
            "peer",
            "name",
            name,
            "netns",
            self._hub,
        )
        _ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", self._hub, "link", "set", name, "master", "br0")
        _ip("-n", self._hub, "link", "set", name, "up")
        host = Host(namespace, address)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Deletes every namespace (which takes their links along) and the root end of the bridge's link."""
        for namespace in reversed(self._namespaces):
            _ip("netns", "del", namespace, check=False)
        self._namespaces.clear()
        _ip("link", "del", self._root_link, check=False)

    def __enter__(self) -> Network:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
