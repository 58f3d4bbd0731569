"""NarrativeGenerator in every mode, with the real LLMClient on the offline LocalProvider and a scripted
monitor that speaks the GuardrailMonitor protocol; the same against the real server is in
tests/e2e/test_narrative_generator_guardrails.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from modelplane.client.errors import (
    DeadlineExceeded,
    PolicyNotFound,
    RoleNotAllowed,
    ShuttingDown,
    Unavailable,
)
from modelplane.client.events import GuardrailEvent, InferenceEvent
from modelplane.client.guardrails import GuardrailClient
from modelplane.inference import ConfiguredModel, LLMClient, LocalProvider
from modelplane.storyteller import (
    DEFAULT_LOCAL_FALLBACK,
    Decision,
    FailMode,
    GuardrailMonitor,
    NarrativeGenerator,
    NarrativeStatus,
    Severity,
    TextGenerator,
)
from modelplane.v1 import common_pb2, guardrails_pb2

POLICY = "policies/kids-safe"
MODEL_VERSION = "models/story/versions/3"
PROMPT = "Tell a story about a lighthouse."


@dataclass(frozen=True)
class CheckCall:
    policy: str
    text: str
    policy_revision: int
    links: common_pb2.EventLinks | None
    timeout: float | None


class ScriptedMonitor:
    """Answers every check with `verdict`, or raises `error`, or never answers when `hang` is set."""

    def __init__(
        self,
        verdict: guardrails_pb2.CheckVerdict | None = None,
        *,
        error: BaseException | None = None,
        hang: bool = False,
    ) -> None:
        self.verdict = verdict
        self.error = error
        self.hang = hang
        self.calls: list[CheckCall] = []

    async def check_content(
        self,
        *,
        policy: str,
        text: str,
        policy_revision: int = 0,
        links: common_pb2.EventLinks | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- mirrors the client's gRPC deadline
    ) -> guardrails_pb2.CheckVerdict:
        self.calls.append(CheckCall(policy, text, policy_revision, links, timeout))
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        assert self.verdict is not None
        return self.verdict


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


class RaisingSink:
    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: object) -> None:
        self.calls += 1
        raise RuntimeError("sink is broken")


def violation(
    rule_id: str,
    severity: guardrails_pb2.Severity.ValueType,
    decision: guardrails_pb2.Decision.ValueType,
    *,
    category: str = "pii",
    start: int = 0,
    end: int = 4,
) -> guardrails_pb2.Violation:
    return guardrails_pb2.Violation(
        rule_id=rule_id,
        severity=severity,
        category=category,
        decision=decision,
        span=guardrails_pb2.TextSpan(start=start, end=end),
        excerpt="a ****",
    )


def verdict(
    decision: guardrails_pb2.Decision.ValueType,
    *violations: guardrails_pb2.Violation,
    redacted_text: str = "",
    fallback_content: str = "",
    unchecked: bool = False,
) -> guardrails_pb2.CheckVerdict:
    highest = max((v.severity for v in violations), default=guardrails_pb2.SEVERITY_UNSPECIFIED)
    return guardrails_pb2.CheckVerdict(
        decision=decision,
        violations=violations,
        redacted_text=redacted_text,
        fallback_content=fallback_content,
        policy=POLICY,
        policy_revision=7,
        highest_severity=highest,
        unchecked=unchecked,
        final=True,
    )


@pytest.fixture
async def llm() -> AsyncIterator[LLMClient]:
    async with LLMClient(
        LocalProvider(), model=ConfiguredModel("story-model", version=MODEL_VERSION)
    ) as client:
        yield client


async def generated_text(llm: LLMClient) -> str:
    # LocalProvider answers a request the same way every time, so this is what the generator gets too.
    return (await llm.complete(PROMPT)).text


def guardrail_events(sink: CollectingSink) -> list[GuardrailEvent]:
    return [event for event in sink.events if isinstance(event, GuardrailEvent)]


def the_real_clients_satisfy_the_protocols(monitor: GuardrailClient, llm: LLMClient) -> None:
    # Checked by mypy: the real clients can be given to NarrativeGenerator as they are.
    _monitor: GuardrailMonitor = monitor
    _llm: TextGenerator = llm


async def test_without_a_monitor_the_text_is_returned_unchecked(llm: LLMClient) -> None:
    sink = CollectingSink()
    narrative = await NarrativeGenerator(llm, events=sink).generate(PROMPT, trace_id="t1")

    assert narrative.text == await generated_text(llm)
    assert (narrative.status, narrative.decision, narrative.checked) == (
        NarrativeStatus.UNCHECKED,
        None,
        False,
    )
    assert narrative.violations == ()
    assert narrative.model_version == MODEL_VERSION
    assert narrative.trace_id == "t1"
    assert "no guardrail monitor" in narrative.reason
    assert sink.events == []


async def test_allow_passes_the_text_through_and_lists_warnings(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(
        verdict(
            guardrails_pb2.DECISION_ALLOW,
            violation(
                "tone", guardrails_pb2.SEVERITY_WARNING, guardrails_pb2.DECISION_ALLOW, category="tone"
            ),
        )
    )
    sink = CollectingSink()
    generator = NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, events=sink, check_timeout=3.0)

    narrative = await generator.generate(
        PROMPT, trace_id="trace-1", request_id="req-1", deployment="deployments/story", traffic_slot="canary"
    )

    text = await generated_text(llm)
    assert narrative.text == text
    assert (narrative.status, narrative.decision, narrative.checked) == (
        NarrativeStatus.ALLOWED,
        Decision.ALLOW,
        True,
    )
    assert [(v.rule_id, v.severity, v.category) for v in narrative.violations] == [
        ("tone", Severity.WARNING, "tone")
    ]
    assert (narrative.policy, narrative.policy_revision, narrative.highest_severity) == (
        POLICY,
        7,
        Severity.WARNING,
    )
    assert "tone (warning, tone)" in narrative.reason
    # The monitor checked exactly the generated text, linked to the inference that produced it.
    [call] = monitor.calls
    assert (call.policy, call.text, call.policy_revision, call.timeout) == (POLICY, text, 0, 3.0)
    assert call.links == common_pb2.EventLinks(
        model_version=MODEL_VERSION,
        deployment="deployments/story",
        traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY,
        trace_id="trace-1",
        request_id="req-1",
    )
    [event] = guardrail_events(sink)
    assert (event.policy, event.policy_revision, event.decision, event.violation_count) == (
        POLICY,
        7,
        "allow",
        1,
    )
    assert (event.highest_severity, event.checked, event.status, event.rule_ids) == (
        "warning",
        True,
        "ok",
        ("tone",),
    )
    assert (event.model_version, event.deployment, event.traffic_slot, event.trace_id, event.request_id) == (
        MODEL_VERSION,
        "deployments/story",
        "canary",
        "trace-1",
        "req-1",
    )
    assert event.latency_seconds >= 0


async def test_the_llms_call_is_linked_to_the_same_deployment_slot_as_the_check() -> None:
    sink = CollectingSink()
    async with LLMClient(
        LocalProvider(), model=ConfiguredModel("story-model", version=MODEL_VERSION), events=sink
    ) as llm:
        monitor = ScriptedMonitor(verdict(guardrails_pb2.DECISION_ALLOW))
        generator = NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, events=sink)
        await generator.generate(
            PROMPT,
            trace_id="trace-1",
            request_id="req-1",
            deployment="deployments/story",
            traffic_slot="canary",
        )
    [inference] = [event for event in sink.events if isinstance(event, InferenceEvent)]
    [guardrail] = guardrail_events(sink)
    links = ("deployments/story", "canary", "trace-1", "req-1")
    assert (inference.deployment, inference.traffic_slot, inference.trace_id, inference.request_id) == links
    assert (guardrail.deployment, guardrail.traffic_slot, guardrail.trace_id, guardrail.request_id) == links


async def test_redact_returns_the_redacted_text(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(
        verdict(
            guardrails_pb2.DECISION_REDACT,
            violation(
                "email", guardrails_pb2.SEVERITY_ERROR, guardrails_pb2.DECISION_REDACT, start=5, end=20
            ),
            violation("note", guardrails_pb2.SEVERITY_INFO, guardrails_pb2.DECISION_ALLOW, start=30, end=34),
            redacted_text="Mail [REDACTED:pii] today",
        )
    )
    sink = CollectingSink()
    narrative = await NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, events=sink).generate(PROMPT)

    assert narrative.text == "Mail [REDACTED:pii] today"
    assert (narrative.status, narrative.decision, narrative.checked) == (
        NarrativeStatus.REDACTED,
        Decision.REDACT,
        True,
    )
    assert [(v.rule_id, v.start, v.end) for v in narrative.violations] == [("email", 5, 20), ("note", 30, 34)]
    # The reason names the rule that decided, not the one that only informed.
    assert "email (error, pii)" in narrative.reason
    assert "note" not in narrative.reason
    assert not narrative.replaced
    [event] = guardrail_events(sink)
    assert (event.decision, event.violation_count, event.highest_severity) == ("redact", 2, "error")


async def test_block_returns_the_policys_fallback_content(llm: LLMClient) -> None:
    infos = [
        violation(f"info-{i}", guardrails_pb2.SEVERITY_INFO, guardrails_pb2.DECISION_ALLOW, category="style")
        for i in range(3)
    ]
    critical = violation(
        "violence", guardrails_pb2.SEVERITY_CRITICAL, guardrails_pb2.DECISION_BLOCK, category="violence"
    )
    monitor = ScriptedMonitor(
        verdict(
            guardrails_pb2.DECISION_BLOCK,
            *infos,
            critical,
            fallback_content="Once upon a time, everyone was kind.",
        )
    )
    narrative = await NarrativeGenerator(llm, guardrails=monitor, policy=POLICY).generate(PROMPT)

    assert narrative.text == "Once upon a time, everyone was kind."
    assert narrative.text != await generated_text(llm)
    assert (narrative.status, narrative.decision, narrative.highest_severity) == (
        NarrativeStatus.BLOCKED,
        Decision.BLOCK,
        Severity.CRITICAL,
    )
    assert narrative.replaced
    assert len(narrative.violations) == 4
    assert "violence (critical, violence)" in narrative.reason
    assert "info-0" not in narrative.reason


async def test_block_without_server_fallback_uses_the_local_one(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(
        verdict(
            guardrails_pb2.DECISION_BLOCK,
            violation("secret", guardrails_pb2.SEVERITY_CRITICAL, guardrails_pb2.DECISION_BLOCK),
        )
    )
    generator = NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, local_fallback="Nothing to see.")

    narrative = await generator.generate(PROMPT)

    assert (narrative.text, narrative.status) == ("Nothing to see.", NarrativeStatus.BLOCKED)
    assert "local one" in narrative.reason


async def test_an_unknown_decision_is_treated_as_a_block(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(verdict(guardrails_pb2.DECISION_UNSPECIFIED, fallback_content="Safe story."))

    narrative = await NarrativeGenerator(llm, guardrails=monitor, policy=POLICY).generate(PROMPT)

    assert (narrative.text, narrative.decision) == ("Safe story.", Decision.BLOCK)


async def test_a_verdict_decided_by_the_servers_time_budget_is_marked_unchecked(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(verdict(guardrails_pb2.DECISION_ALLOW, unchecked=True))
    sink = CollectingSink()

    narrative = await NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, events=sink).generate(PROMPT)

    assert narrative.text == await generated_text(llm)
    assert (narrative.status, narrative.checked) == (NarrativeStatus.ALLOWED, False)
    assert "time budget" in narrative.reason
    [event] = guardrail_events(sink)
    assert (event.checked, event.status) == (False, "ok")


def aio_unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="connection refused",
        debug_error_string="",
    )


UNREACHABLE = [
    pytest.param(Unavailable("failed to connect to all addresses"), id="unavailable"),
    pytest.param(ShuttingDown("server stopping", reason="SHUTTING_DOWN"), id="shutting-down"),
    pytest.param(DeadlineExceeded("deadline exceeded"), id="deadline"),
    pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
    pytest.param(aio_unavailable(), id="raw-grpc-error"),
]


@pytest.mark.parametrize("error", UNREACHABLE)
async def test_unreachable_monitor_fail_open_returns_the_text_unchecked(
    llm: LLMClient, error: BaseException
) -> None:
    sink = CollectingSink()
    generator = NarrativeGenerator(
        llm, guardrails=ScriptedMonitor(error=error), policy=POLICY, fail_mode=FailMode.OPEN, events=sink
    )

    narrative = await generator.generate(PROMPT, trace_id="t-open")

    assert narrative.text == await generated_text(llm)
    assert (narrative.status, narrative.decision, narrative.checked) == (
        NarrativeStatus.FAILED_OPEN,
        None,
        False,
    )
    assert "unreachable" in narrative.reason
    assert "fail mode open" in narrative.reason
    [event] = guardrail_events(sink)
    assert (event.status, event.checked, event.fail_mode, event.decision) == ("error", False, "open", "")
    assert event.error_type == type(error).__name__
    assert (event.model_version, event.trace_id) == (MODEL_VERSION, "t-open")


@pytest.mark.parametrize("error", UNREACHABLE)
async def test_unreachable_monitor_fail_closed_returns_the_local_fallback(
    llm: LLMClient, error: BaseException
) -> None:
    sink = CollectingSink()
    generator = NarrativeGenerator(llm, guardrails=ScriptedMonitor(error=error), policy=POLICY, events=sink)

    narrative = await generator.generate(PROMPT)

    assert generator.fail_mode is FailMode.CLOSED
    assert narrative.text == DEFAULT_LOCAL_FALLBACK
    assert (narrative.status, narrative.decision, narrative.checked) == (
        NarrativeStatus.FAILED_CLOSED,
        None,
        False,
    )
    assert narrative.replaced
    assert "fail mode closed" in narrative.reason
    [event] = guardrail_events(sink)
    assert (event.status, event.fail_mode) == ("error", "closed")


@pytest.mark.parametrize(
    ("fail_mode", "status"),
    [(FailMode.OPEN, NarrativeStatus.FAILED_OPEN), (FailMode.CLOSED, NarrativeStatus.FAILED_CLOSED)],
)
async def test_a_monitor_that_never_answers_counts_as_unreachable(
    llm: LLMClient, fail_mode: FailMode, status: NarrativeStatus
) -> None:
    generator = NarrativeGenerator(
        llm, guardrails=ScriptedMonitor(hang=True), policy=POLICY, fail_mode=fail_mode, check_timeout=0.05
    )

    narrative = await generator.generate(PROMPT)

    assert narrative.status == status
    assert "TimeoutError" in narrative.reason


@pytest.mark.parametrize(
    "error",
    [
        PolicyNotFound("policy policies/kids-safe not found"),
        RoleNotAllowed("role reader may not call CheckContent"),
        ValueError("a bug in the monitor"),
    ],
)
@pytest.mark.parametrize("fail_mode", [FailMode.OPEN, FailMode.CLOSED])
async def test_refusals_are_configuration_errors_and_are_raised(
    llm: LLMClient, error: Exception, fail_mode: FailMode
) -> None:
    sink = CollectingSink()
    generator = NarrativeGenerator(
        llm, guardrails=ScriptedMonitor(error=error), policy=POLICY, fail_mode=fail_mode, events=sink
    )

    with pytest.raises(type(error)) as raised:
        await generator.generate(PROMPT)

    assert raised.value is error
    assert guardrail_events(sink) == []


async def test_a_raising_sink_never_breaks_generation(llm: LLMClient) -> None:
    sink = RaisingSink()
    monitor = ScriptedMonitor(verdict(guardrails_pb2.DECISION_ALLOW))
    generator = NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, events=sink)

    first = await generator.generate(PROMPT)
    generator_down = NarrativeGenerator(
        llm, guardrails=ScriptedMonitor(error=Unavailable("down")), policy=POLICY, events=sink
    )
    second = await generator_down.generate(PROMPT)

    assert (first.status, second.status) == (NarrativeStatus.ALLOWED, NarrativeStatus.FAILED_CLOSED)
    assert sink.calls == 2
    assert (generator.sink_errors, generator_down.sink_errors) == (1, 1)


async def test_a_pinned_revision_is_sent_with_every_check(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(verdict(guardrails_pb2.DECISION_ALLOW))
    generator = NarrativeGenerator(llm, guardrails=monitor, policy=POLICY, policy_revision=2)

    await generator.generate(PROMPT)
    await generator.generate("Another story.")

    assert [call.policy_revision for call in monitor.calls] == [2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guardrails": ScriptedMonitor()}, "resource name"),
        ({"guardrails": ScriptedMonitor(), "policy": "kids-safe"}, "resource name"),
        ({"policy": POLICY}, "needs a monitor"),
        ({"guardrails": ScriptedMonitor(), "policy": POLICY, "policy_revision": -1}, "negative"),
        ({"local_fallback": ""}, "local_fallback"),
        ({"check_timeout": 0}, "check_timeout"),
    ],
)
def test_bad_settings_are_refused(llm: LLMClient, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NarrativeGenerator(llm, **kwargs)  # type: ignore[arg-type]


async def test_an_unknown_traffic_slot_is_refused_before_generating(llm: LLMClient) -> None:
    monitor = ScriptedMonitor(verdict(guardrails_pb2.DECISION_ALLOW))
    generator = NarrativeGenerator(llm, guardrails=monitor, policy=POLICY)

    with pytest.raises(ValueError, match="traffic_slot"):
        await generator.generate(PROMPT, traffic_slot="blue")  # type: ignore[arg-type]
    assert monitor.calls == []
