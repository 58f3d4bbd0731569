"""OpenAIChatProvider against a real HTTP server on loopback that checks requests and answers like OpenAI."""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from modelplane.inference import (
    ChatMessage,
    ConfiguredModel,
    GenerationRequest,
    LLMClient,
    OpenAIChatProvider,
)
from modelplane.inference.openai_provider import parse_chat_completion
from modelplane.inference.providers import ProviderError
from modelplane.v1 import registry_pb2

API_KEY = "sk-test-123"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    # Hold the answer until the test ends, to make the client time out.
    hang: bool = False


@dataclass
class FakeOpenAI:
    """What the server saw and what it will answer next (one Reply per request, in order)."""

    base_url: str
    requests: list[RecordedRequest] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    release: threading.Event = field(default_factory=threading.Event)

    def reply_json(self, status: int, body: object) -> None:
        self.replies.append(Reply(status, json.dumps(body).encode()))


def completion_body(
    content: str | None = "Once upon a time.",
    *,
    usage: dict[str, Any] | None = None,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage
        if usage is not None
        else {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
        },
    }


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    state = FakeOpenAI(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw
            state.requests.append(
                RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            reply = (
                state.replies.popleft() if state.replies else Reply(500, b'{"error": "no reply scripted"}')
            )
            if reply.hang:
                state.release.wait(30)
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
async def provider(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIChatProvider]:
    async with OpenAIChatProvider(fake_openai.base_url, api_key=API_KEY, timeout=5) as p:
        yield p


REQUEST = GenerationRequest(
    model="gpt-4o",
    messages=(ChatMessage("system", "You tell short stories."), ChatMessage("user", "A fox, please.")),
    max_output_tokens=256,
    temperature=0.7,
)


async def test_request_is_openai_shaped_and_usage_is_parsed(
    fake_openai: FakeOpenAI, provider: OpenAIChatProvider
) -> None:
    fake_openai.reply_json(200, completion_body())
    generation = await provider.generate(REQUEST)

    [seen] = fake_openai.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You tell short stories."},
            {"role": "user", "content": "A fox, please."},
        ],
        "max_completion_tokens": 256,
        "temperature": 0.7,
    }
    assert generation.text == "Once upon a time."
    assert generation.input_tokens == 1200
    assert generation.output_tokens == 300
    assert generation.cached_input_tokens == 1024
    assert generation.reasoning_tokens == 128
    assert generation.finish_reason == "stop"


async def test_optional_fields_are_left_out_and_older_servers_get_max_tokens(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_json(200, completion_body(usage={"prompt_tokens": 5, "completion_tokens": 2}))
    fake_openai.reply_json(200, completion_body())
    async with OpenAIChatProvider(fake_openai.base_url + "/", max_tokens_field="max_tokens") as provider:
        plain = await provider.generate(
            GenerationRequest(model="llama3", messages=(ChatMessage("user", "hi"),))
        )
        await provider.generate(REQUEST)
    first, second = fake_openai.requests
    assert first.path == "/v1/chat/completions"
    assert "authorization" not in first.headers
    assert first.body == {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    assert second.body["max_tokens"] == 256
    assert "max_completion_tokens" not in second.body
    # Usage without the detail blocks (most compatible servers) means no cached or reasoning tokens.
    assert (plain.input_tokens, plain.output_tokens, plain.cached_input_tokens, plain.reasoning_tokens) == (
        5,
        2,
        0,
        0,
    )


async def test_http_error_carries_status_and_the_providers_message(
    fake_openai: FakeOpenAI, provider: OpenAIChatProvider
) -> None:
    fake_openai.reply_json(
        429,
        {
            "error": {
                "message": "Rate limit reached for gpt-4o",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
    )
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.status == 429
    assert caught.value.message == "Rate limit reached for gpt-4o"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.retryable
    assert caught.value.provider == "openai"
    assert "HTTP 429" in str(caught.value)


async def test_client_errors_are_not_retryable_and_plain_text_bodies_are_kept(
    fake_openai: FakeOpenAI, provider: OpenAIChatProvider
) -> None:
    fake_openai.reply_json(
        401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
    )
    fake_openai.replies.append(Reply(502, b"upstream connect error"))
    with pytest.raises(ProviderError) as unauthorized:
        await provider.generate(REQUEST)
    with pytest.raises(ProviderError) as bad_gateway:
        await provider.generate(REQUEST)
    assert (unauthorized.value.status, unauthorized.value.retryable) == (401, False)
    assert unauthorized.value.code == "invalid_request_error"
    assert (bad_gateway.value.status, bad_gateway.value.message) == (502, "upstream connect error")
    assert bad_gateway.value.retryable


async def test_no_answer_in_time_is_a_retryable_timeout(fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.append(Reply(200, b"", hang=True))
    async with OpenAIChatProvider(fake_openai.base_url, timeout=0.2) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.generate(REQUEST)
    assert caught.value.code == "timeout"
    assert caught.value.retryable
    assert caught.value.status is None
    assert len(fake_openai.requests) == 1


async def test_nothing_listening_is_a_transport_error() -> None:
    # Bind then close a port so that nothing listens on it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenAIChatProvider(f"http://127.0.0.1:{port}/v1", timeout=5) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.generate(REQUEST)
    assert caught.value.code == "transport"
    assert caught.value.retryable


async def test_malformed_answers_are_provider_errors(
    fake_openai: FakeOpenAI, provider: OpenAIChatProvider
) -> None:
    fake_openai.replies.append(Reply(200, b"<html>not json</html>"))
    fake_openai.reply_json(200, {"choices": []})
    fake_openai.reply_json(200, {k: v for k, v in completion_body().items() if k != "usage"})
    fake_openai.reply_json(200, completion_body(usage={"prompt_tokens": 1, "completion_tokens": "many"}))
    messages = []
    for _ in range(4):
        with pytest.raises(ProviderError) as caught:
            await provider.generate(REQUEST)
        messages.append(caught.value.message)
    assert messages == [
        "malformed response: not JSON",
        "malformed response: no choices",
        "malformed response: no usage",
        "malformed response: usage.completion_tokens is not a token count",
    ]


def test_parse_refuses_cached_tokens_beyond_the_prompt() -> None:
    body = completion_body(
        usage={"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2}}
    )
    with pytest.raises(ProviderError, match="cached_input_tokens"):
        parse_chat_completion(body)


def test_null_content_is_empty_text() -> None:
    # A tool call or a refusal comes back with content null.
    assert parse_chat_completion(completion_body(content=None, finish_reason="tool_calls")).text == ""


async def test_a_shared_httpx_client_is_left_open(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_json(200, completion_body())
    async with httpx.AsyncClient() as shared:
        async with OpenAIChatProvider(fake_openai.base_url, client=shared) as provider:
            await provider.generate(REQUEST)
        assert not shared.is_closed


async def test_llm_client_over_the_openai_provider_prices_cached_and_reasoning_tokens(
    fake_openai: FakeOpenAI, provider: OpenAIChatProvider
) -> None:
    fake_openai.reply_json(200, completion_body())
    pricing = registry_pb2.TokenPricing(
        currency_code="USD",
        input_micros_per_million=2_500_000,
        output_micros_per_million=10_000_000,
        cached_input_micros_per_million=1_250_000,
    )
    async with LLMClient(provider, model=ConfiguredModel("gpt-4o", pricing=pricing)) as llm:
        result = await llm.complete("A fox, please.")
    assert fake_openai.requests[0].body["model"] == "gpt-4o"
    # 176 uncached at 2.5/M = 440, 1024 cached at 1.25/M = 1280, 300 output (reasoning at the output price)
    # at 10/M = 3000.
    assert result.cost is not None
    assert (result.cost.currency_code, result.cost.micros) == ("USD", 4_720)
    assert result.usage.reasoning_tokens == 128
