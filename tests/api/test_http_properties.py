"""Random JSON to every HTTP route is never a server error: a request that cannot be read is 400 with the
path of a field, and every error is a google.rpc.Status in the modelplane domain.

The requests start from the property tests' own strategies for each service (their `requests_of`), written
as a JSON client would (tests/support/http_calls.py), and are then often broken: a value swapped for any
JSON at all, an unknown field, a query parameter nobody declared, or a body that is not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from modelplane.server.app import MODELPLANE_SERVICES
from modelplane.server.http.routes import Route, RouteTable
from tests.api import (
    test_deployments_properties,
    test_guardrails_properties,
    test_logs_properties,
    test_registry_properties,
)
from tests.support.http_calls import HttpCall, http_call
from tests.support.live_server import LiveServer, start_live_server

EXAMPLES = 12
MAX_REQUEST_LINE = 8_000
TABLE = RouteTable.of(descriptor_pool.Default().FindServiceByName(name) for name in MODELPLANE_SERVICES)
ROUTES: list[Route] = list(TABLE)
REQUESTS: dict[str, Callable[[Any], st.SearchStrategy[Any]]] = {
    "ModelRegistryService": test_registry_properties.requests_of,
    "DeploymentService": test_deployments_properties.requests_of,
    "GuardrailService": test_guardrails_properties.requests_of,
    "LogService": test_logs_properties.requests_of,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[tuple[LiveServer, httpx.AsyncClient]]:
    service = descriptor_pool.Default().FindServiceByName(MODELPLANE_SERVICES[0])
    with start_live_server(
        admin_url, template_database, service, lambda *_: None, http_address="127.0.0.1:0"
    ) as server:
        assert server.server.http is not None
        client = httpx.AsyncClient(base_url=f"http://{server.server.http.target}", timeout=20)
        try:
            yield server, client
        finally:
            server.run(client.aclose())


def _containers(document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every object and list in a JSON document, itself included."""
    if isinstance(document, dict):
        yield path
        for key, value in document.items():
            yield from _containers(value, (*path, key))
    elif isinstance(document, list):
        yield path
        for index, value in enumerate(document):
            yield from _containers(value, (*path, index))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def _broken(call: HttpCall, data: st.DataObject) -> tuple[HttpCall, bytes | None]:
    """The call, often with something wrong in it; and the raw body to send instead of its JSON, if any."""
    how = data.draw(
        st.sampled_from(["as is", "any value", "unknown field", "query", "raw body"]), label="how"
    )
    event(how)
    if how == "query":
        extra = data.draw(st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=12)), label="param")
        return HttpCall(call.method, call.url, (*call.params, extra), call.body), None
    if how == "raw body":
        return call, data.draw(st.binary(max_size=40) | st.text(max_size=40).map(str.encode), label="raw")
    if call.body is None or how == "as is":
        return call, None
    body = json.loads(json.dumps(call.body))
    target = data.draw(st.sampled_from(list(_containers(body))), label="where")
    node = _at(body, target)
    if how == "unknown field":
        if not isinstance(node, dict):
            return call, None
        node[data.draw(st.text(min_size=1, max_size=10), label="key")] = data.draw(json_values, label="value")
    elif isinstance(node, dict) and node:
        node[data.draw(st.sampled_from(sorted(node)), label="key")] = data.draw(json_values, label="value")
    elif isinstance(node, list) and node:
        node[data.draw(st.integers(0, len(node) - 1), label="index")] = data.draw(json_values, label="value")
    elif not target:
        body = data.draw(json_values, label="body")
    return HttpCall(call.method, call.url, call.params, body), None


async def _send(client: httpx.AsyncClient, call: HttpCall, raw: bytes | None) -> httpx.Response:
    if raw is not None:
        return await client.request(call.method, call.url, params=call.params, content=raw)
    if call.body is None:
        return await client.request(call.method, call.url, params=call.params)
    return await client.request(call.method, call.url, params=call.params, content=json.dumps(call.body))


async def _answer(
    client: httpx.AsyncClient, route: Route, call: HttpCall, raw: bytes | None
) -> httpx.Response:
    if not route.server_streaming:
        return await _send(client, call, raw)
    # A stream that starts is read no further: its status is what this property is about.
    content = raw if raw is not None else (None if call.body is None else json.dumps(call.body).encode())
    request = client.build_request(call.method, call.url, params=call.params, content=content)
    response = await client.send(request, stream=True)
    if response.status_code == 200:
        await response.aclose()
    else:
        await response.aread()
    return response


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.http_method} {r.template.text}")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_random_json_is_never_a_server_error(
    live: tuple[LiveServer, httpx.AsyncClient], route: Route, data: st.DataObject
) -> None:
    server, client = live
    request = data.draw(REQUESTS[route.method.containing_service.name](route.method), label="request")
    assume(isinstance(request, Message) and request.ByteSize() < 1_000_000)
    try:
        written = http_call(route, request)
    except json_format.Error:
        # A value the proto JSON mapping has no text for (a Timestamp before year 1): no JSON client sends it.
        assume(False)
        raise
    call, raw = _broken(written, data)
    # The request line is bounded by the HTTP server itself (h11 refuses one over 16 KiB before any of
    # modelplane runs); what this property looks at is what fits.
    assume(len(call.url) + len(urlencode([(k, str(v)) for k, v in call.params])) < MAX_REQUEST_LINE)
    response = server.run(_answer(client, route, call, raw))
    event(str(response.status_code))
    assert response.status_code < 500, f"{response.status_code} {response.text[:2000]}"
    if response.status_code == 200:
        return
    body = response.json()
    assert body["code"] not in (0, 2, 13), body
    if response.status_code == 400:
        violations = [v for d in body["details"] for v in d.get("fieldViolations", [])]
        assert violations, f"400 without a field path: {body}"
        assert all(v["field"].strip() for v in violations), body
    if body["details"]:
        infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert infos, body
        assert infos[0]["domain"] == "modelplane"
        assert infos[0]["reason"], body
