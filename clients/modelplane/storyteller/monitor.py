"""What NarrativeGenerator needs of the guardrails monitor, and the monitor's verdict as plain values.

`GuardrailMonitor` is the one call the story teller makes (GuardrailClient satisfies it as it is);
`Verdict` is a CheckVerdict read into frozen values, so nothing past this module handles protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from modelplane.client.retry import is_unreachable
from modelplane.v1 import common_pb2, guardrails_pb2

__all__ = [
    "Decision",
    "GuardrailMonitor",
    "Severity",
    "Verdict",
    "ViolationSummary",
    "monitor_unreachable",
    "verdict_from_message",
]


class Decision(StrEnum):
    """What a check decided for the text; the strictest decision of its violations wins."""

    ALLOW = "allow"
    REDACT = "redact"
    BLOCK = "block"


class Severity(StrEnum):
    """How serious a rule's finding is; the policy's decision table maps it to a Decision."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


_DECISIONS = {
    guardrails_pb2.DECISION_ALLOW: Decision.ALLOW,
    guardrails_pb2.DECISION_REDACT: Decision.REDACT,
    guardrails_pb2.DECISION_BLOCK: Decision.BLOCK,
}
_SEVERITIES = {
    guardrails_pb2.SEVERITY_INFO: Severity.INFO,
    guardrails_pb2.SEVERITY_WARNING: Severity.WARNING,
    guardrails_pb2.SEVERITY_ERROR: Severity.ERROR,
    guardrails_pb2.SEVERITY_CRITICAL: Severity.CRITICAL,
}


class GuardrailMonitor(Protocol):
    """What NarrativeGenerator needs of the monitor (modelplane.client.guardrails.GuardrailClient)."""

    async def check_content(
        self,
        *,
        policy: str,
        text: str,
        policy_revision: int = 0,
        links: common_pb2.EventLinks | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- a gRPC deadline, not an asyncio timeout
    ) -> guardrails_pb2.CheckVerdict:
        """Check `text` against the policy (at `policy_revision`, 0: its latest) and return the verdict."""
        ...


@dataclass(frozen=True)
class ViolationSummary:
    """One rule's finding. The span is in characters of the checked text, end exclusive; the excerpt
    is a short window around it with the sensitive part masked, never the matched text itself."""

    rule_id: str
    severity: Severity | None
    category: str
    # decision is what the policy's table decides for this violation's severity.
    decision: Decision | None
    start: int
    end: int
    excerpt: str

    def describe(self) -> str:
        """ "rule-id (severity, category)", for messages."""
        severity = self.severity.value if self.severity is not None else "unknown severity"
        details = f"{severity}, {self.category}" if self.category else severity
        return f"{self.rule_id} ({details})"


@dataclass(frozen=True)
class Verdict:
    """The monitor's answer to one check.

    `redacted_text` is set when the decision is REDACT, `fallback_content` when it is BLOCK. `checked` is
    False when the monitor let its own fail mode decide (its time budget ran out), not its rules.
    """

    decision: Decision
    violations: tuple[ViolationSummary, ...]
    policy_revision: int
    highest_severity: Severity | None
    redacted_text: str
    fallback_content: str
    checked: bool


def verdict_from_message(verdict: guardrails_pb2.CheckVerdict) -> Verdict:
    """A CheckVerdict as plain values; an unknown decision reads as BLOCK, the safe side."""
    violations = tuple(
        ViolationSummary(
            rule_id=violation.rule_id,
            severity=_SEVERITIES.get(violation.severity),
            category=violation.category,
            decision=_DECISIONS.get(violation.decision),
            start=violation.span.start,
            end=violation.span.end,
            excerpt=violation.excerpt,
        )
        for violation in verdict.violations
    )
    return Verdict(
        decision=_DECISIONS.get(verdict.decision, Decision.BLOCK),
        violations=violations,
        policy_revision=verdict.policy_revision,
        highest_severity=_SEVERITIES.get(verdict.highest_severity),
        redacted_text=verdict.redacted_text,
        fallback_content=verdict.fallback_content,
        checked=not verdict.unchecked,
    )


def monitor_unreachable(error: BaseException) -> bool:
    """Whether `error` means the monitor could not be reached or did not answer in time, as opposed to a
    refusal (unknown policy, denied token, bad request), which is a configuration error."""
    return is_unreachable(error)
