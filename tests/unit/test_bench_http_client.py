"""bench/http_client.py against a real HTTP/1.1 server (the standard library's, in a thread): answers are
read whole, kept connections are reused, and a connection the server closed is replaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.http_client import HttpError, LeanHttp


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Connections accepted (a handler serves one connection).
    connections = 0

    def setup(self) -> None:
        super().setup()
        _Handler.connections += 1

    def _answer(self, status: int, body: bytes, *, close: bool = False, chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body)

    def do_GET(self) -> None:
        if self.path == "/close":
            self._answer(200, b'{"closed": true}', close=True)
        elif self.path == "/hang-up":
            # Answers, then drops the connection the client keeps, as a server's idle timeout does.
            self._answer(200, b"{}")
            self.close_connection = True
        elif self.path == "/chunked":
            self._answer(200, b"{}", chunked=True)
        elif self.path == "/missing":
            self._answer(404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}')
        else:
            self._answer(200, b'{"path": "' + self.path.encode() + b'"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(200, body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    _Handler.connections = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_answers_come_back_whole_over_one_kept_connection(base_url: str) -> None:
    http = LeanHttp(base_url)
    try:
        first = await http.send(http.get("/a?x=1"))
        second = await http.send(http.post_json("/echo", b'{"name": "m"}'))
        missing = await http.send(http.get("/missing"))
    finally:
        await http.aclose()
    assert first == (200, b'{"path": "/a?x=1"}')
    assert second == (200, b'{"name": "m"}')
    assert missing == (404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}')
    assert _Handler.connections == 1


async def test_a_connection_the_server_closes_is_not_reused(base_url: str) -> None:
    http = LeanHttp(base_url)
    try:
        assert await http.send(http.get("/close")) == (200, b'{"closed": true}')
        assert await http.send(http.get("/b")) == (200, b'{"path": "/b"}')
    finally:
        await http.aclose()
    assert _Handler.connections == 2


async def test_a_kept_connection_the_server_dropped_is_replaced_once(base_url: str) -> None:
    http = LeanHttp(base_url)
    try:
        assert await http.send(http.get("/hang-up")) == (200, b"{}")
        assert await http.send(http.get("/c")) == (200, b'{"path": "/c"}')
    finally:
        await http.aclose()
    assert _Handler.connections == 2


async def test_an_answer_it_cannot_read_is_an_error(base_url: str) -> None:
    http = LeanHttp(base_url)
    try:
        with pytest.raises(HttpError, match="chunked"):
            await http.send(http.get("/chunked"))
    finally:
        await http.aclose()


def test_only_plain_http_urls_with_a_port() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        LeanHttp("https://127.0.0.1:443")
    with pytest.raises(ValueError, match="HOST:PORT"):
        LeanHttp("http://127.0.0.1")
