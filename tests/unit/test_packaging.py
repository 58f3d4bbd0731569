"""The base install's lower bounds admit no runtime that the checked-in generated code refuses at import."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "clients" / "modelplane" / "v1"


def _base_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line).specifier for line in project["dependencies"]}


def _lowest_admitted(specifier: SpecifierSet) -> Version:
    bounds = [Version(spec.version) for spec in specifier if spec.operator in (">=", "==")]
    assert bounds, f"{specifier} has no lower bound"
    return max(bounds)


def _generated_versions(pattern: str, suffix: str) -> set[Version]:
    found = {
        Version(m) for path in GENERATED.glob(f"*{suffix}") for m in re.findall(pattern, path.read_text())
    }
    assert found, f"no version found in {GENERATED}/*{suffix}"
    return found


def test_grpcio_lower_bound_is_the_version_the_stubs_were_generated_with() -> None:
    # Each *_pb2_grpc.py raises at import on a grpcio older than GRPC_GENERATED_VERSION.
    generated = _generated_versions(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", "_pb2_grpc.py")
    assert _lowest_admitted(_base_requirements()["grpcio"]) >= max(generated)


def test_protobuf_range_is_the_one_the_messages_were_generated_for() -> None:
    # Each *_pb2.py refuses a protobuf runtime older than its gencode, or of another major version.
    generated = max(_generated_versions(r"# Protobuf Python Version: ([0-9.]+)", "_pb2.py"))
    specifier = _base_requirements()["protobuf"]
    assert _lowest_admitted(specifier) >= generated
    assert f"{generated.major + 1}.0" not in specifier
    assert specifier.contains(str(generated))
