"""deploy/kubernetes/tls: the health check the pods run over TLS, run here against a real TLS server."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from modelplane.server.app import build_server
from modelplane.server.config import ServerConfig, TlsConfig
from modelplane.server.health import LIVENESS
from tests.support import StartServer
from tests.support.certificates import make_self_signed

ROOT = Path(__file__).resolve().parents[2]
PATCH = ROOT / "deploy" / "kubernetes" / "tls" / "patch.yaml"
SERVER_NAME = "modelplane.default.svc"

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl tool to make a certificate"
)


def probe_commands() -> dict[str, list[str]]:
    """The readiness and liveness commands as the patch puts them in the container."""
    commands = {}
    for op in yaml.safe_load(PATCH.read_text()):
        if op["path"].endswith(("/readinessProbe", "/livenessProbe")):
            commands[op["path"].rsplit("/", 1)[1]] = op["value"]["exec"]["command"]
    return commands


def make_certificate(folder: Path) -> None:
    """The files the modelplane-tls Secret holds: a self-signed certificate for SERVER_NAME is its own CA."""
    make_self_signed(
        folder / "tls.crt", folder / "tls.key", common_name=SERVER_NAME, subject_alt_name=f"DNS:{SERVER_NAME}"
    )
    (folder / "ca.crt").write_bytes((folder / "tls.crt").read_bytes())


async def run_probe(command: list[str], folder: Path, target: str) -> int:
    """Runs a probe command with the Secret's mount and the server's port as this test has them."""
    program, flag, script, *rest = command
    assert (program, flag) == ("python", "-c")
    script = script.replace("/etc/modelplane/tls/", f"{folder}/").replace("127.0.0.1:50051", target)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *rest,
        env={**os.environ, "HEALTH_PROBE_TLS_NAME": SERVER_NAME},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


async def test_the_probes_pass_over_tls_on_a_serving_server(
    start_server: StartServer, tmp_path: Path
) -> None:
    make_certificate(tmp_path)
    server = await start_server(tls=TlsConfig(cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key"))
    commands = probe_commands()
    assert commands["livenessProbe"][3:] == [LIVENESS]
    assert await run_probe(commands["readinessProbe"], tmp_path, server.target) == 0
    assert await run_probe(commands["livenessProbe"], tmp_path, server.target) == 0


async def test_readiness_fails_and_liveness_passes_while_the_database_is_unreachable(tmp_path: Path) -> None:
    make_certificate(tmp_path)
    server = build_server(
        ServerConfig(
            address="127.0.0.1:0",
            database_url="postgresql://postgres@127.0.0.1:1/modelplane",
            tls=TlsConfig(cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key"),
            health_probe_interval=0.1,
        )
    )
    await server.start()
    try:
        commands = probe_commands()
        assert await run_probe(commands["readinessProbe"], tmp_path, server.target) == 1
        assert await run_probe(commands["livenessProbe"], tmp_path, server.target) == 0
    finally:
        await server.stop(grace=0)


async def test_a_certificate_for_another_name_fails_the_probe(
    start_server: StartServer, tmp_path: Path
) -> None:
    make_certificate(tmp_path)
    server = await start_server(tls=TlsConfig(cert_file=tmp_path / "tls.crt", key_file=tmp_path / "tls.key"))
    other = tmp_path / "other"
    other.mkdir()
    make_certificate(other)  # a different self-signed certificate: not the one the server shows
    assert await run_probe(probe_commands()["readinessProbe"], other, server.target) == 1
