"""The `modelplane` command in an install without the `server` or the `embedded` extra: the command runs,
and what needs a missing extra says, in one line, which one to install.

Each run is a subprocess whose sitecustomize (on PYTHONPATH) makes the named packages unimportable, as
they are in a clients-only install.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import pytest

# What the `server` and `embedded` extras bring and the base install lacks.
SERVER_EXTRA = (
    "asyncpg",
    "grpc_health",
    "grpc_reflection",
    "prometheus_client",
    "ahocorasick",
    "re2",
    "jsonschema",
)
EMBEDDED_EXTRA = ("pgserver",)

BLOCKER = """
import importlib.abc
import os
import sys

BLOCKED = set(filter(None, os.environ.get("BLOCKED_MODULES", "").split(",")))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""


class RunWithout(Protocol):
    def __call__(self, blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def without(tmp_path: Path) -> RunWithout:
    """Runs `modelplane ARGS` with the given top-level packages unimportable."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)

    def run(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MODELPLANE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        env["BLOCKED_MODULES"] = ",".join(blocked)
        script = Path(sys.executable).with_name("modelplane")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "modelplane.server.cli"]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False
        )

    return run


def _free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_the_blocker_blocks(without: RunWithout, tmp_path: Path) -> None:
    # The check that the other tests stand on: a blocked package does not import in the subprocess.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "BLOCKED_MODULES": "asyncpg"}
    result = subprocess.run(
        [sys.executable, "-c", "import asyncpg"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'asyncpg'" in result.stderr


def test_help_needs_only_the_base_install(without: RunWithout) -> None:
    for args in (["--help"], ["serve", "--help"], ["token", "create", "--help"]):
        result = without(SERVER_EXTRA + EMBEDDED_EXTRA, *args)
        assert result.returncode == 0, result.stderr
        assert "usage: modelplane" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--database-url", "postgresql://postgres@127.0.0.1:5432/x", "--no-auth"],
        ["migrate", "--database-url", "postgresql://postgres@127.0.0.1:5432/x"],
        ["token", "create", "--name", "x", "--role", "reader", "--database-url", "postgresql://h/x"],
        ["token", "list", "--database-url", "postgresql://postgres@127.0.0.1:5432/x"],
        ["token", "revoke", "x", "--database-url", "postgresql://postgres@127.0.0.1:5432/x"],
    ],
    ids=["serve", "migrate", "token-create", "token-list", "token-revoke"],
)
@pytest.mark.parametrize("blocked", [("asyncpg",), SERVER_EXTRA], ids=["asyncpg", "server-extra"])
def test_a_clients_only_install_names_the_server_extra(
    without: RunWithout, args: list[str], blocked: tuple[str, ...]
) -> None:
    if args[0] == "serve":
        args = [*args, "--address", _free_address()]
    result = without(blocked, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("modelplane: error: ")
    assert "pip install 'modelplane[server]'" in result.stderr


@pytest.mark.parametrize("command", [["serve", "--no-auth"], ["token", "list"]], ids=["serve", "token-list"])
def test_the_embedded_postgres_without_its_extra_names_it(
    without: RunWithout, tmp_path: Path, command: list[str]
) -> None:
    args = [*command, "--data-dir", str(tmp_path / "data")]
    if command[0] == "serve":
        args += ["--address", _free_address()]
    result = without(EMBEDDED_EXTRA, *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'modelplane[embedded]'" in result.stderr
    assert "--database-url" in result.stderr
