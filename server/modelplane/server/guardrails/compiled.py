"""Compiling a policy revision, with its fallbacks checked, and keeping compiled revisions in this process.

A policy is compiled by the engine before it is stored, so a stored revision always compiles; revisions never
change, so a revision in the cache is never compiled again.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence

from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.guardrails.domain import MAX_TIME_BUDGET_MS, Policy, PolicyFields
from modelplane.server.guardrails.engine import (
    MAX_EXCERPT_CONTEXT,
    CheckTimeout,
    CompiledPolicy,
    Decision,
    compile_policy,
)
from modelplane.v1.error_reason_pb2 import ErrorReason

# Compiled policies kept in this process, least recently used first out.
MAX_COMPILED = 256
INVALID_RULE = ErrorReason.ERROR_REASON_INVALID_RULE
FALLBACK_BREAKS_POLICY = ErrorReason.ERROR_REASON_FALLBACK_BREAKS_POLICY
FALLBACK_CHECK_SECONDS = 1.0


def compile_fields(fields: PolicyFields, prefix: str, *, check_fallbacks: bool = True) -> CompiledPolicy:
    """Compiles a policy's rules, and refuses fallback content that would itself be redacted or blocked
    (or that the policy cannot check in time). A stored revision passed that check when it was written:
    compiled again, it skips it, so a loaded machine never turns a stored policy into an invalid one."""
    # An excerpt width or a budget out of range is the field checks' to name (validation.py); the compiler
    # judges the rules, with the width the policy could have.
    excerpt_context = fields.excerpt_context_chars
    try:
        compiled = compile_policy(
            fields.rules,
            fields.decisions,
            path=f"{prefix}.rules",
            excerpt_context=excerpt_context if 0 <= excerpt_context <= MAX_EXCERPT_CONTEXT else 0,
        )
    except InvalidArgument as exc:
        violations = _at_request_positions(exc.violations, f"{prefix}.rules", fields)
        raise InvalidArgument(violations, reason=INVALID_RULE) from None
    if not check_fallbacks:
        return compiled
    broken: list[tuple[str, str]] = []
    contents = [(f"{prefix}.fallback_content[{k!r}]", v) for k, v in sorted(fields.fallback_content.items())]
    if fields.default_fallback:
        contents.append((f"{prefix}.default_fallback", fields.default_fallback))
    # All fallbacks together get the policy's budget, and at least FALLBACK_CHECK_SECONDS: a tight budget
    # is for generated texts, and a fallback is checked once, here.
    budget_ms = min(fields.effective_time_budget_ms, MAX_TIME_BUDGET_MS)
    deadline = time.perf_counter() + max(budget_ms / 1000, FALLBACK_CHECK_SECONDS)
    for path, content in contents:
        try:
            result = compiled.check(content, deadline)
        except CheckTimeout:
            broken.append((path, "could not be checked in time against the rules; simplify the rules"))
            continue
        if result.decision is not Decision.ALLOW:
            rules = ", ".join(
                sorted({v.rule_id for v in result.violations if v.decision is not Decision.ALLOW})
            )
            broken.append(
                (path, f"would itself be {result.decision.name} by rule(s) {rules}; change the text")
            )
    if broken:
        raise InvalidArgument(
            [FieldViolation(path, message) for path, message in broken],
            reason=FALLBACK_BREAKS_POLICY,
        )
    return compiled


def _at_request_positions(
    violations: Sequence[FieldViolation], rules_path: str, fields: PolicyFields
) -> list[FieldViolation]:
    """The compiler's violations with each rule's index that of the request (conversion left out the rules
    without a kind, so the compiler's indexes count only the rules it was given)."""
    if not fields.rule_positions:
        return list(violations)
    index = re.compile(re.escape(rules_path) + r"\[(\d+)\]")

    def at_request(match: re.Match[str]) -> str:
        return f"{rules_path}[{fields.rule_position(int(match[1]))}]"

    return [FieldViolation(index.sub(at_request, v.field, count=1), v.description) for v in violations]


class CompiledCache:
    """Compiled revisions by (policy id, revision), the least recently used dropped past `size`."""

    def __init__(self, size: int = MAX_COMPILED) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, int], tuple[Policy, CompiledPolicy]] = OrderedDict()

    def get(self, policy_id: str, revision: int) -> tuple[Policy, CompiledPolicy] | None:
        key = (policy_id, revision)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def keep(self, policy: Policy, compiled: CompiledPolicy) -> None:
        key = (policy.id, policy.revision)
        self._entries[key] = (policy, compiled)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
