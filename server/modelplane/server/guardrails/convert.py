"""Conversions between the guardrails monitor's proto messages and its domain values, in one place.

Enum values that are UNSPECIFIED or unknown on input are refused here with the field's path, so no
proto enum number ever reaches the service. A refused field goes into the domain value's `refused`, which
the service reports beside every other bad field of the request, instead of raising here alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import duration_pb2

from modelplane.server.deployments.convert import SLOT_FROM_PROTO, SLOT_TO_PROTO
from modelplane.server.deployments.domain import TrafficSlot
from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.guardrails.domain import (
    DEFAULT_TIME_BUDGET_MS,
    AggregateQuery,
    FailMode,
    FoundViolation,
    GroupBy,
    Links,
    Policy,
    PolicyFields,
    ShadowQuery,
    ShadowReport,
    ShadowSample,
    ShadowTarget,
    StreamChunk,
    StreamEnd,
    StreamEvent,
    StreamProgress,
    StreamStart,
    Verdict,
    ViolationGroup,
    ViolationRecord,
    policy_name,
)
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
from modelplane.server.proto_time import datetime_from, duration_valid, timestamp
from modelplane.v1 import common_pb2
from modelplane.v1 import guardrails_pb2 as pb

SEVERITY_TO_PROTO = {
    Severity.INFO: pb.SEVERITY_INFO,
    Severity.WARNING: pb.SEVERITY_WARNING,
    Severity.ERROR: pb.SEVERITY_ERROR,
    Severity.CRITICAL: pb.SEVERITY_CRITICAL,
}
SEVERITY_FROM_PROTO = {number: s for s, number in SEVERITY_TO_PROTO.items()}
DECISION_TO_PROTO = {
    Decision.ALLOW: pb.DECISION_ALLOW,
    Decision.REDACT: pb.DECISION_REDACT,
    Decision.BLOCK: pb.DECISION_BLOCK,
}
DECISION_FROM_PROTO = {number: d for d, number in DECISION_TO_PROTO.items()}
_FAIL_MODE_TO_PROTO = {FailMode.OPEN: pb.FAIL_MODE_OPEN, FailMode.CLOSED: pb.FAIL_MODE_CLOSED}
_FAIL_MODE_FROM_PROTO = {number: m for m, number in _FAIL_MODE_TO_PROTO.items()}
_PII_TO_PROTO = {kind: pb.PiiKind.Value(f"PII_KIND_{kind.name}") for kind in PiiKind}
_PII_FROM_PROTO = {number: kind for kind, number in _PII_TO_PROTO.items()}
_GROUP_FROM_PROTO = {
    pb.VIOLATION_GROUP_BY_POLICY: GroupBy.POLICY,
    pb.VIOLATION_GROUP_BY_RULE: GroupBy.RULE,
    pb.VIOLATION_GROUP_BY_SEVERITY: GroupBy.SEVERITY,
    pb.VIOLATION_GROUP_BY_MODEL_VERSION: GroupBy.MODEL_VERSION,
    pb.VIOLATION_GROUP_BY_DEPLOYMENT: GroupBy.DEPLOYMENT,
    pb.VIOLATION_GROUP_BY_TRAFFIC_SLOT: GroupBy.TRAFFIC_SLOT,
    pb.VIOLATION_GROUP_BY_TIME_BUCKET: GroupBy.TIME_BUCKET,
}
_DECISION_FIELDS = (
    ("info", Severity.INFO),
    ("warning", Severity.WARNING),
    ("error", Severity.ERROR),
    ("critical", Severity.CRITICAL),
)
_SEVERITY_CHOICES = "INFO, WARNING, ERROR or CRITICAL"
_DECISION_CHOICES = "ALLOW, REDACT or BLOCK"


def _millis(value: duration_pb2.Duration, path: str, found: list[FieldViolation]) -> int:
    if not duration_valid(value):
        found.append(FieldViolation(path, "is not a valid Duration: nanos must be 0 to 999,999,999"))
        return 0
    if value.seconds < 0 or value.nanos < 0 or value.nanos % 1_000_000:
        found.append(FieldViolation(path, "must be a positive whole number of milliseconds"))
        return 0
    return value.seconds * 1000 + value.nanos // 1_000_000


# ---- rules and policies


def _kind(
    rule: pb.Rule, path: str, found: list[FieldViolation]
) -> BannedTerms | Pattern | Pii | Length | Json | RequiredPattern | None:
    which = rule.WhichOneof("kind")
    if which == "banned_terms":
        terms = rule.banned_terms
        return BannedTerms(
            tuple(terms.terms), case_sensitive=terms.case_sensitive, whole_words=not terms.match_inside_words
        )
    if which == "regex":
        return Pattern(rule.regex.pattern, case_sensitive=not rule.regex.case_insensitive)
    if which == "pii":
        kinds: list[PiiKind] = []
        for i, number in enumerate(rule.pii.kinds):
            kind = _PII_FROM_PROTO.get(number)
            if kind is None:
                found.append(FieldViolation(f"{path}.pii.kinds[{i}]", "must be a PII kind, not UNSPECIFIED"))
            elif kind in kinds:
                found.append(FieldViolation(f"{path}.pii.kinds[{i}]", f"{kind.name} is listed twice"))
            else:
                kinds.append(kind)
        return Pii(tuple(kinds))
    if which == "length":
        # The compiler checks the bounds, each by its own path.
        return Length(min_chars=rule.length.min_chars, max_chars=rule.length.max_chars)
    if which == "json":
        return Json(rule.json.schema)
    if which == "required_pattern":
        return RequiredPattern(rule.required_pattern.pattern)
    found.append(
        FieldViolation(
            f"{path}.kind", "set exactly one of banned_terms, regex, pii, length, json, required_pattern"
        )
    )
    return None


def policy_fields(policy: pb.Policy, prefix: str, paths: frozenset[str] | None = None) -> PolicyFields:
    """The fields of a policy message (only those in `paths` are read and checked when given); a rule
    without a kind is left out, and named in `refused`."""
    found: list[FieldViolation] = []

    def wanted(name: str) -> bool:
        return paths is None or name in paths or "*" in paths

    rules: list[RuleSpec] = []
    positions: list[int] = []
    if wanted("rules"):
        for i, rule in enumerate(policy.rules):
            path = f"{prefix}.rules[{i}]"
            severity = SEVERITY_FROM_PROTO.get(rule.severity)
            if severity is None:
                found.append(FieldViolation(f"{path}.severity", f"must be {_SEVERITY_CHOICES}"))
                # Kept with a stand-in severity (never stored: the request is refused), so the rule's other
                # fields are still checked and the rules keep their request indexes.
                severity = Severity.INFO
            kind = _kind(rule, path, found)
            if kind is not None:
                rules.append(RuleSpec(id=rule.id, severity=severity, category=rule.category, kind=kind))
                positions.append(i)
    decisions = dict(DEFAULT_DECISIONS)
    if wanted("decisions") and policy.HasField("decisions"):
        for field_name, severity in _DECISION_FIELDS:
            decision = DECISION_FROM_PROTO.get(getattr(policy.decisions, field_name))
            if decision is None:
                found.append(
                    FieldViolation(f"{prefix}.decisions.{field_name}", f"must be {_DECISION_CHOICES}")
                )
            else:
                decisions[severity] = decision
    fail_mode = FailMode.CLOSED
    if wanted("fail_mode"):
        chosen = _FAIL_MODE_FROM_PROTO.get(policy.fail_mode)
        if chosen is None:
            found.append(FieldViolation(f"{prefix}.fail_mode", "must be OPEN or CLOSED"))
        else:
            fail_mode = chosen
    budget = 0
    if wanted("time_budget") and policy.HasField("time_budget"):
        budget = _millis(policy.time_budget, f"{prefix}.time_budget", found)
    return PolicyFields(
        display_name=policy.display_name,
        description=policy.description,
        rules=tuple(rules),
        rule_descriptions=tuple(r.description for r in policy.rules),
        decisions=decisions,
        fallback_content=dict(policy.fallback_content),
        default_fallback=policy.default_fallback,
        fail_mode=fail_mode,
        time_budget_ms=budget,
        excerpt_context_chars=policy.excerpt_context_chars,
        refused=tuple(found),
        rule_positions=() if len(positions) == len(policy.rules) else tuple(positions),
    )


def _kind_to_proto(
    rule: pb.Rule, kind: BannedTerms | Pattern | Pii | Length | Json | RequiredPattern
) -> None:
    if isinstance(kind, BannedTerms):
        rule.banned_terms.terms.extend(kind.terms)
        rule.banned_terms.case_sensitive = kind.case_sensitive
        rule.banned_terms.match_inside_words = not kind.whole_words
    elif isinstance(kind, Pattern):
        rule.regex.pattern = kind.pattern
        rule.regex.case_insensitive = not kind.case_sensitive
    elif isinstance(kind, Pii):
        rule.pii.SetInParent()
        rule.pii.kinds.extend(_PII_TO_PROTO[k] for k in kind.kinds)
    elif isinstance(kind, Length):
        rule.length.min_chars = kind.min_chars
        rule.length.max_chars = kind.max_chars
    elif isinstance(kind, Json):
        rule.json.schema = kind.schema
    else:
        rule.required_pattern.pattern = kind.pattern


def policy_to_proto(policy: Policy) -> pb.Policy:
    fields = policy.fields
    message = pb.Policy(
        name=policy.name,
        display_name=fields.display_name,
        description=fields.description,
        decisions=pb.DecisionTable(
            **{name: DECISION_TO_PROTO[fields.decisions[severity]] for name, severity in _DECISION_FIELDS}
        ),
        fallback_content=dict(fields.fallback_content),
        default_fallback=fields.default_fallback,
        fail_mode=_FAIL_MODE_TO_PROTO[fields.fail_mode],
        revision=policy.revision,
        excerpt_context_chars=fields.excerpt_context_chars,
        create_time=timestamp(policy.create_time),
        update_time=timestamp(policy.update_time),
        etag=policy.etag,
        shadow_revision=policy.shadow_revision,
        shadow_deployment=policy.shadow_target.deployment,
        shadow_traffic_slot=SLOT_TO_PROTO[policy.shadow_target.traffic_slot],
    )
    budget = fields.time_budget_ms or DEFAULT_TIME_BUDGET_MS
    message.time_budget.FromMilliseconds(budget)
    for i, spec in enumerate(fields.rules):
        rule = message.rules.add(
            id=spec.id,
            severity=SEVERITY_TO_PROTO[spec.severity],
            category=spec.category,
            description=fields.rule_descriptions[i] if i < len(fields.rule_descriptions) else "",
        )
        _kind_to_proto(rule, spec.kind)
    return message


# ---- checks


def _slot(number: common_pb2.TrafficSlot.ValueType, path: str, found: list[FieldViolation]) -> TrafficSlot:
    slot = SLOT_FROM_PROTO.get(number)
    if slot is None:
        found.append(FieldViolation(path, "must be STABLE, CANARY or unset"))
        return TrafficSlot.NONE
    return slot


def links(message: common_pb2.EventLinks, prefix: str) -> Links:
    found: list[FieldViolation] = []
    return Links(
        model_version=message.model_version,
        deployment=message.deployment,
        traffic_slot=_slot(message.traffic_slot, f"{prefix}.traffic_slot", found),
        trace_id=message.trace_id,
        request_id=message.request_id,
        refused=tuple(found),
    )


def _violation_to_proto(v: FoundViolation) -> pb.Violation:
    return pb.Violation(
        rule_id=v.rule_id,
        severity=SEVERITY_TO_PROTO[v.severity],
        category=v.category,
        decision=DECISION_TO_PROTO[v.decision],
        span=pb.TextSpan(start=v.start, end=v.end),
        excerpt=v.excerpt,
    )


def verdict_to_proto(verdict: Verdict) -> pb.CheckVerdict:
    return pb.CheckVerdict(
        decision=DECISION_TO_PROTO[verdict.decision],
        violations=[_violation_to_proto(v) for v in verdict.violations],
        redacted_text=verdict.redacted_text,
        fallback_content=verdict.fallback_content,
        policy=policy_name(verdict.policy_id),
        policy_revision=verdict.policy_revision,
        highest_severity=(
            pb.SEVERITY_UNSPECIFIED
            if verdict.highest_severity is None
            else SEVERITY_TO_PROTO[verdict.highest_severity]
        ),
        unchecked=verdict.unchecked,
        fail_mode=_FAIL_MODE_TO_PROTO[verdict.fail_mode],
        check_id=verdict.check_id,
        final=verdict.final,
        omitted_violations=dict(verdict.omitted),
        redaction_too_large=verdict.redaction_too_large,
    )


def stream_response(item: StreamProgress | Verdict) -> pb.CheckStreamResponse:
    if isinstance(item, Verdict):
        return pb.CheckStreamResponse(verdict=verdict_to_proto(item))
    return pb.CheckStreamResponse(
        progress=pb.CheckStreamProgress(
            violations=[_violation_to_proto(v) for v in item.violations], received_chars=item.received_chars
        )
    )


async def stream_events(requests: AsyncIterator[pb.CheckStreamRequest]) -> AsyncIterator[StreamEvent]:
    """The domain events of a CheckStream's requests; a message with nothing set is refused."""
    async for request in requests:
        which = request.WhichOneof("event")
        if which == "start":
            start = request.start
            yield StreamStart(
                policy=start.policy,
                policy_revision=start.policy_revision,
                links=links(start.links, "start.links"),
                request_id=start.request_id,
            )
        elif which == "chunk":
            yield StreamChunk(request.chunk)
        elif which == "end":
            yield StreamEnd()
        else:
            raise InvalidArgument.field("event", "set one of start, chunk or end")


# ---- records


def _links_to_proto(links: Links, policy: str = "", policy_revision: int = 0) -> common_pb2.EventLinks:
    return common_pb2.EventLinks(
        model_version=links.model_version,
        deployment=links.deployment,
        traffic_slot=SLOT_TO_PROTO[links.traffic_slot],
        policy=policy,
        policy_revision=policy_revision,
        trace_id=links.trace_id,
        request_id=links.request_id,
    )


def record_to_proto(record: ViolationRecord, show_hash: bool) -> pb.ViolationRecord:
    """A stored violation; its matched_hash only when `show_hash` (an admin or operator asks)."""
    return pb.ViolationRecord(
        name=record.name,
        check_id=record.check_id,
        policy=policy_name(record.policy_id),
        policy_revision=record.policy_revision,
        rule_id=record.rule_id,
        severity=SEVERITY_TO_PROTO[record.severity],
        category=record.category,
        decision=DECISION_TO_PROTO[record.decision],
        check_decision=DECISION_TO_PROTO[record.check_decision],
        links=_links_to_proto(record.links, policy_name(record.policy_id), record.policy_revision),
        span=pb.TextSpan(start=record.start, end=record.end),
        excerpt=record.excerpt,
        matched_hash=record.matched_hash.hex() if show_hash else "",
        create_time=timestamp(record.create_time),
    )


def aggregate_query(request: pb.AggregateViolationsRequest) -> AggregateQuery:
    found: list[FieldViolation] = []
    groups: list[GroupBy] = []
    for i, number in enumerate(request.group_by):
        group = _GROUP_FROM_PROTO.get(number)
        if group is None:
            found.append(
                FieldViolation(f"group_by[{i}]", "must be a ViolationGroupBy value, not UNSPECIFIED")
            )
        else:
            groups.append(group)
    bucket_seconds = 0
    if request.HasField("bucket_width"):
        width = request.bucket_width
        if width.nanos or width.seconds <= 0:
            found.append(FieldViolation("bucket_width", "must be a positive whole number of seconds"))
        else:
            bucket_seconds = width.seconds
    start_time = (
        datetime_from(request.start_time, "start_time", found) if request.HasField("start_time") else None
    )
    end_time = datetime_from(request.end_time, "end_time", found) if request.HasField("end_time") else None
    policy_id = ""
    if request.policy:
        if not request.policy.startswith("policies/"):
            found.append(FieldViolation("policy", "must be a policy name, policies/{policy}, or empty"))
        policy_id = request.policy.removeprefix("policies/")
    return AggregateQuery(
        group_by=tuple(groups),
        start_time=start_time,
        end_time=end_time,
        bucket_seconds=bucket_seconds,
        policy_id=policy_id,
        refused=tuple(found),
    )


def group_to_proto(group: ViolationGroup) -> pb.ViolationGroup:
    message = pb.ViolationGroup(
        policy=policy_name(group.policy_id) if group.policy_id else "",
        rule_id=group.rule_id,
        severity=pb.SEVERITY_UNSPECIFIED if group.severity is None else SEVERITY_TO_PROTO[group.severity],
        model_version=group.model_version,
        deployment=group.deployment,
        traffic_slot=SLOT_TO_PROTO[group.traffic_slot],
        checks=group.checks,
        checks_with_violations=group.checks_with_violations,
        violations=group.violations,
        blocked_checks=group.blocked_checks,
        violation_rate=group.violation_rate,
        block_rate=group.block_rate,
    )
    if group.bucket_start is not None:
        message.bucket_start.CopyFrom(timestamp(group.bucket_start))
    return message


# ---- shadow revisions


def shadow_choice(request: pb.SetShadowRevisionRequest) -> int | PolicyFields | None:
    """What SetShadowRevision shadows: an existing revision, a candidate's fields, or None when neither."""
    which = request.WhichOneof("shadow")
    if which == "policy":
        return policy_fields(request.policy, "policy")
    if which == "revision":
        return request.revision
    return None


def shadow_target(request: pb.SetShadowRevisionRequest) -> ShadowTarget:
    """Which checks SetShadowRevision's shadow evaluates."""
    found: list[FieldViolation] = []
    slot = _slot(request.traffic_slot, "traffic_slot", found)
    return ShadowTarget(request.deployment, slot, refused=tuple(found))


def shadow_query(request: pb.GetShadowReportRequest) -> ShadowQuery:
    """The report's window; the policy id is the service's to parse from the name."""
    found: list[FieldViolation] = []
    start_time = (
        datetime_from(request.start_time, "start_time", found) if request.HasField("start_time") else None
    )
    end_time = datetime_from(request.end_time, "end_time", found) if request.HasField("end_time") else None
    return ShadowQuery(
        policy_id="",
        shadow_revision=request.shadow_revision,
        start_time=start_time,
        end_time=end_time,
        refused=tuple(found),
    )


def _outcome(revision: int, block: int, redact: int, unchecked: int, checks: int) -> pb.ShadowOutcome:
    return pb.ShadowOutcome(
        revision=revision,
        would_block=block,
        would_redact=redact,
        unchecked=unchecked,
        block_rate=block / checks if checks else 0.0,
        redact_rate=redact / checks if checks else 0.0,
    )


def _sample_to_proto(sample: ShadowSample, show_hash: bool) -> pb.ShadowViolation:
    return pb.ShadowViolation(
        rule_id=sample.rule_id,
        severity=SEVERITY_TO_PROTO[sample.severity],
        category=sample.category,
        decision=DECISION_TO_PROTO[sample.decision],
        shadow_decision=DECISION_TO_PROTO[sample.shadow_decision],
        active_decision=DECISION_TO_PROTO[sample.active_decision],
        active_revision=sample.active_revision,
        links=_links_to_proto(sample.links),
        span=pb.TextSpan(start=sample.start, end=sample.end),
        excerpt=sample.excerpt,
        matched_hash=sample.matched_hash.hex() if show_hash else "",
        create_time=timestamp(sample.create_time),
    )


def shadow_report_to_proto(report: ShadowReport, show_hash: bool) -> pb.GetShadowReportResponse:
    """The report; its samples' matched_hash only when `show_hash` (an admin or operator asks)."""
    checks = report.checks
    actives = report.active_revisions
    return pb.GetShadowReportResponse(
        policy=policy_name(report.policy_id),
        shadow_revision=report.shadow_revision,
        active_revisions=actives,
        checks=checks,
        skipped=report.skipped,
        changed_decisions=report.changed_decisions,
        active=_outcome(
            actives[0] if len(actives) == 1 else 0,
            report.active_count(Decision.BLOCK),
            report.active_count(Decision.REDACT),
            report.active_unchecked,
            checks,
        ),
        shadow=_outcome(
            report.shadow_revision,
            report.shadow_count(Decision.BLOCK),
            report.shadow_count(Decision.REDACT),
            report.shadow_unchecked,
            checks,
        ),
        rule_differences=[
            pb.ShadowRuleDifference(
                rule_id=d.rule_id,
                active_only=d.active_only,
                shadow_only=d.shadow_only,
                decision_changed=d.decision_changed,
            )
            for d in report.rule_differences
        ],
        samples=[_sample_to_proto(s, show_hash) for s in report.samples],
    )
