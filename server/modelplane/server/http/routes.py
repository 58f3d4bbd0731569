"""The HTTP routes of the RPCs, read from their `google.api.http` annotations: path templates compiled to
matchers, the body rule, and which RPCs have no HTTP form (client and bidirectional streams).

Pure: no I/O and no web framework, so the transcoder, the OpenAPI generator and the tests read one table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor

# A `*` of a template is one path segment; a `:` ends the last one, where a custom method's verb begins.
# Resource ids never hold a colon or a slash; a client that needs one in a value percent-encodes it.
_SEGMENT = r"[^/:]+"
_SEGMENTS = r"[^:]+"
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(?:=([^}]*))?\}")


class TemplateError(ValueError):
    """A path template this transcoder cannot serve; raised at start, never on a request."""


@dataclass(frozen=True)
class PathTemplate:
    """One compiled path template, e.g. "/v1/{name=models/*/versions/*}:resolve"."""

    text: str
    pattern: re.Pattern[str]
    # The request field path (dotted) each capture group of `pattern` sets, in group order, and the
    # segments pattern of each ("*" for a bare "{field}").
    variables: tuple[str, ...]
    patterns: tuple[str, ...]
    verb: str

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        if not text.startswith("/"):
            raise TemplateError(f"template {text!r} does not start with '/'")
        path, verb = text, ""
        last = text.rsplit("/", 1)[-1]
        if ":" in last and "}" not in last.split(":")[-1]:
            path, _, verb = text.rpartition(":")
        variables: list[str] = []
        patterns: list[str] = []
        regex: list[str] = []
        position = 0
        for match in _VARIABLE.finditer(path):
            regex.append(_literal_regex(path[position : match.start()]))
            variables.append(match.group(1))
            patterns.append(match.group(2) or "*")
            regex.append("(" + _segments_regex(patterns[-1]) + ")")
            position = match.end()
        regex.append(_literal_regex(path[position:]))
        if "{" in path[position:] or "}" in path[position:]:
            raise TemplateError(f"template {text!r} has an unbalanced variable")
        if verb:
            regex.append(re.escape(":" + verb))
        return cls(text, re.compile("".join(regex)), tuple(variables), tuple(patterns), verb)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The decoded value of each variable when `raw_path` (still percent-encoded) fits, else None."""
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in zip(self.variables, found.groups(), strict=True)}

    def expanded(self) -> tuple[str, list[tuple[str, str]]]:
        """The template with each `*` of a variable as its own named segment, as OpenAPI writes a path:
        "/v1/{name=models/*/versions/*}" is "/v1/models/{model}/versions/{version}", with the pairs
        (segment name, field path) [("model", "name"), ("version", "name")]. A segment is named after
        the collection before it, made singular."""
        segments: list[tuple[str, str]] = []

        def expand(match: re.Match[str]) -> str:
            parts = (match.group(2) or "*").split("/")
            out = []
            for i, part in enumerate(parts):
                if part != "*":
                    out.append(part)
                    continue
                name = _singular(parts[i - 1]) if i > 0 else match.group(1).replace(".", "_")
                segments.append((name, match.group(1)))
                out.append("{" + name + "}")
            return "/".join(out)

        return _VARIABLE.sub(expand, self.text), segments


def _singular(collection: str) -> str:
    if collection.endswith("ies"):
        return collection[:-3] + "y"
    if collection.endswith("ses"):
        return collection[:-2]
    return collection.removesuffix("s")


def _literal_regex(text: str) -> str:
    return "/".join(_SEGMENT if part == "*" else re.escape(part) for part in text.split("/"))


def _segments_regex(pattern: str) -> str:
    parts = []
    for part in pattern.split("/"):
        if part == "*":
            parts.append(_SEGMENT)
        elif part == "**":
            parts.append(_SEGMENTS)
        elif part and "{" not in part and "*" not in part:
            parts.append(re.escape(part))
        else:
            raise TemplateError(f"variable pattern {pattern!r} is not supported")
    return "/".join(parts)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    method: MethodDescriptor
    http_method: str
    template: PathTemplate
    # "" (no body: every field not in the path comes from the query), "*" (the whole request is the
    # body; the query sets nothing) or the name of the one request field the body holds.
    body: str
    # "" (the whole response) or the name of the response field sent as the body.
    response_body: str

    @property
    def grpc_path(self) -> str:
        """The gRPC method path, "/package.Service/Method"."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def path_fields(self) -> tuple[str, ...]:
        return self.template.variables


@dataclass(frozen=True)
class Unrouted:
    """An RPC with no HTTP form, and why."""

    method: MethodDescriptor
    reason: str


@dataclass
class RouteTable:
    """Every route of the services given, in the order the annotations list them."""

    routes: list[Route] = field(default_factory=list)
    unrouted: list[Unrouted] = field(default_factory=list)

    @classmethod
    def of(cls, services: Iterable[ServiceDescriptor]) -> RouteTable:
        table = cls()
        for service in services:
            for method in service.methods:
                rule = _http_rule(method)
                if rule is None:
                    table.unrouted.append(Unrouted(method, _why_unrouted(method)))
                    continue
                if method.client_streaming:
                    raise TemplateError(f"{method.full_name} streams from the client: HTTP cannot carry it")
                for binding in (rule, *rule.additional_bindings):
                    table.routes.append(_route(method, binding))
        return table

    def find(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.http_method != http_method:
                continue
            values = route.template.match(raw_path)
            if values is not None:
                return route, values
        return None

    def methods_at(self, raw_path: str) -> list[str]:
        """The HTTP methods some route serves at `raw_path` (for 405 and its Allow header)."""
        return sorted({r.http_method for r in self.routes if r.template.match(raw_path) is not None})

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)


def _http_rule(method: MethodDescriptor) -> http_pb2.HttpRule | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return rule


def _why_unrouted(method: MethodDescriptor) -> str:
    if method.client_streaming and method.server_streaming:
        return "a bidirectional stream, which plain HTTP/1.1 requests cannot carry"
    if method.client_streaming:
        return "a client stream, which plain HTTP/1.1 requests cannot carry"
    return "no google.api.http annotation"


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise TemplateError(f"{method.full_name}: an http rule without a pattern")
    if pattern == "custom":
        http_method, text = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, text = pattern.upper(), getattr(rule, pattern)
    template = PathTemplate.parse(text)
    for variable in template.variables:
        resolve_field_path(method.input_type, variable)
    if rule.body not in ("", "*"):
        resolve_field_path(method.input_type, rule.body)
    return Route(method, http_method, template, rule.body, rule.response_body)


def resolve_field_path(message: object, path: str) -> Sequence[FieldDescriptor]:
    """The fields along a dotted path of proto field names; TemplateError when one does not exist."""
    fields: list[FieldDescriptor] = []
    current = message
    for name in path.split("."):
        found = getattr(current, "fields_by_name", {}).get(name)
        if found is None:
            raise TemplateError(f"{getattr(message, 'full_name', message)} has no field {path!r}")
        fields.append(found)
        current = found.message_type
    return fields
