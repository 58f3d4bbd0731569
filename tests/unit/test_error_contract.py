"""enum ErrorReason is the one source of reasons: the client, the README and the server agree with it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grpc
import pytest

from modelplane.client import errors as client_errors
from modelplane.server import errors as server_errors
from modelplane.server.errors import REASON_CODES
from modelplane.v1 import error_reason_pb2
from modelplane.v1.error_reason_pb2 import ErrorReason

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server" / "modelplane" / "server"
PREFIX = "ERROR_REASON_"


def _enum() -> dict[str, grpc.StatusCode]:
    """The contract read straight from the generated descriptor: reason -> status code."""
    by_number = {code.value[0]: code for code in grpc.StatusCode}
    option = error_reason_pb2.status_code
    return {
        value.name.removeprefix(PREFIX): by_number[value.GetOptions().Extensions[option]]
        for value in ErrorReason.DESCRIPTOR.values
        if value.number != 0
    }


CONTRACT = _enum()


def test_every_reason_has_a_status_code_and_the_prefix() -> None:
    for value in ErrorReason.DESCRIPTOR.values:
        assert value.name.startswith(PREFIX)
    assert "MODEL_NOT_FOUND" in CONTRACT
    assert grpc.StatusCode.OK not in CONTRACT.values()
    assert dict(REASON_CODES) == CONTRACT


@pytest.mark.parametrize("reason", sorted(CONTRACT))
def test_every_reason_has_a_client_class_of_its_code(reason: str) -> None:
    cls = client_errors.CLASS_BY_REASON[reason]
    code_class = client_errors.CLASS_BY_CODE[CONTRACT[reason]]
    assert issubclass(cls, code_class)
    assert client_errors.error_class_for(CONTRACT[reason], reason) is cls
    if cls is not code_class:
        assert cls.default_reason == reason
        assert cls.__name__ in client_errors.__all__
        assert getattr(client_errors, cls.__name__) is cls


def test_the_client_knows_no_reason_outside_the_enum() -> None:
    assert set(client_errors.CLASS_BY_REASON) == set(CONTRACT)


def test_every_existing_public_class_name_still_works() -> None:
    # Names users catch by; the reasons they stand for never change.
    names = {
        "ModelNotFound": "MODEL_NOT_FOUND",
        "NoMatchingModel": "NO_MATCHING_MODEL",
        "EtagMismatch": "ETAG_MISMATCH",
        "InvalidField": "INVALID_FIELD",
        "StorageUnavailable": "STORAGE_UNAVAILABLE",
        "RoleNotAllowed": "ROLE_NOT_ALLOWED",
        "BatchTooLarge": "BATCH_TOO_LARGE",
        "RevisionCompacted": "REVISION_COMPACTED",
        "SumOutOfRange": "SUM_OUT_OF_RANGE",
    }
    for name, reason in names.items():
        assert getattr(client_errors, name).default_reason == reason
    assert client_errors.NoMatchingModel("x").rejections == ()


def _readme_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Errors") :]
    section = section[: section.index("\n## ")]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([A-Z_]+)` \|", section, re.MULTILINE)
    return {reason: code for code, reason in rows}


def test_the_readme_table_lists_exactly_the_enum() -> None:
    rows = _readme_rows()
    assert rows == {reason: code.name for reason, code in CONTRACT.items()}


# ---- the server sends no reason outside the enum


def _string_constants(tree: ast.Module) -> dict[str, str]:
    constants = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.targets[0].id] = node.value.value
    return constants


def reasons_used(sources: dict[str, str]) -> tuple[set[str], list[str]]:
    """Every reason the given modules may send, and the places that name one outside the enum.

    A reason is named by a `reason=` argument, a class's `reason = ...`, the first argument of
    unavailable_status, or an ErrorReason value; a string is followed through module constants.
    """
    trees = {name: ast.parse(text) for name, text in sources.items()}
    constants: dict[str, str] = {}
    for tree in trees.values():
        constants.update(_string_constants(tree))
    used: set[str] = set()
    outside: list[str] = []

    def named(expr: ast.expr, where: str) -> None:
        value: str | None = None
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            value = expr.value
        elif isinstance(expr, ast.Name) and expr.id in constants:
            value = constants[expr.id]
        if value is None or value == "":
            return
        used.add(value)
        if value not in CONTRACT:
            outside.append(f"{where}: {value}")

    for module, tree in trees.items():
        for node in ast.walk(tree):
            where = f"{module}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        named(keyword.value, where)
                func = node.func
                func_name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if func_name == "unavailable_status" and node.args:
                    named(node.args[0], where)
            elif isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if (
                        isinstance(statement, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "reason" for t in statement.targets)
                        and isinstance(statement.value, ast.Constant)
                    ):
                        named(statement.value, where)
            elif isinstance(node, ast.Attribute) and node.attr.startswith(PREFIX):
                name = node.attr.removeprefix(PREFIX)
                used.add(name)
                if name not in CONTRACT:
                    outside.append(f"{where}: {node.attr}")
    return used, outside


def _server_sources() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text()
        for path in SERVER.rglob("*.py")
        if not path.name.endswith("_pb2.py")
    }


def test_every_reason_the_server_names_is_in_the_enum() -> None:
    used, outside = reasons_used(_server_sources())
    assert outside == []
    # The scan reaches every kind of place a reason is written: a literal argument, a module constant,
    # a class default and an enum value.
    assert {"SUM_OUT_OF_RANGE", "INVALID_FILTER", "NO_MATCHING_MODEL", "INTERNAL"} <= used


def test_the_enum_lists_no_reason_the_server_never_sends() -> None:
    used, _ = reasons_used(_server_sources())
    assert set(CONTRACT) - used == set()


def test_the_scan_finds_a_reason_outside_the_enum() -> None:
    source = (
        'GONE = "MODEL_GONE"\n'
        "class Missing(NotFound):\n"
        '    reason = "NO_SUCH_THING"\n'
        'raise NotFound("x", reason="MODEL_VANISHED")\n'
        'raise NotFound("x", reason=GONE)\n'
        'unavailable_status("DB_DOWN", "x")\n'
        "raise NotFound('x', reason=ErrorReason.ERROR_REASON_LOST)\n"
    )
    _, outside = reasons_used({"bad.py": source})
    assert sorted(entry.split(": ")[1] for entry in outside) == [
        "DB_DOWN",
        "ERROR_REASON_LOST",
        "MODEL_GONE",
        "MODEL_VANISHED",
        "NO_SUCH_THING",
    ]


def test_a_server_error_with_a_reason_outside_the_enum_cannot_be_built() -> None:
    with pytest.raises(ValueError, match=r"no value of modelplane\.v1\.ErrorReason"):
        server_errors.NotFound("x", reason="MODEL_GONE")
    with pytest.raises(ValueError, match="no value"):
        server_errors.InvalidArgument.field("a", "b", reason="NOT_A_REASON")
    with pytest.raises(ValueError, match="no value"):

        class Gone(server_errors.NotFound):
            reason = "MODEL_GONE"


def test_a_server_error_with_another_codes_reason_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="sent with ABORTED"):
        server_errors.NotFound("x", reason=ErrorReason.ERROR_REASON_ETAG_MISMATCH)


def test_a_server_error_of_a_code_without_a_default_reason_needs_one() -> None:
    with pytest.raises(TypeError, match="needs a reason"):
        server_errors.NotFound("x")
    error = server_errors.NotFound("x", reason=ErrorReason.ERROR_REASON_MODEL_NOT_FOUND)
    assert error.reason == "MODEL_NOT_FOUND"
