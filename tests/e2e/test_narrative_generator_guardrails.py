"""The story teller with the guardrails monitor: NarrativeGenerator against the real server on loopback
(ALLOW, REDACT and BLOCK with the policy's own fallback, the records linked to the model version and
trace, the fail modes when the monitor is not there: nothing listening, or stopped while the story teller
runs), and standalone, with no monitor configured."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from modelplane.client import NO_RETRY, Connection, connect
from modelplane.client.errors import PolicyNotFound
from modelplane.client.events import GuardrailEvent, InferenceEvent
from modelplane.inference import ConfiguredModel, Generation, GenerationRequest, LLMClient
from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.config import ServerConfig
from modelplane.storyteller import Decision, FailMode, NarrativeGenerator, NarrativeStatus, Severity
from modelplane.v1 import guardrails_pb2

POLICY = "policies/kids-safe"
MODEL_VERSION = "models/story/versions/1"
EMAIL = "mara.keeper@example.org"
POLICY_FALLBACK = "Once upon a time, everyone was kind to each other."
LOCAL_FALLBACK = "The storyteller is resting; come back soon."
STORIES = {
    "calm": "The lighthouse keeper watched the gulls over a quiet harbor.",
    "letter": f"The keeper wrote to {EMAIL} about the storm.",
    "battle": "Then the dragonfire swept across the village square.",
}


class ScriptedProvider:
    """Stands in for a remote LLM: answers each prompt with the story of that name."""

    name = "scripted"

    async def generate(self, request: GenerationRequest) -> Generation:
        text = STORIES[request.messages[-1].content]
        return Generation(text=text, input_tokens=1, output_tokens=len(text.split()), finish_reason="stop")


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)

    def guardrail_events(self) -> list[GuardrailEvent]:
        return [event for event in self.events if isinstance(event, GuardrailEvent)]


def kids_policy() -> guardrails_pb2.Policy:
    return guardrails_pb2.Policy(
        rules=[
            guardrails_pb2.Rule(
                id="violence",
                severity=guardrails_pb2.SEVERITY_CRITICAL,
                category="violence",
                banned_terms=guardrails_pb2.BannedTermsRule(terms=["dragonfire", "sword fight"]),
            ),
            guardrails_pb2.Rule(
                id="pii", severity=guardrails_pb2.SEVERITY_ERROR, category="pii", pii=guardrails_pb2.PiiRule()
            ),
        ],
        fallback_content={"violence": POLICY_FALLBACK},
        default_fallback="This story is not available.",
        fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
    )


@pytest.fixture
async def connection(server: ModelplaneServer) -> AsyncIterator[Connection]:
    async with connect(server.target) as conn:
        await conn.guardrails.create_policy(policy_id="kids-safe", policy=kids_policy())
        yield conn


@pytest.fixture
async def llm() -> AsyncIterator[LLMClient]:
    async with LLMClient(
        ScriptedProvider(), model=ConfiguredModel("story-model", version=MODEL_VERSION)
    ) as client:
        yield client


async def test_standalone_with_no_monitor_configured_stories_go_out_unchecked(llm: LLMClient) -> None:
    sink = CollectingSink()
    generator = NarrativeGenerator(llm, events=sink)

    narrative = await generator.generate("battle")

    # What the policy blocks when the monitor is configured goes out as written, and says so.
    assert (narrative.text, narrative.status, narrative.checked) == (
        STORIES["battle"],
        NarrativeStatus.UNCHECKED,
        False,
    )
    assert (narrative.decision, narrative.model_version) == (None, MODEL_VERSION)
    assert sink.guardrail_events() == []


async def test_allowed_story_is_returned_as_written(connection: Connection, llm: LLMClient) -> None:
    generator = NarrativeGenerator(llm, guardrails=connection.guardrails, policy=POLICY)

    narrative = await generator.generate("calm")

    assert narrative.text == STORIES["calm"]
    assert (narrative.status, narrative.decision, narrative.checked) == (
        NarrativeStatus.ALLOWED,
        Decision.ALLOW,
        True,
    )
    assert (narrative.policy, narrative.policy_revision, narrative.model_version) == (
        POLICY,
        1,
        MODEL_VERSION,
    )
    assert narrative.violations == ()


async def test_redacted_story_hides_the_address_and_is_recorded_with_its_links(
    connection: Connection, llm: LLMClient
) -> None:
    sink = CollectingSink()
    trace_id = uuid.uuid4().hex
    generator = NarrativeGenerator(llm, guardrails=connection.guardrails, policy=POLICY, events=sink)

    narrative = await generator.generate("letter", trace_id=trace_id, request_id="story-7")

    original = STORIES["letter"]
    start = original.index(EMAIL)
    assert (narrative.status, narrative.decision) == (NarrativeStatus.REDACTED, Decision.REDACT)
    assert EMAIL not in narrative.text
    assert narrative.text.startswith(original[:start])
    assert narrative.text.endswith(original[start + len(EMAIL) :])
    [found] = narrative.violations
    assert (found.rule_id, found.severity, found.category, found.start, found.end) == (
        "pii",
        Severity.ERROR,
        "pii",
        start,
        start + len(EMAIL),
    )
    assert EMAIL not in found.excerpt
    records = [r async for r in connection.guardrails.list_violations(filter=f'trace_id = "{trace_id}"')]
    [record] = records
    assert (record.rule_id, record.links.model_version, record.links.trace_id, record.policy) == (
        "pii",
        MODEL_VERSION,
        trace_id,
        POLICY,
    )
    assert EMAIL not in record.excerpt
    [event] = sink.guardrail_events()
    assert (event.decision, event.violation_count, event.checked, event.trace_id) == (
        "redact",
        1,
        True,
        trace_id,
    )


async def test_blocked_story_is_replaced_by_the_policys_fallback(
    connection: Connection, llm: LLMClient
) -> None:
    sink = CollectingSink()
    llm_with_events = LLMClient(
        ScriptedProvider(), model=ConfiguredModel("story-model", version=MODEL_VERSION), events=sink
    )
    generator = NarrativeGenerator(
        llm_with_events, guardrails=connection.guardrails, policy=POLICY, fail_mode=FailMode.OPEN, events=sink
    )

    async with llm_with_events:
        narrative = await generator.generate("battle")

    assert narrative.text == POLICY_FALLBACK
    assert (narrative.status, narrative.decision, narrative.highest_severity) == (
        NarrativeStatus.BLOCKED,
        Decision.BLOCK,
        Severity.CRITICAL,
    )
    assert "violence (critical, violence)" in narrative.reason
    # One event from each side of the same request, joinable on the model version.
    [inference] = [e for e in sink.events if isinstance(e, InferenceEvent)]
    [guardrail] = sink.guardrail_events()
    assert (inference.model_version, guardrail.model_version) == (MODEL_VERSION, MODEL_VERSION)
    assert (guardrail.decision, guardrail.rule_ids, guardrail.highest_severity) == (
        "block",
        ("violence",),
        "critical",
    )


async def test_an_unknown_policy_is_a_configuration_error(connection: Connection, llm: LLMClient) -> None:
    generator = NarrativeGenerator(
        llm, guardrails=connection.guardrails, policy="policies/missing", fail_mode=FailMode.OPEN
    )

    with pytest.raises(PolicyNotFound):
        await generator.generate("calm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("fail_mode", "status", "text"),
    [
        (FailMode.OPEN, NarrativeStatus.FAILED_OPEN, STORIES["battle"]),
        (FailMode.CLOSED, NarrativeStatus.FAILED_CLOSED, LOCAL_FALLBACK),
    ],
)
async def test_nothing_listening_lets_the_fail_mode_decide(
    llm: LLMClient, fail_mode: FailMode, status: NarrativeStatus, text: str
) -> None:
    sink = CollectingSink()
    async with connect(f"127.0.0.1:{free_port()}", retry=NO_RETRY, timeout=2) as down:
        generator = NarrativeGenerator(
            llm,
            guardrails=down.guardrails,
            policy=POLICY,
            fail_mode=fail_mode,
            local_fallback=LOCAL_FALLBACK,
            events=sink,
        )
        narrative = await generator.generate("battle")

    assert (narrative.text, narrative.status, narrative.checked, narrative.decision) == (
        text,
        status,
        False,
        None,
    )
    assert "unreachable" in narrative.reason
    [event] = sink.guardrail_events()
    assert (event.status, event.checked, event.fail_mode) == ("error", False, fail_mode.value)


async def test_a_monitor_stopped_mid_run_fails_closed(database_url: str, llm: LLMClient) -> None:
    running = build_server(ServerConfig(address="127.0.0.1:0", database_url=database_url, auth=False))
    await running.start()
    stopped = False
    try:
        await running.wait_serving()
        async with connect(running.target, retry=NO_RETRY, timeout=2) as conn:
            await conn.guardrails.create_policy(policy_id="kids-safe", policy=kids_policy())
            generator = NarrativeGenerator(
                llm, guardrails=conn.guardrails, policy=POLICY, local_fallback=LOCAL_FALLBACK
            )
            before = await generator.generate("calm")
            await running.stop(0)
            stopped = True
            after = await generator.generate("calm")
    finally:
        if not stopped:
            await running.stop(0)

    assert (before.status, before.text) == (NarrativeStatus.ALLOWED, STORIES["calm"])
    assert (after.status, after.text, after.checked) == (NarrativeStatus.FAILED_CLOSED, LOCAL_FALLBACK, False)
