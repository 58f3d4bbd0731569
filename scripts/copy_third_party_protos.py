"""Keeps third_party/protos, the vendored Google and gRPC .proto files of the contract, true to their sources.

The files are checked in, so that a user in any language (and buf, offline) has every .proto the contract
and its errors need without Python: google/api/{field_behavior,annotations,http}.proto (imported by the
contract), google/rpc/{status,error_details,code}.proto (the rich error model every error carries) and
grpc/health/v1/health.proto (the health service every server runs).

With no argument, copies the google/ files afresh from the installed googleapis-common-protos (after an
upgrade of the lock). With --check, fails when a google/ file differs from the installed package's, or when
health.proto no longer describes the messages and methods of the installed grpcio-health-checking (which
ships no .proto; the vendored one comes from the grpc-health-check npm package, Apache-2.0).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import google.api  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "third_party" / "protos"
GOOGLE_FILES = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)
HEALTH_FILE = "grpc/health/v1/health.proto"


def _google_source() -> Path:
    return Path(google.api.__path__[0]).parent.parent


def _compiled(proto: str) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor of a vendored file, as protoc (grpcio-tools) reads it."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "set.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{VENDORED}",
                f"--descriptor_set_out={out}",
                proto,
            ],
            check=True,
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def _without_json_names(message: descriptor_pb2.DescriptorProto) -> descriptor_pb2.DescriptorProto:
    """A copy without the json_name protoc fills in (generated _pb2 files leave it out)."""
    copy = descriptor_pb2.DescriptorProto()
    copy.CopyFrom(message)
    pending = [copy]
    while pending:
        current = pending.pop()
        for field in current.field:
            field.ClearField("json_name")
        pending.extend(current.nested_type)
    return copy


def _shape(file: descriptor_pb2.FileDescriptorProto) -> tuple[object, ...]:
    """What a client sees of a file: its package, messages and methods (in any order)."""
    messages = sorted(_without_json_names(m).SerializeToString(deterministic=True) for m in file.message_type)
    methods = sorted(
        (s.name, m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
        for s in file.service
        for m in s.method
    )
    return file.package, messages, methods


def differences() -> list[str]:
    found = []
    for name in GOOGLE_FILES:
        source, vendored = _google_source() / name, VENDORED / name
        if not vendored.exists() or vendored.read_bytes() != source.read_bytes():
            found.append(f"{vendored.relative_to(ROOT)} differs from {source}: run `make third-party`")
    installed = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(installed)
    if _shape(_compiled(HEALTH_FILE)) != _shape(installed):
        found.append(f"third_party/protos/{HEALTH_FILE} no longer describes grpcio-health-checking's service")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, and fail on a difference")
    if parser.parse_args().check:
        found = differences()
        for line in found:
            print(line, file=sys.stderr)
        sys.exit(1 if found else 0)
    for name in GOOGLE_FILES:
        (VENDORED / name).parent.mkdir(parents=True, exist_ok=True)
        (VENDORED / name).write_bytes((_google_source() / name).read_bytes())


if __name__ == "__main__":
    main()
