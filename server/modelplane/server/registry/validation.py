"""Field rules of the registry's inputs: each request's checks, every broken rule named with its field path.

Each `check_*` takes every field of one request a rule applies to, collects all the violations into one
field_rules.Violations, and raises once (INVALID_ARGUMENT naming every bad field) before the service
reads or writes anything; otherwise it returns what it parsed.
"""

from __future__ import annotations

import re

from modelplane.pricing import Prices
from modelplane.server.field_rules import (
    CURRENCY_CODE,
    Violations,
    check_labels,
    check_mask,
    check_request_id,
    check_text,
)
from modelplane.server.registry import names
from modelplane.server.registry.domain import CAPABILITIES, ModelFields, VersionFields, VersionUpdate

_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MODEL_MASK = frozenset({"provider", "display_name", "description", "labels"})
VERSION_MASK = frozenset({"description", "state", "labels"})
MAX_REASON = 1000


def _model_fields(v: Violations, fields: ModelFields, prefix: str, paths: frozenset[str] | None) -> None:
    """The fields of a model (only those in `paths` when given: an update mask)."""

    def wanted(name: str) -> bool:
        return paths is None or name in paths

    if wanted("provider"):
        if not fields.provider:
            v.add(f"{prefix}.provider", "is required, e.g. 'openai', 'anthropic' or 'local'")
        elif not _PROVIDER.fullmatch(fields.provider):
            v.add(f"{prefix}.provider", "must be 1 to 63 lower-case letters, digits, '.', '_' or '-'")
    if wanted("display_name"):
        check_text(v, f"{prefix}.display_name", fields.display_name, 200)
    if wanted("description"):
        check_text(v, f"{prefix}.description", fields.description, 4000)
    if wanted("labels"):
        check_labels(v, f"{prefix}.labels", fields.labels)


def _pricing(v: Violations, path: str, pricing: Prices | None) -> None:
    if pricing is None:
        v.add(path, "is required: the price per million tokens (zero for a free model)")
        return
    if not CURRENCY_CODE.fullmatch(pricing.currency_code):
        v.add(f"{path}.currency_code", "must be an ISO 4217 code of three upper-case letters, e.g. 'USD'")
    for field_name, value in (
        ("input_micros_per_million", pricing.input),
        ("output_micros_per_million", pricing.output),
        ("cached_input_micros_per_million", pricing.cached_input),
        ("reasoning_micros_per_million", pricing.reasoning),
    ):
        if value is not None and value < 0:
            v.add(f"{path}.{field_name}", "must be zero or more")


def _version_fields(v: Violations, fields: VersionFields, prefix: str, pricing_given: bool) -> None:
    v.extend(fields.refused)
    check_text(v, f"{prefix}.description", fields.description, 4000)
    if not fields.source_uri:
        v.add(f"{prefix}.source_uri", "is required: where the weights are, or the provider's model id")
    check_text(v, f"{prefix}.source_uri", fields.source_uri, 2000)
    if fields.source_sha256 and not _SHA256.fullmatch(fields.source_sha256):
        v.add(f"{prefix}.source_sha256", "must be 64 lower-case hex digits, or empty for a hosted model")
    seen: set[str] = set()
    for i, capability in enumerate(fields.capabilities):
        if capability not in CAPABILITIES:
            v.add(f"{prefix}.capabilities[{i}]", f"must be one of {', '.join(CAPABILITIES)}")
        elif capability in seen:
            v.add(f"{prefix}.capabilities[{i}]", f"{capability!r} is listed twice")
        seen.add(capability)
    if fields.context_window <= 0:
        v.add(f"{prefix}.context_window", "is required and must be positive")
    if fields.max_output_tokens <= 0:
        v.add(f"{prefix}.max_output_tokens", "is required and must be positive")
    elif fields.context_window > 0 and fields.max_output_tokens > fields.context_window:
        v.add(f"{prefix}.max_output_tokens", f"must be at most context_window ({fields.context_window})")
    _pricing(v, f"{prefix}.pricing", fields.pricing if pricing_given else None)
    check_labels(v, f"{prefix}.labels", fields.labels)
    if fields.parent_version:
        path = f"{prefix}.lineage.parent_version"
        v.collect(lambda: names.parse_version(fields.parent_version, path), None)
    check_text(v, f"{prefix}.lineage.source_run", fields.source_run, 1000)


def _expected_version(v: Violations, model_id: str, expected_version: str | None) -> int | None:
    """The number of an alias move's expected version (None: absent or empty)."""
    if not expected_version:
        return None
    parsed = v.collect(lambda: names.parse_version(expected_version, "expected_version"), None)
    if parsed is None:
        return None
    expected_model, expected = parsed
    if model_id and expected_model != model_id:
        v.add("expected_version", f"must be a version of models/{model_id}")
    return expected


# ---- one function a request


def check_create_model(model_id: str, fields: ModelFields, request_id: str) -> None:
    v = Violations()
    v.collect(lambda: names.check_id(model_id, "model_id", "model id"), "")
    _model_fields(v, fields, "model", None)
    check_request_id(request_id, v)
    v.raise_if_any()


def check_update_model(
    name: str, fields: ModelFields, paths: frozenset[str], request_id: str
) -> tuple[str, frozenset[str]]:
    """(model id, the fields to update)."""
    v = Violations()
    model_id = v.collect(lambda: names.parse_model(name, "model.name"), "")
    paths = v.collect(lambda: check_mask(paths, MODEL_MASK), paths & MODEL_MASK)
    _model_fields(v, fields, "model", paths)
    check_request_id(request_id, v)
    v.raise_if_any()
    return model_id, paths


def check_create_version(parent: str, fields: VersionFields, pricing_given: bool, request_id: str) -> str:
    """The parent's model id."""
    v = Violations()
    model_id = v.collect(lambda: names.parse_model(parent, "parent"), "")
    _version_fields(v, fields, "model_version", pricing_given)
    check_request_id(request_id, v)
    v.raise_if_any()
    return model_id


def check_update_version(
    name: str, update: VersionUpdate, paths: frozenset[str], request_id: str
) -> tuple[str, int, frozenset[str]]:
    """(model id, version number, the fields to update)."""
    v = Violations()
    model_id, number = v.collect(lambda: names.parse_version(name, "model_version.name"), ("", 0))
    paths = v.collect(lambda: check_mask(paths, VERSION_MASK), paths & VERSION_MASK)
    v.extend(update.refused)
    if "state" in paths and update.state is None and not update.refused:
        v.add("model_version.state", "must be READY, DEPRECATED or ARCHIVED")
    if "description" in paths:
        check_text(v, "model_version.description", update.description, 4000)
    if "labels" in paths:
        check_labels(v, "model_version.labels", update.labels)
    check_request_id(request_id, v)
    v.raise_if_any()
    return model_id, number, paths


def check_set_alias(
    name: str, version: str, expected_version: str | None, reason: str, request_id: str
) -> tuple[str, str, int, int | None]:
    """(model id, alias, the version's number, the expected version's number or None)."""
    v = Violations()
    model_id, alias = v.collect(lambda: names.parse_alias(name, "name"), ("", ""))
    target_model, number = v.collect(lambda: names.parse_version(version, "version"), ("", 0))
    if model_id and target_model and target_model != model_id:
        v.add("version", f"must be a version of models/{model_id}, not of models/{target_model}")
    expected = _expected_version(v, model_id, expected_version)
    check_text(v, "reason", reason, MAX_REASON)
    check_request_id(request_id, v)
    v.raise_if_any()
    return model_id, alias, number, expected


def check_delete_alias(
    name: str, expected_version: str, reason: str, request_id: str
) -> tuple[str, str, int | None]:
    """(model id, alias, the expected version's number or None)."""
    v = Violations()
    model_id, alias = v.collect(lambda: names.parse_alias(name, "name"), ("", ""))
    expected = _expected_version(v, model_id, expected_version)
    check_text(v, "reason", reason, MAX_REASON)
    check_request_id(request_id, v)
    v.raise_if_any()
    return model_id, alias, expected
