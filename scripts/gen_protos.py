"""Regenerates clients/modelplane/v1 (messages, gRPC stubs and .pyi) from protos/ with grpcio-tools."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> None:
    """Writes the generated package for every .proto under protos/ into out."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(__import__("google.api").api.__path__[0]).parent.parent
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "clients"
    target = out / "modelplane" / "v1"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    generate(out)
    # PEP 561: the generated .pyi stubs are what type checkers of consumer services read.
    (target / "py.typed").touch()


if __name__ == "__main__":
    main()
