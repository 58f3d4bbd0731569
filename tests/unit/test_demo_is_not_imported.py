"""The demo (clients/modelplane/demo/) ships in the package but is no part of the library: no module of the
clients or the server imports it, and it imports nothing of the server (it runs the server as a command)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "clients" / "modelplane" / "demo"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_library_module_imports_the_demo() -> None:
    library = [
        path
        for root in (ROOT / "clients" / "modelplane", ROOT / "server" / "modelplane")
        for path in root.rglob("*.py")
        if not path.is_relative_to(DEMO)
    ]
    assert library
    importers = [
        str(path.relative_to(ROOT))
        for path in library
        if any(name == "modelplane.demo" or name.startswith("modelplane.demo.") for name in imported(path))
    ]
    assert importers == []


def test_the_demo_imports_nothing_of_the_server() -> None:
    modules = sorted(DEMO.glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        server = [name for name in imported(path) if name.startswith("modelplane.server")]
        assert server == [], path.name
