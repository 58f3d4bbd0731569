"""The web console's files at `/` of the HTTP address: served with their content types, index.html for the
console's own pages, nothing outside its directory whatever the path, and the API untouched beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool

from modelplane.server.app import MODELPLANE_SERVICES, ModelplaneServer
from modelplane.server.http.app import build_app
from modelplane.server.http.console import STATIC_DIR, ConsoleFiles
from tests.support import StartServer

INDEX = "<!doctype html><title>console</title>"


@pytest.fixture
def static(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "app.js").write_text("console.log('hi')")
    (root / "assets" / "app.css").write_text("body {}")
    # Beside the directory, never to be served.
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
async def client(start_server: StartServer, static: Path) -> AsyncIterator[httpx.AsyncClient]:
    server: ModelplaneServer = await start_server()
    services = [descriptor_pool.Default().FindServiceByName(name) for name in MODELPLANE_SERVICES]
    async with grpc.aio.insecure_channel(server.target) as channel:
        app = build_app(channel, services, max_body_bytes=1 << 20, console=ConsoleFiles(static))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
            yield http


async def test_files_come_with_their_content_types(client: httpx.AsyncClient) -> None:
    index = await client.get("/")
    assert index.status_code == 200
    assert index.text == INDEX
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    script = await client.get("/assets/app.js")
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert (await client.get("/assets/app.css")).headers["content-type"].startswith("text/css")
    assert script.headers["x-content-type-options"] == "nosniff"


async def test_the_consoles_own_pages_get_index_html(client: httpx.AsyncClient) -> None:
    page = await client.get("/models/chat-large/versions")
    assert page.status_code == 200
    assert page.text == INDEX
    # A missing file is a 404, not the page: a broken asset link shows as what it is.
    assert (await client.get("/assets/missing.js")).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/link",
        "/%00",
    ],
)
async def test_nothing_outside_the_directory_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert "secret" not in response.text
    assert response.status_code in (200, 404)


async def test_the_api_and_health_are_beside_the_console(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models")).json() == {"models": [], "nextPageToken": ""}
    assert (await client.get("/healthz")).json() == {"status": "SERVING"}
    assert (await client.post("/")).status_code == 405


def test_the_package_directory_is_where_the_console_ships() -> None:
    assert STATIC_DIR.parts[-3:] == ("server", "console", "static")
    assert STATIC_DIR.parent.parent.name == "server"
