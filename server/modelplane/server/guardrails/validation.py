"""Field rules of the guardrails monitor's inputs; each broken rule is reported with its request field path.

What a rule checks (terms, expressions, schemas) is judged by the engine when it compiles the policy;
this module checks everything around it: names, ids, sizes, the decision table, budgets and links.
The checks of a request's fields add to one field_rules.Violations (beside what conversion refused), so
the answer names every bad field at once.
"""

from __future__ import annotations

import re

from modelplane.server.deployments.domain import TrafficSlot
from modelplane.server.errors import InvalidArgument, shown
from modelplane.server.field_rules import MAX_REQUEST_ID, Violations, check_text
from modelplane.server.guardrails.domain import (
    MAX_TIME_BUDGET_MS,
    POLICY_PREFIX,
    Links,
    PolicyFields,
    ShadowTarget,
)
from modelplane.server.guardrails.engine import MAX_EXCERPT_CONTEXT, MAX_TEXT_CHARS, Severity
from modelplane.v1.error_reason_pb2 import ErrorReason

# A policy id: 1 to 63 lower-case letters, digits and "-", starting with a letter (like a model id).
POLICY_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
# Rule ids and categories: 1 to 63 lower-case letters, digits, "_" and "-".
RULE_ID = re.compile(r"[a-z0-9_-]{1,63}")
_POLICY_NAME = re.compile(r"policies/(?P<policy>[^/]+)")
_MODEL_VERSION = re.compile(r"models/[a-z][a-z0-9-]{0,62}/versions/[1-9][0-9]{0,17}")
_DEPLOYMENT = re.compile(r"deployments/[a-z][a-z0-9-]{0,62}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")

MAX_RULES = 1000
MAX_FALLBACK_CHARS = 10_000
TEXT_TOO_LARGE = ErrorReason.ERROR_REASON_TEXT_TOO_LARGE

POLICY_MASK = frozenset(
    {
        "display_name",
        "description",
        "rules",
        "decisions",
        "fallback_content",
        "default_fallback",
        "fail_mode",
        "time_budget",
        "excerpt_context_chars",
    }
)


def check_policy_id(value: str, path: str) -> str:
    if not POLICY_ID.fullmatch(value):
        raise InvalidArgument.field(
            path,
            f"policy id {shown(value)} is not valid: use 1 to 63 lower-case letters, digits or '-',"
            " starting with a letter",
        )
    return value


def parse_policy_name(name: str, path: str) -> str:
    """The policy id of "policies/{policy}"."""
    match = _POLICY_NAME.fullmatch(name)
    if not match:
        raise InvalidArgument.field(
            path, f"{shown(name)} is not a policy name; expected {POLICY_PREFIX}{{policy}}"
        )
    return check_policy_id(match["policy"], path)


def check_revision(revision: int, path: str) -> None:
    if revision < 0:
        raise InvalidArgument.field(path, "must be 0 (the latest) or a revision number")


def check_policy_fields(
    v: Violations, fields: PolicyFields, prefix: str, paths: frozenset[str] | None = None
) -> None:
    """Checks the fields of a policy (only those in `paths` when given: an update mask) into `v`."""
    v.extend(fields.refused)

    def wanted(name: str) -> bool:
        return paths is None or name in paths

    if wanted("display_name"):
        check_text(v, f"{prefix}.display_name", fields.display_name, 200)
    if wanted("description"):
        check_text(v, f"{prefix}.description", fields.description, 4000)
    if wanted("rules"):
        if len(fields.rules) > MAX_RULES:
            v.add(f"{prefix}.rules", f"has {len(fields.rules)} rules; at most {MAX_RULES} are allowed")
        for i, rule in enumerate(fields.rules):
            path = f"{prefix}.rules[{fields.rule_position(i)}]"
            if not RULE_ID.fullmatch(rule.id):
                v.add(f"{path}.id", "must be 1 to 63 lower-case letters, digits, '_' or '-'")
            if not RULE_ID.fullmatch(rule.category):
                v.add(f"{path}.category", "must be 1 to 63 lower-case letters, digits, '_' or '-'")
        for i, description in enumerate(fields.rule_descriptions):
            check_text(v, f"{prefix}.rules[{i}].description", description, 1000)
    if wanted("decisions"):
        for severity in Severity:
            if severity not in fields.decisions:
                v.add(f"{prefix}.decisions.{severity.name.lower()}", "must be ALLOW, REDACT or BLOCK")
    if wanted("fallback_content"):
        for category, content in fields.fallback_content.items():
            path = f"{prefix}.fallback_content[{category!r}]"
            if not RULE_ID.fullmatch(category):
                v.add(path, "key must be a rule category: 1 to 63 lower-case letters, digits, '_' or '-'")
            check_text(v, path, content, MAX_FALLBACK_CHARS)
    if wanted("default_fallback"):
        check_text(v, f"{prefix}.default_fallback", fields.default_fallback, MAX_FALLBACK_CHARS)
    if wanted("time_budget") and not 0 <= fields.time_budget_ms <= MAX_TIME_BUDGET_MS:
        v.add(
            f"{prefix}.time_budget",
            f"must be from 0 (the default, 1 s) to {MAX_TIME_BUDGET_MS // 1000} s, in whole milliseconds",
        )
    if wanted("excerpt_context_chars") and not 0 <= fields.excerpt_context_chars <= MAX_EXCERPT_CONTEXT:
        v.add(
            f"{prefix}.excerpt_context_chars",
            f"must be from 0 (excerpts show the masked match alone) to {MAX_EXCERPT_CONTEXT} characters",
        )


def check_links(v: Violations, links: Links, prefix: str) -> None:
    v.extend(links.refused)
    if links.model_version and not _MODEL_VERSION.fullmatch(links.model_version):
        v.add(f"{prefix}.model_version", "must be a version name, models/{model}/versions/{n}, or empty")
    if links.deployment and not _DEPLOYMENT.fullmatch(links.deployment):
        v.add(f"{prefix}.deployment", "must be a deployment name, deployments/{deployment}, or empty")
    if links.trace_id and not _TRACE_ID.fullmatch(links.trace_id):
        v.add(f"{prefix}.trace_id", "must be a W3C trace id of 32 lower-case hex digits, or empty")
    check_text(v, f"{prefix}.request_id", links.request_id, MAX_REQUEST_ID)


def check_shadow_target(v: Violations, target: ShadowTarget) -> None:
    v.extend(target.refused)
    if target.deployment and not _DEPLOYMENT.fullmatch(target.deployment):
        v.add("deployment", "must be a deployment name, deployments/{deployment}, or empty (every check)")
    if target.traffic_slot is not TrafficSlot.NONE and not target.deployment:
        v.add("traffic_slot", "narrows the shadow to a slot of a deployment: set deployment too")


def check_text_size(size: int, path: str) -> None:
    """Refuses a text over the documented limit before any engine sees it."""
    if size > MAX_TEXT_CHARS:
        raise InvalidArgument.field(
            path,
            f"is {size} characters long; at most {MAX_TEXT_CHARS} are checked: split the text",
            reason=TEXT_TOO_LARGE,
        )
