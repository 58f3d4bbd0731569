"""HTTP calls made the way a JSON client would write them: a request message turned into its method, URL,
query and JSON body by its route (written here independently of the server's transcoder), and the answer
read back into a message or a google.rpc.Status."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2  # type: ignore[import-untyped]

from modelplane.server.http.routes import Route

_VARIABLE = re.compile(r"\{([a-z_.]+)(?:=[^}]*)?\}")


@dataclass(frozen=True)
class HttpCall:
    method: str
    url: str
    params: tuple[tuple[str, str | int | float | bool | None], ...]
    body: dict[str, Any] | None


def _pop(document: dict[str, Any], dotted: str) -> Any:
    """Takes a path variable's value out of the document; "" for a field left unset."""
    *parents, last = dotted.split(".")
    node = document
    for part in parents:
        node = node.get(part, {})
    return node.pop(last, "")


def _query(document: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for key, value in document.items():
        name = prefix + key
        if isinstance(value, dict):
            params += _query(value, name + ".")
        elif isinstance(value, list):
            params += [(name, _text(v)) for v in value]
        else:
            params.append((name, _text(value)))
    return params


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def http_call(route: Route, message: Message) -> HttpCall:
    """The HTTP form of `message` on `route`: path variables from their fields, the rest in the JSON body
    (body "*") or in the query string, in proto field names (the server takes both spellings)."""
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)

    def fill(match: re.Match[str]) -> str:
        return quote(str(_pop(document, match.group(1))), safe="/")

    url = _VARIABLE.sub(fill, route.template.text)
    if route.body == "*":
        return HttpCall(route.http_method, url, (), document)
    return HttpCall(route.http_method, url, tuple(_query(document)), None)


async def send(
    client: httpx.AsyncClient, call: HttpCall, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.request(call.method, call.url, params=call.params, json=call.body, headers=headers)


def http_status_message(response: httpx.Response) -> status_pb2.Status:
    """The google.rpc.Status of an error answer; AssertionError when the body is not one."""
    status = status_pb2.Status()
    json_format.ParseDict(response.json(), status)
    return status


def response_message(route: Route, response: httpx.Response) -> Message:
    message: Message = GetMessageClass(route.method.output_type)()
    json_format.ParseDict(response.json(), message)
    return message
