"""Writes the OpenAPI 3 document of the HTTP/JSON API from the protos: one operation per google.api.http
route (the server's own route table), schemas in the proto3 JSON mapping, descriptions from the proto
comments. The server ships it and serves it at /openapi.json. With --check it writes nothing and fails
when the checked-in document is not what the protos give (`make check-gen`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc_tools
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, ServiceDescriptor
from grpc_tools import protoc

from modelplane.server.app import MODELPLANE_SERVICES
from modelplane.server.http.routes import Route, RouteTable
from modelplane.server.http.streams import NDJSON, SSE, is_resumable
from modelplane.v1 import registry_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "server" / "modelplane" / "server" / "http" / "openapi.json"
STATUS = "google.rpc.Status"

# Well-known types as the proto3 JSON mapping writes them.
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$", "example": "30s"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated field paths"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}


def proto_comments() -> dict[str, str]:
    """The leading comment of every message, field, enum, value, service and method, by full name."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    googleapis = Path(__import__("google.api").api.__path__[0]).parent.parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "set.pb"
        args = ["protoc", f"-I{PROTOS}", f"-I{googleapis}", f"-I{well_known}"]
        args += ["--include_source_info", f"--descriptor_set_out={out}", *sources]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    comments: dict[str, str] = {}
    for file in files.file:
        _file_comments(file, comments)
    return {name: " ".join(text.split()) for name, text in comments.items()}


def _file_comments(file: descriptor_pb2.FileDescriptorProto, comments: dict[str, str]) -> None:
    """Adds the comments of one file's declarations, found by their source paths (descriptor.proto's
    field numbers: 4 messages, 2 fields, 3 nested messages, 5 and 4 enums, 6 services, 2 methods)."""
    by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}

    def walk_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], parent: str) -> None:
        name = f"{parent}.{message.name}"
        comments[name] = by_path.get(path, "")
        for i, field in enumerate(message.field):
            comments[f"{name}.{field.name}"] = by_path.get((*path, 2, i), "")
        for i, nested in enumerate(message.nested_type):
            walk_message(nested, (*path, 3, i), name)
        for i, enum in enumerate(message.enum_type):
            comments[f"{name}.{enum.name}"] = by_path.get((*path, 4, i), "")

    for i, message in enumerate(file.message_type):
        walk_message(message, (4, i), file.package)
    for i, enum in enumerate(file.enum_type):
        comments[f"{file.package}.{enum.name}"] = by_path.get((5, i), "")
    for i, service in enumerate(file.service):
        comments[f"{file.package}.{service.name}"] = by_path.get((6, i), "")
        for j, method in enumerate(service.method):
            comments[f"{file.package}.{service.name}.{method.name}"] = by_path.get((6, i, 2, j), "")


class Schemas:
    """components.schemas: every message and enum a route reaches, named by its full proto name."""

    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, Any] = {}

    def ref(self, name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name.startswith("google.protobuf.") and descriptor.full_name.endswith("Value"):
            return self.field(descriptor.fields_by_name["value"])
        if descriptor.full_name not in self.schemas:
            self.schemas[descriptor.full_name] = {}  # a placeholder, for recursive messages
            properties = {f.json_name: self.field(f) for f in descriptor.fields}
            schema: dict[str, Any] = {"type": "object", "properties": properties}
            if self.comments.get(descriptor.full_name):
                schema["description"] = self.comments[descriptor.full_name]
            self.schemas[descriptor.full_name] = schema
        return self.ref(descriptor.full_name)

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name not in self.schemas:
            schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in descriptor.values]}
            if self.comments.get(descriptor.full_name):
                schema["description"] = self.comments[descriptor.full_name]
            self.schemas[descriptor.full_name] = schema
        return self.ref(descriptor.full_name)

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(SCALARS[field.type])

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.single(message.fields_by_name["value"]),
            }
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        description = self.comments.get(field.full_name, "")
        if description:
            # A $ref takes no siblings in OpenAPI 3.0: the description goes beside it in an allOf.
            schema = {"allOf": [schema], "description": description} if "$ref" in schema else schema
            schema.setdefault("description", description)
        return schema


def query_parameters(route: Route, schemas: Schemas) -> list[dict[str, Any]]:
    """The request fields a GET or DELETE takes in its query string (those not in its path), dotted
    paths for fields of nested messages."""
    parameters: list[dict[str, Any]] = []

    def add(descriptor: Descriptor, prefix: str, depth: int) -> None:
        for field in descriptor.fields:
            path = prefix + field.name
            if path in route.path_fields():
                continue
            message = field.message_type
            if message is not None and message.GetOptions().map_entry:
                continue
            if message is not None and message.full_name not in WELL_KNOWN and depth < 3:
                if not field.is_repeated:
                    add(message, path + ".", depth + 1)
                continue
            schema = schemas.field(field)
            parameter: dict[str, Any] = {"name": path, "in": "query", "required": False, "schema": schema}
            if field.is_repeated:
                parameter |= {"style": "form", "explode": True}
            if schemas.comments.get(field.full_name):
                parameter["description"] = schemas.comments[field.full_name]
            parameters.append(parameter)

    add(route.method.input_type, "", 0)
    return parameters


def operation(route: Route, schemas: Schemas) -> dict[str, Any]:
    method = route.method
    service = method.containing_service
    _, segments = route.template.expanded()
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": f"a segment of the request's {variable} ({route.template.text})",
        }
        for name, variable in segments
    ]
    op: dict[str, Any] = {
        "operationId": f"{service.name}_{method.name}",
        "tags": [service.name],
        "summary": method.name,
        "description": schemas.comments.get(method.full_name, ""),
    }
    if route.body == "":
        parameters += query_parameters(route, schemas)
    else:
        body = (
            schemas.message(method.input_type)
            if route.body == "*"
            else schemas.field(method.input_type.fields_by_name[route.body])
        )
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if parameters:
        op["parameters"] = parameters
    response = schemas.message(method.output_type)
    if route.server_streaming:
        resumable = is_resumable(method.input_type, method.output_type)
        description = (
            "A stream: Server-Sent Events (each event's data is one message; an `error` event carries a"
            " google.rpc.Status and ends the stream), or with Accept: application/x-ndjson one"
            ' {"result": message} line per message and {"error": status} last on an error.'
        )
        if resumable:
            description += " Event ids resume the watch: send the last one back as Last-Event-ID."
            parameters.append(
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "the id of the last event received (N or N:k), to resume after it",
                }
            )
            op["parameters"] = parameters
        ok = {
            "description": description,
            "content": {
                SSE: {"schema": {"type": "string"}},
                NDJSON: {
                    "schema": {
                        "type": "object",
                        "properties": {"result": response, "error": schemas.ref(STATUS)},
                    }
                },
            },
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": response}}}
    op["responses"] = {
        "200": ok,
        "default": {
            "description": "An error: google.rpc.Status; its HTTP status is mapped from its code",
            "content": {"application/json": {"schema": schemas.ref(STATUS)}},
        },
    }
    return op


def document() -> dict[str, Any]:
    comments = proto_comments()
    schemas = Schemas(comments)
    services: list[ServiceDescriptor] = [
        registry_pb2.DESCRIPTOR.pool.FindServiceByName(name) for name in MODELPLANE_SERVICES
    ]
    table = RouteTable.of(services)
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        path, _ = route.template.expanded()
        operations = paths.setdefault(path, {})
        if route.http_method.lower() in operations:
            raise SystemExit(f"two routes for {route.http_method} {path}")
        operations[route.http_method.lower()] = operation(route, schemas)
    schemas.schemas[STATUS] = {
        "type": "object",
        "description": "The error model of every method (google.rpc.Status in proto3 JSON).",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "the google.rpc.Code"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": WELL_KNOWN["google.protobuf.Any"]},
        },
    }
    not_offered = "; ".join(f"{u.method.full_name}: {u.reason}" for u in table.unrouted)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "modelplane",
            "version": "v1",
            "description": (
                "The HTTP/JSON face of modelplane's gRPC API, transcoded from the google.api.http annotations"
                " of protos/modelplane/v1. Fields use the proto3 JSON mapping (lowerCamelCase; int64 as"
                f" strings). Not offered over HTTP: {not_offered}."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": s.name, "description": comments.get(s.full_name, "")} for s in services],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(sorted(schemas.schemas.items())),
        },
    }


def rendered() -> str:
    return json.dumps(document(), indent=1) + "\n"


def main() -> None:
    if sys.argv[1:] not in ([], ["--check"]):
        raise SystemExit("usage: gen_openapi.py [--check]")
    wanted = rendered()
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != wanted:
            raise SystemExit(f"{OUT.relative_to(ROOT)} is not what the protos give; run `make gen`")
        print("OpenAPI document: matches the protos")
        return
    OUT.write_text(wanted)
    print(f"OpenAPI document: written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
