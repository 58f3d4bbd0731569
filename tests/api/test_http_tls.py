"""The HTTP address takes the gRPC address's TLS: HTTPS from the same files, and with a client CA, mutual
TLS (a client without a certificate is refused in the handshake)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import httpx
import pytest

from modelplane.server.config import TlsConfig
from tests.support import StartServer
from tests.support.certificates import make_self_signed

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")


async def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    await asyncio.to_thread(
        make_self_signed, cert, key, common_name="localhost", subject_alt_name="IP:127.0.0.1"
    )
    return cert, key


async def test_https_from_the_servers_certificate(start_server: StartServer, tmp_path: Path) -> None:
    cert, key = await _certificate(tmp_path, "server")
    server = await start_server(tls=TlsConfig(cert_file=cert, key_file=key), http_address="127.0.0.1:0")
    assert server.http is not None
    trusting = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trusting, timeout=20) as client:
        health = await client.get(f"https://{server.http.target}/healthz")
    assert health.json() == {"status": "SERVING"}
    async with httpx.AsyncClient(timeout=20) as plaintext:
        with pytest.raises(httpx.HTTPError):
            await plaintext.get(f"http://{server.http.target}/healthz")


async def test_mutual_tls_needs_a_client_certificate(start_server: StartServer, tmp_path: Path) -> None:
    cert, key = await _certificate(tmp_path, "server")
    client_cert, client_key = await _certificate(tmp_path, "client")
    tls = TlsConfig(cert_file=cert, key_file=key, client_ca_file=client_cert)
    server = await start_server(tls=tls, http_address="127.0.0.1:0")
    assert server.http is not None
    url = f"https://{server.http.target}/v1/models"
    with_certificate = ssl.create_default_context(cafile=str(cert))
    with_certificate.load_cert_chain(str(client_cert), str(client_key))
    async with httpx.AsyncClient(verify=with_certificate, timeout=20) as client:
        assert (await client.get(url)).json() == {"models": [], "nextPageToken": ""}
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=str(cert)), timeout=20
    ) as anonymous:
        with pytest.raises(httpx.HTTPError):
            await anonymous.get(url)
