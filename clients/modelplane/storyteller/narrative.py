"""NarrativeGenerator: narratives from a prompt through an LLM, each checked by the guardrails monitor.

Without a monitor the LLM's text is returned marked unchecked. With one, every narrative is checked after
generation against one policy, with the model version and the caller's trace and request ids as the
check's links, so the violation records join the inference that produced them:

- ALLOW returns the text as generated (violations that only warn are listed all the same);
- REDACT returns the monitor's redacted text;
- BLOCK returns the policy's fallback content, as the monitor chose it for the blocking rule's category.

When the monitor cannot be reached (UNAVAILABLE, a deadline, a refused connection, no answer within
`check_timeout`), the generator's fail mode decides: OPEN returns the text marked unchecked, CLOSED
returns the local fallback. Any other refusal (an unknown policy, a denied token, a text over the size
limit) is a configuration error and is raised. The Narrative says which of these happened and why.

Event seam: given an `EventSink`, the generator emits one GuardrailEvent per checked (or fail-moded)
narrative; the LLMClient emits its own InferenceEvent. A sink that raises is counted and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from modelplane.client.errors import ModelplaneError
from modelplane.client.events import EventSink, GuardrailEvent
from modelplane.client.trace_context import current_trace_ids
from modelplane.inference.llm_client import CompletionResult
from modelplane.inference.providers import ChatMessage
from modelplane.storyteller.monitor import (
    Decision,
    GuardrailMonitor,
    Severity,
    Verdict,
    ViolationSummary,
    monitor_unreachable,
    verdict_from_message,
)
from modelplane.v1 import common_pb2

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LOCAL_FALLBACK",
    "FailMode",
    "Narrative",
    "NarrativeGenerator",
    "NarrativeStatus",
    "TextGenerator",
    "TrafficSlotName",
]

DEFAULT_LOCAL_FALLBACK = "This story is not available right now. Please try again later."

TrafficSlotName = Literal["", "stable", "canary"]
_TRAFFIC_SLOTS: dict[str, common_pb2.TrafficSlot.ValueType] = {
    "": common_pb2.TRAFFIC_SLOT_UNSPECIFIED,
    "stable": common_pb2.TRAFFIC_SLOT_STABLE,
    "canary": common_pb2.TRAFFIC_SLOT_CANARY,
}
_MAX_ERROR_MESSAGE = 500


class FailMode(StrEnum):
    """What to return when the monitor cannot be reached: the unchecked text, or the local fallback."""

    OPEN = "open"
    CLOSED = "closed"


class NarrativeStatus(StrEnum):
    """How the returned text came to be."""

    # No monitor is configured: the LLM's text, unchecked.
    UNCHECKED = "unchecked"
    # The policy allowed the text; it is returned as generated.
    ALLOWED = "allowed"
    # The policy redacted parts of the text; the redacted text is returned.
    REDACTED = "redacted"
    # The policy blocked the text; the policy's fallback content is returned instead.
    BLOCKED = "blocked"
    # The monitor could not be reached and the fail mode is OPEN: the LLM's text, unchecked.
    FAILED_OPEN = "failed_open"
    # The monitor could not be reached and the fail mode is CLOSED: the local fallback.
    FAILED_CLOSED = "failed_closed"


class TextGenerator(Protocol):
    """What NarrativeGenerator needs of the LLM (modelplane.inference.LLMClient satisfies it)."""

    async def complete(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        trace_id: str = "",
        request_id: str = "",
        deployment: str = "",
        traffic_slot: str = "",
    ) -> CompletionResult:
        """Generate an answer to the prompt; the ids link its event to the caller's request and the
        deployment slot that routed it."""
        ...


@dataclass(frozen=True)
class Narrative:
    """One generated narrative, as it may be shown, and what the monitor said about it.

    `decision` is None when no check decided (no monitor, or the monitor did not answer); `checked` is
    True only when the policy's rules judged the text. `violations` are the monitor's findings, with
    masked excerpts, never the matched text. `reason` explains the outcome in one line.
    """

    text: str
    status: NarrativeStatus
    decision: Decision | None
    violations: tuple[ViolationSummary, ...]
    policy: str
    policy_revision: int
    model_version: str
    checked: bool
    reason: str
    highest_severity: Severity | None = None
    trace_id: str = ""
    request_id: str = ""

    @property
    def replaced(self) -> bool:
        """Whether the text is fallback content rather than (possibly redacted) generated text."""
        return self.status in (NarrativeStatus.BLOCKED, NarrativeStatus.FAILED_CLOSED)


def _findings(violations: Sequence[ViolationSummary], limit: int = 5) -> str:
    described = [violation.describe() for violation in violations[:limit]]
    if len(violations) > limit:
        described.append(f"and {len(violations) - limit} more")
    return ", ".join(described)


def _blocking(verdict: Verdict) -> tuple[ViolationSummary, ...]:
    """The violations that set the decision: those whose own decision is the verdict's."""
    deciding = tuple(v for v in verdict.violations if v.decision == verdict.decision)
    return deciding or verdict.violations


class NarrativeGenerator:
    """Writes narratives through `llm` and, when `guardrails` is given, checks each one against `policy`
    (a resource name, "policies/kids-safe"; `policy_revision` pins a revision, 0 follows the latest).

    `fail_mode` and `local_fallback` decide what is returned when the monitor cannot be reached;
    `check_timeout` bounds each check, retries included. `events` receives one GuardrailEvent per check.
    """

    def __init__(
        self,
        llm: TextGenerator,
        *,
        guardrails: GuardrailMonitor | None = None,
        policy: str = "",
        policy_revision: int = 0,
        fail_mode: FailMode = FailMode.CLOSED,
        local_fallback: str = DEFAULT_LOCAL_FALLBACK,
        events: EventSink | None = None,
        check_timeout: float = 5.0,
    ) -> None:
        if guardrails is not None and not policy.startswith("policies/"):
            raise ValueError('with a monitor, give the policy\'s resource name ("policies/...")')
        if guardrails is None and policy:
            raise ValueError("a policy needs a monitor (guardrails=)")
        if policy_revision < 0:
            raise ValueError("policy_revision must not be negative")
        if not local_fallback:
            raise ValueError("local_fallback must not be empty")
        if check_timeout <= 0:
            raise ValueError("check_timeout must be positive")
        self._llm = llm
        self._monitor = guardrails
        self._policy = policy
        self._policy_revision = policy_revision
        self._fail_mode = FailMode(fail_mode)
        self._local_fallback = local_fallback
        self._events = events
        self._check_timeout = check_timeout
        self._sink_errors = 0

    @property
    def fail_mode(self) -> FailMode:
        """What is returned when the monitor cannot be reached."""
        return self._fail_mode

    @property
    def sink_errors(self) -> int:
        """How many times the event sink raised (each time the event was dropped and generation went on)."""
        return self._sink_errors

    async def generate(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        trace_id: str = "",
        request_id: str = "",
        deployment: str = "",
        traffic_slot: TrafficSlotName = "",
    ) -> Narrative:
        """A narrative for `prompt`, checked as the module doc describes.

        `trace_id`, `request_id`, `deployment` and `traffic_slot` link the check (and its violation records)
        and the LLM's call to the caller's request. Raises the LLM's error when generation fails, and a
        ModelplaneError when the monitor refuses the check for a reason other than being unreachable.
        """
        if traffic_slot not in _TRAFFIC_SLOTS:
            raise ValueError(f"traffic_slot must be one of {sorted(_TRAFFIC_SLOTS)}, not {traffic_slot!r}")
        completion = await self._llm.complete(
            prompt,
            max_output_tokens=max_output_tokens,
            temperature=temperature,
            trace_id=trace_id,
            request_id=request_id,
            deployment=deployment,
            traffic_slot=traffic_slot,
        )
        if self._monitor is None:
            return Narrative(
                text=completion.text,
                status=NarrativeStatus.UNCHECKED,
                decision=None,
                violations=(),
                policy="",
                policy_revision=0,
                model_version=completion.model_version,
                checked=False,
                reason="no guardrail monitor is configured",
                trace_id=trace_id,
                request_id=request_id,
            )
        links = common_pb2.EventLinks(
            model_version=completion.model_version,
            deployment=deployment,
            traffic_slot=_TRAFFIC_SLOTS[traffic_slot],
            request_id=request_id,
        )
        # Without a trace id of the caller's, the check and its violation records join the current
        # OpenTelemetry trace and span, if any.
        links.trace_id, links.span_id = (trace_id, "") if trace_id else current_trace_ids()
        started = time.perf_counter()
        try:
            verdict = await self._check(self._monitor, completion.text, links)
        except Exception as exc:
            latency = time.perf_counter() - started
            if not monitor_unreachable(exc):
                raise
            return self._fail(completion, exc, latency, links, deployment, traffic_slot)
        latency = time.perf_counter() - started
        narrative = self._apply(verdict, completion, trace_id, request_id)
        self._emit(
            GuardrailEvent(
                policy=self._policy,
                policy_revision=verdict.policy_revision,
                decision=verdict.decision.value,
                violation_count=len(verdict.violations),
                highest_severity=verdict.highest_severity.value if verdict.highest_severity else "",
                checked=verdict.checked,
                status="ok",
                latency_seconds=latency,
                rule_ids=tuple(dict.fromkeys(v.rule_id for v in verdict.violations)),
                model_version=completion.model_version,
                deployment=deployment,
                traffic_slot=traffic_slot,
                trace_id=trace_id,
                request_id=request_id,
            )
        )
        return narrative

    async def _check(self, monitor: GuardrailMonitor, text: str, links: common_pb2.EventLinks) -> Verdict:
        # The monitor's own deadline bounds the call; wait_for also bounds a monitor that ignores it.
        call = monitor.check_content(
            policy=self._policy,
            text=text,
            policy_revision=self._policy_revision,
            links=links,
            timeout=self._check_timeout,
        )
        return verdict_from_message(await asyncio.wait_for(call, self._check_timeout * 1.5 + 0.05))

    def _apply(
        self, verdict: Verdict, completion: CompletionResult, trace_id: str, request_id: str
    ) -> Narrative:
        where = f"{self._policy} revision {verdict.policy_revision}"
        unchecked = "" if verdict.checked else " (the monitor's time budget ran out; its fail mode decided)"
        if verdict.decision is Decision.BLOCK:
            status = NarrativeStatus.BLOCKED
            text = verdict.fallback_content
            cause = _findings(_blocking(verdict)) or "the monitor's fail mode"
            reason = f"blocked by {where}: {cause}; the policy's fallback content is returned{unchecked}"
            if not text:
                # A policy with no fallback for the category and no default still must not leak the text.
                text = self._local_fallback
                reason = f"blocked by {where}: {cause}; the policy has no fallback, the local one is returned"
        elif verdict.decision is Decision.REDACT:
            status = NarrativeStatus.REDACTED
            text = verdict.redacted_text
            reason = f"redacted by {where}: {_findings(_blocking(verdict))}{unchecked}"
        else:
            status = NarrativeStatus.ALLOWED
            text = completion.text
            listed = f"; listed: {_findings(verdict.violations)}" if verdict.violations else ""
            reason = f"allowed by {where}{listed}{unchecked}"
        return Narrative(
            text=text,
            status=status,
            decision=verdict.decision,
            violations=verdict.violations,
            policy=self._policy,
            policy_revision=verdict.policy_revision,
            model_version=completion.model_version,
            checked=verdict.checked,
            reason=reason,
            highest_severity=verdict.highest_severity,
            trace_id=trace_id,
            request_id=request_id,
        )

    def _fail(
        self,
        completion: CompletionResult,
        error: Exception,
        latency: float,
        links: common_pb2.EventLinks,
        deployment: str,
        traffic_slot: str,
    ) -> Narrative:
        cause = str(error) if isinstance(error, ModelplaneError) else f"{type(error).__name__}: {error}"
        logger.warning("guardrail monitor unreachable (%s); fail mode %s", cause, self._fail_mode.value)
        if self._fail_mode is FailMode.OPEN:
            status, text = NarrativeStatus.FAILED_OPEN, completion.text
            outcome = "fail mode open returns the generated text unchecked"
        else:
            status, text = NarrativeStatus.FAILED_CLOSED, self._local_fallback
            outcome = "fail mode closed returns the local fallback"
        self._emit(
            GuardrailEvent(
                policy=self._policy,
                policy_revision=0,
                decision="",
                violation_count=0,
                highest_severity="",
                checked=False,
                status="error",
                latency_seconds=latency,
                fail_mode=self._fail_mode.value,
                error_type=type(error).__name__,
                error_message=cause[:_MAX_ERROR_MESSAGE],
                model_version=links.model_version,
                deployment=deployment,
                traffic_slot=traffic_slot,
                trace_id=links.trace_id,
                request_id=links.request_id,
            )
        )
        return Narrative(
            text=text,
            status=status,
            decision=None,
            violations=(),
            policy=self._policy,
            policy_revision=0,
            model_version=completion.model_version,
            checked=False,
            reason=f"guardrail monitor unreachable ({cause}); {outcome}",
            trace_id=links.trace_id,
            request_id=links.request_id,
        )

    def _emit(self, event: GuardrailEvent) -> None:
        if self._events is None:
            return
        try:
            self._events.emit(event)
        except Exception:
            self._sink_errors += 1
            logger.exception("event sink failed; guardrail event %s dropped", event.event_id)
