"""How a ServiceCoordinator reaches the endpoint it chose: a pluggable Transport, in-process or over HTTP.

A transport takes the chosen `RouteTarget` and the caller's payload and returns the endpoint's answer. It
raises `RequestRejected` when the endpoint answered but refused the request (the caller's fault, e.g. HTTP
4xx): that says nothing about the endpoint's health. Any other exception (connection refused, HTTP 5xx, a
handler that crashed, TimeoutError) counts as a failure of the endpoint.
"""

# A transport's `timeout` is the endpoint call's own limit (an HTTP timeout, say), not an asyncio timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modelplane.client.trace_context import trace_headers
from modelplane.orchestration.traffic import RouteTarget

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EndpointFailed",
    "EndpointHandler",
    "HttpTransport",
    "InProcessTransport",
    "RequestRejected",
    "Transport",
    "routing_headers",
]

EndpointHandler = Callable[[Any, RouteTarget], Awaitable[Any]]


class RequestRejected(Exception):
    """The endpoint answered and refused the request; the endpoint itself is healthy."""

    def __init__(self, endpoint: str, message: str, *, status: int = 0) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.status = status


class EndpointFailed(Exception):
    """The endpoint could not serve the request (unreachable, or it failed on its side)."""

    def __init__(self, endpoint: str, message: str, *, status: int = 0) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.status = status


@runtime_checkable
class Transport(Protocol):
    """Sends one payload to one endpoint and returns its answer."""

    async def call(
        self, target: RouteTarget, payload: Any, *, timeout: float | None, headers: Mapping[str, str]
    ) -> Any:
        """The endpoint's answer to `payload`; `headers` carry the routing decision and the caller's ids."""
        ...

    async def aclose(self) -> None:
        """Releases what the transport holds (connections)."""
        ...


def routing_headers(target: RouteTarget, *, trace_id: str = "", request_id: str = "") -> dict[str, str]:
    """The headers that tell an endpoint how it was chosen, so its own logs join the routing event, and
    the current trace context (traceparent), so its spans join the caller's trace."""
    headers = {
        **trace_headers(),
        "x-modelplane-deployment": target.deployment,
        "x-modelplane-traffic-slot": target.slot,
    }
    if target.model_version:
        headers["x-modelplane-model-version"] = target.model_version
    if trace_id:
        headers["x-modelplane-trace-id"] = trace_id
    if request_id:
        headers["x-request-id"] = request_id
    return headers


class InProcessTransport:
    """Endpoints that are async functions in this process, by address: for tests, demos and local runs.

    A handler gets the payload and the RouteTarget; an address without a handler fails like an
    unreachable endpoint. `calls` counts the calls each address received.
    """

    def __init__(self, handlers: Mapping[str, EndpointHandler] | None = None) -> None:
        self.handlers: dict[str, EndpointHandler] = dict(handlers or {})
        self.calls: dict[str, int] = {}

    def add(self, address: str, handler: EndpointHandler) -> None:
        """Serves `address` with `handler` (replacing any previous one)."""
        self.handlers[address] = handler

    def remove(self, address: str) -> None:
        """Stops serving `address`: its calls then fail as if it were unreachable."""
        self.handlers.pop(address, None)

    async def call(
        self, target: RouteTarget, payload: Any, *, timeout: float | None, headers: Mapping[str, str]
    ) -> Any:
        handler = self.handlers.get(target.endpoint)
        self.calls[target.endpoint] = self.calls.get(target.endpoint, 0) + 1
        if handler is None:
            raise EndpointFailed(target.endpoint, "no handler serves this address")
        return await handler(payload, target)

    async def aclose(self) -> None:
        self.handlers.clear()


class HttpTransport:
    """POSTs the payload as JSON to the endpoint and returns the decoded JSON answer.

    An address without a scheme gets `scheme` ("http"); `path` is appended. httpx is imported when the
    first transport is made, so a service that routes in process does not need it. HTTP 4xx raises
    RequestRejected, 5xx and connection errors EndpointFailed, a timeout TimeoutError.
    """

    def __init__(
        self,
        *,
        path: str = "/",
        scheme: str = "http",
        client: httpx.AsyncClient | None = None,
        default_timeout: float = 30.0,
    ) -> None:
        import httpx

        self._httpx = httpx
        self._path = path if path.startswith("/") else "/" + path
        self._scheme = scheme
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._default_timeout = default_timeout

    def url(self, address: str) -> str:
        """The URL a call to `address` goes to."""
        base = address if "://" in address else f"{self._scheme}://{address}"
        return base.rstrip("/") + self._path

    async def call(
        self, target: RouteTarget, payload: Any, *, timeout: float | None, headers: Mapping[str, str]
    ) -> Any:
        httpx = self._httpx
        try:
            response = await self._client.post(
                self.url(target.endpoint),
                json=payload,
                headers=dict(headers),
                timeout=self._default_timeout if timeout is None else timeout,
            )
        except httpx.TimeoutException as error:
            raise TimeoutError(f"{target.endpoint}: no answer in time") from error
        except httpx.HTTPError as error:
            raise EndpointFailed(target.endpoint, f"{type(error).__name__}: {error}") from error
        if 400 <= response.status_code < 500:
            raise RequestRejected(target.endpoint, response.text[:200], status=response.status_code)
        if response.status_code >= 500:
            raise EndpointFailed(target.endpoint, response.text[:200], status=response.status_code)
        return response.json() if response.content else None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
