"""JSON rules: a JSON Schema checked when a policy is written, then validated within a check's deadline.

A schema is one self-contained document: every `$ref` points inside it ("#" or a JSON pointer "#/..."),
so validation never reads a URL or a file (the validator's registry refuses any retrieval besides). Its
size once every `$ref` is expanded is bounded (MAX_SCHEMA_NODES), which bounds the work per JSON value
of the checked text; a `$ref` cycle is refused. Validation stops at the check's deadline: every keyword
looks at the clock before it runs, `anyOf`/`oneOf` keep no error trees, and `uniqueItems` hashes instead
of comparing every pair.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import re2  # type: ignore[import-untyped]  # no typing information is published
import referencing
import referencing.exceptions

from modelplane.server.errors import FieldViolation
from modelplane.server.guardrails.engine.rules import MAX_SCHEMA_CHARS, CheckTimeout

# Subschemas a schema may hold once every `$ref` is replaced by what it points to.
MAX_SCHEMA_NODES = 10_000
# Keywords whose values are data, not subschemas: never walked for keywords or counted.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_DEFINITIONS = frozenset({"$defs", "definitions"})
# Refused keywords and why.
_REFUSED = {
    "patternProperties": "its patterns would run on a backtracking engine",
    "$dynamicRef": "dynamic references are not supported",
    "$recursiveRef": "recursive references are not supported",
    "$id": "a schema is one document: remove $id",
    "unevaluatedProperties": "its cost is not bounded per keyword; use additionalProperties",
    "unevaluatedItems": "its cost is not bounded per keyword; use items",
}
_OLD_DRAFTS = ("draft-03", "draft-04")
_state = threading.local()


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class


_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


def _deadline_passed() -> bool:
    deadline: float | None = getattr(_state, "deadline", None)
    return deadline is not None and time.perf_counter() > deadline


def _timed(keyword: Any) -> Any:
    def run(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if _deadline_passed():
            raise CheckTimeout
        errors = keyword(validator, value, instance, schema)
        if errors is not None:
            yield from errors

    return run


def _any_of(validator: Any, subschemas: Any, instance: Any, schema: Any) -> Iterator[Any]:
    for index, subschema in enumerate(subschemas):
        if next(validator.descend(instance, subschema, schema_path=index), None) is None:
            return
    yield jsonschema.ValidationError("is valid under none of the anyOf subschemas")


def _one_of(validator: Any, subschemas: Any, instance: Any, schema: Any) -> Iterator[Any]:
    valid = 0
    for index, subschema in enumerate(subschemas):
        if next(validator.descend(instance, subschema, schema_path=index), None) is None:
            valid += 1
            if valid > 1:
                break
    if valid != 1:
        yield jsonschema.ValidationError(f"is valid under {valid} of the oneOf subschemas, not exactly 1")


def _canonical(value: Any) -> Any:
    """A hashable value equal for JSON-equal values (1 and 1.0 alike, true and 1 not)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_canonical(item) for item in value))
    return ("d", frozenset((key, _canonical(item)) for key, item in value.items()))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield jsonschema.ValidationError("has non-unique elements")
                return
            seen.add(key)


def _pattern_on_re2(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if isinstance(instance, str) and re2.search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"does not match {pattern!r}")


class JsonCheck:
    """A JSON rule: parse, then validate against the schema (when there is one) before `deadline`."""

    def __init__(self, schema: Mapping[str, Any] | bool | None) -> None:
        self._validator: Any = None
        if schema is not None:
            base: Any = jsonschema.validators.validator_for(schema, default=cast(Any, None))
            if base is None:
                base = jsonschema.validators.validator_for({})
            keywords = {name: _timed(keyword) for name, keyword in base.VALIDATORS.items()}
            keywords.update(
                {
                    "anyOf": _timed(_any_of),
                    "oneOf": _timed(_one_of),
                    "uniqueItems": _timed(_unique_items),
                    "pattern": _timed(_pattern_on_re2),
                }
            )
            validator_class: Any = jsonschema.validators.extend(base, keywords)  # type: ignore[no-untyped-call]
            self._validator = validator_class(schema, registry=_NO_RETRIEVAL)

    def broken(self, text: str, deadline: float | None) -> bool:
        """Whether `text` is not JSON valid against the schema; CheckTimeout once `deadline` passes."""
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return True
        if self._validator is None:
            return False
        _state.deadline = deadline
        try:
            return not self._validator.is_valid(value)
        except (
            RecursionError,
            jsonschema.exceptions.SchemaError,
            referencing.exceptions.Unresolvable,
            re2.error,
        ):
            return True
        finally:
            _state.deadline = None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def compile_schema(schema: str, path: str, errors: list[FieldViolation]) -> JsonCheck | None:
    """The JsonCheck of `schema` (JSON text; empty: any JSON), or None with the reasons added to errors."""
    if not schema:
        return JsonCheck(None)
    if len(schema) > MAX_SCHEMA_CHARS:
        errors.append(FieldViolation(path, f"must be at most {MAX_SCHEMA_CHARS} characters"))
        return None
    try:
        document = json.loads(schema)
    except (ValueError, RecursionError) as error:
        errors.append(FieldViolation(path, f"is not valid JSON: {error}"))
        return None
    if not isinstance(document, dict | bool):
        errors.append(FieldViolation(path, "must be a JSON Schema object"))
        return None
    found: list[FieldViolation] = []
    try:
        _check_keywords(document, document, path, found)
        if not found and isinstance(document, dict):
            _check_size(document, path, found)
    except RecursionError:
        found.append(FieldViolation(path, "is nested too deeply"))
    if found:
        errors.extend(found)
        return None
    declared = document.get("$schema") if isinstance(document, dict) else None
    # A $schema naming no draft jsonschema knows is refused: otherwise it would guess the latest draft
    # (with a deprecation warning) and check the policy against rules its author did not write for.
    validator_for: Any = jsonschema.validators.validator_for(document, default=cast(Any, None))
    if validator_for is None and declared is not None:
        errors.append(
            FieldViolation(path, "names a $schema this server does not know; use a JSON Schema draft URI")
        )
        return None
    if isinstance(declared, str) and any(old in declared for old in _OLD_DRAFTS):
        errors.append(FieldViolation(f"{path}.$schema", "names a draft older than draft-06; use 2020-12"))
        return None
    validator_for = validator_for or jsonschema.validators.validator_for({})
    try:
        validator_for.check_schema(document)
        for pattern_path, pattern in _patterns(document, path):
            try:
                re2.compile(pattern)
            except re2.error as error:
                errors.append(FieldViolation(pattern_path, f"is not a valid RE2 expression: {error}"))
                return None
    except jsonschema.exceptions.SchemaError as error:
        errors.append(FieldViolation(path, f"is not a valid JSON Schema: {error.message}"))
        return None
    except RecursionError:
        errors.append(FieldViolation(path, "is nested too deeply"))
        return None
    return JsonCheck(document)


def _children(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(key, path, value) of the values of a schema node that may hold subschemas."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                yield key, f"{path}.{key}", value
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield "", f"{path}[{index}]", value


def _check_keywords(node: Any, root: Any, path: str, found: list[FieldViolation]) -> None:
    for key, child_path, value in _children(node, path):
        if isinstance(node, dict) and key in _REFUSED:
            found.append(FieldViolation(child_path, f"is not allowed: {_REFUSED[key]}"))
        elif isinstance(node, dict) and key == "$ref":
            if not isinstance(value, str) or _resolve(root, value) is None:
                found.append(
                    FieldViolation(
                        child_path,
                        f"{value!r} must point inside this schema, as '#' or a JSON pointer '#/...' to"
                        " a subschema; no URL, file or other document is read",
                    )
                )
        elif isinstance(value, dict | list):
            _check_keywords(value, root, child_path, found)


def _resolve(root: Any, ref: str) -> Any:
    """The subschema `ref` names in `root`, or None when it names no subschema of it."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node = root
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if "%" in token:
            return None
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node if isinstance(node, dict | bool) else None


def _check_size(root: dict[str, Any], path: str, found: list[FieldViolation]) -> None:
    """Refuses a `$ref` cycle, and a schema over MAX_SCHEMA_NODES subschemas with its refs expanded."""
    sizes: dict[int, int] = {}
    expanding: set[int] = set()

    def size(node: Any, at: str) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in expanding:
            raise _Cycle(at)
        expanding.add(key)
        total = 1 if isinstance(node, dict) else 0
        for name, child_path, value in _children(node, at):
            if isinstance(node, dict) and name in _DEFINITIONS:
                # Definitions apply only where a $ref points to them, and count there.
                continue
            if isinstance(node, dict) and name == "$ref":
                total += size(_resolve(root, value), child_path)
            elif isinstance(value, dict | list):
                total += size(value, child_path)
            if total > MAX_SCHEMA_NODES:
                break
        expanding.discard(key)
        sizes[key] = total
        return total

    try:
        total = size(root, path)
    except _Cycle as cycle:
        found.append(FieldViolation(cycle.path, "makes a $ref cycle; recursive schemas are not supported"))
        return
    if total > MAX_SCHEMA_NODES:
        found.append(
            FieldViolation(
                path,
                f"expands to more than {MAX_SCHEMA_NODES} subschemas once every $ref is followed;"
                " simplify it (every $ref counts the subschema it points to again)",
            )
        )


class _Cycle(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _patterns(node: Any, path: str) -> Iterator[tuple[str, str]]:
    for key, child_path, value in _children(node, path):
        if isinstance(node, dict) and key == "pattern" and isinstance(value, str):
            yield child_path, value
        elif isinstance(value, dict | list):
            yield from _patterns(value, child_path)
