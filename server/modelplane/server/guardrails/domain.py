"""The guardrails monitor's domain values: frozen dataclasses that never carry a proto message.

Rules are the engine's own rule specs (modelplane.server.guardrails.engine); this module adds what
a policy holds around them, what a check answers, the stored records, and the JSON form of a policy
revision (enums in their stored, lower-case form).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from modelplane.server.deployments.domain import TrafficSlot
from modelplane.server.errors import FieldViolation
from modelplane.server.guardrails.engine import (
    DEFAULT_DECISIONS,
    BannedTerms,
    Decision,
    Json,
    Length,
    Pattern,
    Pii,
    PiiKind,
    RequiredPattern,
    RuleSpec,
    Severity,
)

T = TypeVar("T")

POLICY_PREFIX = "policies/"
VIOLATION_PREFIX = "violations/"
# A time budget of 0 means this one.
DEFAULT_TIME_BUDGET_MS = 1000
MAX_TIME_BUDGET_MS = 60_000


class FailMode(StrEnum):
    """What a check answers when it runs out of time; the values are the stored form."""

    OPEN = "open"
    CLOSED = "closed"


def stored(value: Severity | Decision) -> str:
    """The stored SQL form of a severity or decision: its lower-case name."""
    return value.name.lower()


def severity_of(stored_form: str) -> Severity:
    return Severity[stored_form.upper()]


def decision_of(stored_form: str) -> Decision:
    return Decision[stored_form.upper()]


def policy_name(policy_id: str) -> str:
    return f"{POLICY_PREFIX}{policy_id}"


def violation_name(violation_id: str) -> str:
    return f"{VIOLATION_PREFIX}{violation_id}"


@dataclass(frozen=True)
class PolicyFields:
    """What a caller sets on a policy; one revision is one of these, immutable."""

    fail_mode: FailMode
    display_name: str = ""
    description: str = ""
    rules: tuple[RuleSpec, ...] = ()
    # Rule descriptions, by position in `rules`.
    rule_descriptions: tuple[str, ...] = ()
    decisions: Mapping[Severity, Decision] = field(default_factory=lambda: dict(DEFAULT_DECISIONS))
    fallback_content: Mapping[str, str] = field(default_factory=dict)
    default_fallback: str = ""
    # 0 means DEFAULT_TIME_BUDGET_MS.
    time_budget_ms: int = 0
    # Characters of text an excerpt shows on each side of its match; 0: the masked match alone.
    excerpt_context_chars: int = 0
    # What conversion could not read from the request (an unknown enum number, a bad duration): reported by
    # validation beside every other bad field; never stored, never compared.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)
    # The request's index of each of `rules`, when conversion refused some rules (so the compiler's paths
    # name the request's rules); empty when `rules` are the request's, in order.
    rule_positions: tuple[int, ...] = field(default=(), compare=False)

    @property
    def effective_time_budget_ms(self) -> int:
        return self.time_budget_ms or DEFAULT_TIME_BUDGET_MS

    def rule_position(self, index: int) -> int:
        """The request's index of `rules[index]`."""
        return self.rule_positions[index] if self.rule_positions else index


@dataclass(frozen=True)
class ShadowTarget:
    """Which checks a shadow evaluates: those linked to `deployment` (empty: every check against the active
    revision), and of it to `traffic_slot` (NONE: any slot)."""

    deployment: str = ""
    traffic_slot: TrafficSlot = TrafficSlot.NONE
    # What conversion could not read from the request (an unknown enum number, a bad duration): reported by
    # validation beside every other bad field; never stored, never compared.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)

    def matches(self, links: Links) -> bool:
        if self.deployment and links.deployment != self.deployment:
            return False
        return self.traffic_slot is TrafficSlot.NONE or links.traffic_slot is self.traffic_slot


@dataclass(frozen=True)
class Policy:
    """A policy at one revision."""

    id: str
    revision: int
    fields: PolicyFields
    create_time: datetime
    update_time: datetime
    etag: str
    # The revision evaluated in shadow next to the active one; 0: none. A state of the policy, not of the
    # revision: every revision read shows the current one, as it shows the current etag.
    shadow_revision: int = 0
    # What the shadow is narrowed to (see ShadowTarget).
    shadow_target: ShadowTarget = field(default_factory=ShadowTarget)

    @property
    def name(self) -> str:
        return policy_name(self.id)


@dataclass(frozen=True)
class Links:
    """The typed ids of the checked event, stored with its records."""

    model_version: str = ""
    deployment: str = ""
    traffic_slot: TrafficSlot = TrafficSlot.NONE
    trace_id: str = ""
    # The caller's request id (EventLinks.request_id), so records join with the request's other events.
    request_id: str = ""
    # What conversion could not read from the request (an unknown enum number, a bad duration): reported by
    # validation beside every other bad field; never stored, never compared.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class FoundViolation:
    """A violation as a check reports it (no matched text: that never leaves the service)."""

    rule_id: str
    severity: Severity
    category: str
    decision: Decision
    start: int
    end: int
    excerpt: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check."""

    policy_id: str
    policy_revision: int
    decision: Decision
    violations: tuple[FoundViolation, ...]
    highest_severity: Severity | None
    fail_mode: FailMode
    redacted_text: str = ""
    fallback_content: str = ""
    unchecked: bool = False
    check_id: str = ""
    final: bool = True
    # Rule id -> matches found but not listed in `violations` (nor stored).
    omitted: Mapping[str, int] = field(default_factory=dict)
    redaction_too_large: bool = False

    @property
    def violation_count(self) -> int:
        """Every violation found, listed or not."""
        return len(self.violations) + sum(self.omitted.values())


@dataclass(frozen=True)
class StreamProgress:
    """Violations newly certain in a streamed check, and how much text has arrived."""

    violations: tuple[FoundViolation, ...]
    received_chars: int


@dataclass(frozen=True)
class StreamStart:
    policy: str
    policy_revision: int
    links: Links
    # The stream's own request id: a repeat of the stream stores no second record.
    request_id: str = ""


@dataclass(frozen=True)
class StreamChunk:
    text: str


@dataclass(frozen=True)
class StreamEnd:
    pass


# What a CheckStream caller sends, in order: one start, chunks, one end.
StreamEvent = StreamStart | StreamChunk | StreamEnd


@dataclass(frozen=True)
class ViolationRecord:
    id: str
    check_id: str
    policy_id: str
    policy_revision: int
    rule_id: str
    severity: Severity
    category: str
    decision: Decision
    check_decision: Decision
    links: Links
    start: int
    end: int
    excerpt: str
    matched_hash: bytes
    create_time: datetime

    @property
    def name(self) -> str:
        return violation_name(self.id)


class GroupBy(StrEnum):
    """A dimension of AggregateViolations."""

    POLICY = "policy"
    RULE = "rule"
    SEVERITY = "severity"
    MODEL_VERSION = "model_version"
    DEPLOYMENT = "deployment"
    TRAFFIC_SLOT = "traffic_slot"
    TIME_BUCKET = "time_bucket"


@dataclass(frozen=True)
class AggregateQuery:
    group_by: tuple[GroupBy, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None
    # Whole seconds; 0 when not grouping by time bucket.
    bucket_seconds: int = 0
    policy_id: str = ""
    # What conversion could not read from the request (an unknown enum number, a bad duration): reported by
    # validation beside every other bad field; never stored, never compared.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ViolationGroup:
    policy_id: str = ""
    rule_id: str = ""
    severity: Severity | None = None
    model_version: str = ""
    deployment: str = ""
    traffic_slot: TrafficSlot = TrafficSlot.NONE
    bucket_start: datetime | None = None
    checks: int = 0
    checks_with_violations: int = 0
    violations: int = 0
    blocked_checks: int = 0

    @property
    def violation_rate(self) -> float:
        return self.checks_with_violations / self.checks if self.checks else 0.0

    @property
    def block_rate(self) -> float:
        return self.blocked_checks / self.checks if self.checks else 0.0


@dataclass(frozen=True)
class ShadowQuery:
    """GetShadowReport's window over one shadow revision of a policy."""

    policy_id: str
    shadow_revision: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    # What conversion could not read from the request (an unknown enum number, a bad duration): reported by
    # validation beside every other bad field; never stored, never compared.
    refused: tuple[FieldViolation, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ShadowCount:
    """How many checks of a window had one combination of outcomes."""

    active_revision: int
    active_decision: Decision
    active_unchecked: bool
    shadow_decision: Decision
    # 'checked', 'unchecked' (out of the shadow's budget) or 'skipped' (the shadow queue was full)
    shadow_outcome: str
    checks: int


@dataclass(frozen=True)
class RuleDifference:
    rule_id: str
    active_only: int
    shadow_only: int
    decision_changed: int


@dataclass(frozen=True)
class ShadowSample:
    """A violation the shadow found in a check it decided differently; never the matched text."""

    id: str
    policy_id: str
    active_revision: int
    shadow_revision: int
    rule_id: str
    severity: Severity
    category: str
    decision: Decision
    shadow_decision: Decision
    active_decision: Decision
    links: Links
    start: int
    end: int
    excerpt: str
    matched_hash: bytes
    create_time: datetime


@dataclass(frozen=True)
class ShadowReport:
    """The stored counts of a shadow over a window; the rates are derived from them."""

    policy_id: str
    shadow_revision: int
    counts: tuple[ShadowCount, ...]
    rule_differences: tuple[RuleDifference, ...]
    samples: tuple[ShadowSample, ...]

    @property
    def evaluated(self) -> tuple[ShadowCount, ...]:
        return tuple(c for c in self.counts if c.shadow_outcome != "skipped")

    @property
    def checks(self) -> int:
        return sum(c.checks for c in self.evaluated)

    @property
    def skipped(self) -> int:
        return sum(c.checks for c in self.counts if c.shadow_outcome == "skipped")

    @property
    def changed_decisions(self) -> int:
        return sum(c.checks for c in self.evaluated if c.active_decision is not c.shadow_decision)

    @property
    def active_revisions(self) -> tuple[int, ...]:
        return tuple(sorted({c.active_revision for c in self.evaluated}))

    def active_count(self, decision: Decision) -> int:
        return sum(c.checks for c in self.evaluated if c.active_decision is decision)

    def shadow_count(self, decision: Decision) -> int:
        return sum(c.checks for c in self.evaluated if c.shadow_decision is decision)

    @property
    def active_unchecked(self) -> int:
        return sum(c.checks for c in self.evaluated if c.active_unchecked)

    @property
    def shadow_unchecked(self) -> int:
        return sum(c.checks for c in self.evaluated if c.shadow_outcome == "unchecked")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_page_token: str


# ---- the JSON form of a revision (policy_revisions.body, change snapshots, request-id results)


def _kind_to_json(kind: BannedTerms | Pattern | Pii | Length | Json | RequiredPattern) -> dict[str, Any]:
    if isinstance(kind, BannedTerms):
        return {
            "banned_terms": {
                "terms": list(kind.terms),
                "case_sensitive": kind.case_sensitive,
                "whole_words": kind.whole_words,
            }
        }
    if isinstance(kind, Pattern):
        return {"regex": {"pattern": kind.pattern, "case_sensitive": kind.case_sensitive}}
    if isinstance(kind, Pii):
        return {"pii": {"kinds": [k.value for k in kind.kinds]}}
    if isinstance(kind, Length):
        return {"length": {"min_chars": kind.min_chars, "max_chars": kind.max_chars}}
    if isinstance(kind, Json):
        return {"json": {"schema": kind.schema}}
    return {"required_pattern": {"pattern": kind.pattern}}


def _kind_from_json(data: Mapping[str, Any]) -> BannedTerms | Pattern | Pii | Length | Json | RequiredPattern:
    if "banned_terms" in data:
        d = data["banned_terms"]
        return BannedTerms(
            tuple(d["terms"]), case_sensitive=d["case_sensitive"], whole_words=d["whole_words"]
        )
    if "regex" in data:
        d = data["regex"]
        return Pattern(d["pattern"], case_sensitive=d["case_sensitive"])
    if "pii" in data:
        return Pii(tuple(PiiKind(k) for k in data["pii"]["kinds"]))
    if "length" in data:
        d = data["length"]
        return Length(min_chars=d["min_chars"], max_chars=d["max_chars"])
    if "json" in data:
        return Json(data["json"]["schema"])
    return RequiredPattern(data["required_pattern"]["pattern"])


def fields_to_json(fields: PolicyFields) -> dict[str, Any]:
    rules = []
    for i, rule in enumerate(fields.rules):
        description = fields.rule_descriptions[i] if i < len(fields.rule_descriptions) else ""
        rules.append(
            {
                "id": rule.id,
                "severity": stored(rule.severity),
                "category": rule.category,
                "description": description,
                "kind": _kind_to_json(rule.kind),
            }
        )
    return {
        "display_name": fields.display_name,
        "description": fields.description,
        "rules": rules,
        "decisions": {stored(s): stored(d) for s, d in fields.decisions.items()},
        "fallback_content": dict(fields.fallback_content),
        "default_fallback": fields.default_fallback,
        "fail_mode": fields.fail_mode.value,
        "time_budget_ms": fields.time_budget_ms,
        "excerpt_context_chars": fields.excerpt_context_chars,
    }


def fields_from_json(data: Mapping[str, Any]) -> PolicyFields:
    rules = tuple(
        RuleSpec(
            id=r["id"],
            severity=severity_of(r["severity"]),
            category=r["category"],
            kind=_kind_from_json(r["kind"]),
        )
        for r in data["rules"]
    )
    return PolicyFields(
        display_name=data["display_name"],
        description=data["description"],
        rules=rules,
        rule_descriptions=tuple(r["description"] for r in data["rules"]),
        decisions={severity_of(s): decision_of(d) for s, d in data["decisions"].items()},
        fallback_content=dict(data["fallback_content"]),
        default_fallback=data["default_fallback"],
        fail_mode=FailMode(data["fail_mode"]),
        time_budget_ms=int(data["time_budget_ms"]),
        # Revisions stored before excerpts had a choice of context show none now.
        excerpt_context_chars=int(data.get("excerpt_context_chars", 0)),
    )


def policy_to_json(policy: Policy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "revision": policy.revision,
        "fields": fields_to_json(policy.fields),
        "create_time": policy.create_time.isoformat(),
        "update_time": policy.update_time.isoformat(),
        "etag": policy.etag,
        "shadow_revision": policy.shadow_revision,
        "shadow_deployment": policy.shadow_target.deployment,
        "shadow_traffic_slot": policy.shadow_target.traffic_slot.value,
    }


def policy_from_json(data: Mapping[str, Any]) -> Policy:
    return Policy(
        id=data["id"],
        revision=int(data["revision"]),
        fields=fields_from_json(data["fields"]),
        create_time=datetime.fromisoformat(data["create_time"]),
        update_time=datetime.fromisoformat(data["update_time"]),
        etag=data["etag"],
        shadow_revision=int(data.get("shadow_revision", 0)),
        shadow_target=ShadowTarget(
            data.get("shadow_deployment", ""), TrafficSlot(data.get("shadow_traffic_slot", ""))
        ),
    )
