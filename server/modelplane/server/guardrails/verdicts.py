"""How an engine result becomes the verdict a caller gets: violations, fallback, redacted text, fail mode."""

from __future__ import annotations

from modelplane.server.guardrails.domain import FailMode, FoundViolation, Policy, PolicyFields, Verdict
from modelplane.server.guardrails.engine import CheckResult, Decision
from modelplane.server.guardrails.engine import Violation as EngineViolation


def found(v: EngineViolation) -> FoundViolation:
    return FoundViolation(
        rule_id=v.rule_id,
        severity=v.severity,
        category=v.category,
        decision=v.decision,
        start=v.start,
        end=v.end,
        excerpt=v.excerpt,
    )


def fallback_for(fields: PolicyFields, violations: tuple[FoundViolation, ...]) -> str:
    """The fallback of the category of the highest-severity blocking violation (the first on a tie)."""
    blocking = [v for v in violations if v.decision is Decision.BLOCK]
    if not blocking:
        return fields.default_fallback
    strictest = max(blocking, key=lambda v: v.severity)
    return fields.fallback_content.get(strictest.category, fields.default_fallback)


def verdict_of(policy: Policy, result: CheckResult) -> Verdict:
    violations = tuple(found(v) for v in result.violations)
    return Verdict(
        policy_id=policy.id,
        policy_revision=policy.revision,
        decision=result.decision,
        violations=violations,
        highest_severity=result.highest_severity,
        fail_mode=policy.fields.fail_mode,
        redacted_text=(result.redacted_text or "") if result.decision is Decision.REDACT else "",
        fallback_content=fallback_for(policy.fields, violations) if result.decision is Decision.BLOCK else "",
        omitted=result.omitted,
        redaction_too_large=result.redaction_too_large,
    )


def unchecked_verdict(policy: Policy) -> Verdict:
    """What the fail mode answers when a check ran out of its time budget."""
    closed = policy.fields.fail_mode is FailMode.CLOSED
    return Verdict(
        policy_id=policy.id,
        policy_revision=policy.revision,
        decision=Decision.BLOCK if closed else Decision.ALLOW,
        violations=(),
        highest_severity=None,
        fail_mode=policy.fields.fail_mode,
        fallback_content=policy.fields.default_fallback if closed else "",
        unchecked=True,
    )


def early_block(policy: Policy, found_so_far: tuple[FoundViolation, ...]) -> Verdict:
    """A stream's verdict sent as soon as a BLOCK is certain, before the end of the text."""
    return Verdict(
        policy_id=policy.id,
        policy_revision=policy.revision,
        decision=Decision.BLOCK,
        violations=found_so_far,
        highest_severity=max((v.severity for v in found_so_far), default=None),
        fail_mode=policy.fields.fail_mode,
        fallback_content=fallback_for(policy.fields, found_so_far),
        final=False,
    )
