"""Field rules of the registry's inputs; each broken rule is reported with its request field path."""

from __future__ import annotations

import re

from modelplane.server.errors import InvalidArgument
from modelplane.server.field_rules import CURRENCY_CODE, Violations, check_labels, check_text
from modelplane.server.registry import names
from modelplane.server.registry.domain import CAPABILITIES, ModelFields, Pricing, VersionFields

_PROVIDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_model_fields(fields: ModelFields, prefix: str, paths: frozenset[str] | None = None) -> None:
    """Checks the fields of a model (only those in `paths` when given: an update mask)."""
    v = Violations()

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
    v.raise_if_any()


def check_pricing(v: Violations, path: str, pricing: Pricing | None) -> None:
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


def check_version_fields(fields: VersionFields, prefix: str, pricing_given: bool) -> None:
    v = Violations()
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
    check_pricing(v, f"{prefix}.pricing", fields.pricing if pricing_given else None)
    check_labels(v, f"{prefix}.labels", fields.labels)
    if fields.parent_version:
        try:
            names.parse_version(fields.parent_version, f"{prefix}.lineage.parent_version")
        except InvalidArgument as exc:
            v.items.extend(exc.violations)
    check_text(v, f"{prefix}.lineage.source_run", fields.source_run, 1000)
    v.raise_if_any()
