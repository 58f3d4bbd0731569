"""JSON Schemas built to cost exponential time: chains of definitions that each try two refs to the next."""

from __future__ import annotations

from typing import Any


def ref_chain(depth: int, at: str = "") -> dict[str, Any]:
    """`depth` definitions, each an anyOf of two refs to the next: 2**depth paths to the last one (an
    integer). The root is the first definition, or `{at: first}` when `at` names a keyword ("items")."""
    defs: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(depth)
    }
    defs[f"d{depth}"] = {"type": "integer"}
    if at:
        return {"$defs": defs, at: {"$ref": "#/$defs/d0"}}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def valid_but_slow(depth: int) -> dict[str, Any]:
    """Arrays of integers, each checked against a chain whose every level first tries a branch that fails
    only after the whole rest of the chain: 2**depth steps per valid element, within the size bound."""
    defs: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, False]}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(depth)
    }
    defs[f"d{depth}"] = {"type": "integer"}
    return {"$defs": defs, "items": {"$ref": "#/$defs/d0"}}
