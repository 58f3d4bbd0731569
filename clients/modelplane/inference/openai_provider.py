"""A Provider for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, LiteLLM, ...).

It needs httpx, from the optional extra `http` (`pip install 'modelplane[http]'`); httpx is imported
when a provider is built, so importing this module never requires it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from modelplane.inference.providers import Generation, GenerationRequest, ProviderError

if TYPE_CHECKING:
    import httpx

PROVIDER_NAME = "openai"
# A longer error body is cut: it goes into exception messages and event logs.
_MAX_ERROR_TEXT = 500


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the dev install always has httpx
        raise ImportError(
            "OpenAIChatProvider needs httpx: install modelplane with the 'http' extra "
            "(pip install 'modelplane[http]')"
        ) from exc
    return httpx


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _error_details(response: httpx.Response) -> tuple[str, str]:
    """The provider's error message and code from an OpenAI-style error body, else the raw text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            code = error.get("code") or error.get("type") or ""
            if isinstance(message, str) and message:
                return message[:_MAX_ERROR_TEXT], str(code)
        elif isinstance(error, str) and error:
            # Some compatible servers (Ollama, for one) send {"error": "text"}.
            return error[:_MAX_ERROR_TEXT], ""
    text = response.text.strip()
    return (text[:_MAX_ERROR_TEXT] or response.reason_phrase or "request failed"), ""


def _count(value: object, path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError(f"malformed response: {path} is not a token count", provider=PROVIDER_NAME)
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_chat_completion(body: object) -> Generation:
    """A Generation from an OpenAI chat-completions response body; ProviderError when it is malformed.

    `usage.prompt_tokens` already includes `usage.prompt_tokens_details.cached_tokens` and
    `usage.completion_tokens` already includes `usage.completion_tokens_details.reasoning_tokens`,
    which is how Generation counts them too.
    """
    if not isinstance(body, Mapping):
        raise ProviderError("malformed response: not a JSON object", provider=PROVIDER_NAME)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ProviderError("malformed response: no choices", provider=PROVIDER_NAME)
    choice = choices[0]
    content = _mapping(choice.get("message")).get("content")
    if content is not None and not isinstance(content, str):
        raise ProviderError("malformed response: message content is not text", provider=PROVIDER_NAME)
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        # Without usage the call could not be priced or accounted for; better to say so than guess zero.
        raise ProviderError("malformed response: no usage", provider=PROVIDER_NAME)
    input_tokens = _count(usage.get("prompt_tokens"), "usage.prompt_tokens")
    output_tokens = _count(usage.get("completion_tokens"), "usage.completion_tokens")
    cached = _count(
        _mapping(usage.get("prompt_tokens_details")).get("cached_tokens"),
        "usage.prompt_tokens_details.cached_tokens",
    )
    reasoning = _count(
        _mapping(usage.get("completion_tokens_details")).get("reasoning_tokens"),
        "usage.completion_tokens_details.reasoning_tokens",
    )
    finish_reason = choice.get("finish_reason")
    try:
        return Generation(
            text=content or "",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            reasoning_tokens=reasoning,
            finish_reason=finish_reason if isinstance(finish_reason, str) else "",
        )
    except ValueError as exc:
        raise ProviderError(f"malformed response: {exc}", provider=PROVIDER_NAME) from exc


class OpenAIChatProvider:
    """POSTs `{base_url}/chat/completions` and turns the answer into a Generation.

    `base_url` includes the API version, e.g. "https://api.openai.com/v1". `api_key`, when given, is sent
    as a bearer token. `timeout` (seconds) bounds connecting, sending and reading. A `client` passed in is
    used as it is and left open; without one the provider owns its client and `aclose()` closes it.
    `max_tokens_field` is the body field for GenerationRequest.max_output_tokens: OpenAI's current
    "max_completion_tokens" by default, "max_tokens" for servers that only know the older name.
    """

    name = PROVIDER_NAME

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        client: httpx.AsyncClient | None = None,
        max_tokens_field: str = "max_completion_tokens",
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url must not be empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._httpx = _import_httpx()
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._timeout = timeout
        self._max_tokens_field = max_tokens_field
        self._headers: dict[str, str] = {"Content-Type": "application/json", **(extra_headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._owns_client = client is None
        self._client: httpx.AsyncClient = client if client is not None else self._httpx.AsyncClient()

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body sent for `request`."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_output_tokens is not None:
            body[self._max_tokens_field] = request.max_output_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def generate(self, request: GenerationRequest) -> Generation:
        """Send one chat-completions request; ProviderError on an HTTP error, a timeout or a bad answer."""
        httpx_module = self._httpx
        try:
            response = await self._client.post(
                self._url,
                content=json.dumps(self.request_body(request)).encode(),
                headers=self._headers,
                timeout=httpx_module.Timeout(self._timeout),
            )
        except httpx_module.TimeoutException as exc:
            raise ProviderError(
                f"no answer within {self._timeout:g} s",
                provider=PROVIDER_NAME,
                code="timeout",
                retryable=True,
            ) from exc
        except httpx_module.HTTPError as exc:
            raise ProviderError(
                f"request failed: {type(exc).__name__}: {exc}",
                provider=PROVIDER_NAME,
                code="transport",
                retryable=True,
            ) from exc
        if response.status_code >= 400:
            message, code = _error_details(response)
            raise ProviderError(
                message,
                provider=PROVIDER_NAME,
                status=response.status_code,
                code=code,
                retryable=_retryable(response.status_code),
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError(
                "malformed response: not JSON", provider=PROVIDER_NAME, status=response.status_code
            ) from exc
        return parse_chat_completion(body)

    async def aclose(self) -> None:
        """Close the HTTP client when this provider created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
