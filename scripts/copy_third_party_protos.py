"""Copies the google/api and google/rpc .proto files that buf needs from googleapis-common-protos."""

from __future__ import annotations

import shutil
from pathlib import Path

import google.api  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    source = Path(google.api.__path__[0]).parent
    target = ROOT / "third_party" / "protos" / "google"
    for sub in ("api", "rpc"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for proto in (source / sub).glob("*.proto"):
            shutil.copy(proto, target / sub / proto.name)


if __name__ == "__main__":
    main()
