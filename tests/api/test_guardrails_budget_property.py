"""Random policies and texts: every check ends with a verdict within its call's deadline, and health answers
while it runs.

Policies mix every rule kind with the shapes that hurt: expressions that match every character, terms that
overlap, JSON Schemas with chains of refs and uniqueItems, short time budgets; texts are up to 200,000
characters of repeated fragments, sent whole (CheckContent) or in chunks (CheckStream). The call deadline
(the policy's budget plus CALL_SLACK) is a liveness bound, not a performance figure: a check that ignored its
budget would miss it by seconds.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from modelplane.v1 import guardrails_pb2 as pb
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from tests.support.hostile_schemas import ref_chain, valid_but_slow
from tests.support.live_server import LiveServer, start_live_server
from tests.support.rich_errors import rich

SERVICE = pb.DESCRIPTOR.services_by_name["GuardrailService"]
# Seconds a check's call may take beyond its policy's budget: the answer's own way through gRPC, the record.
CALL_SLACK = 10.0
CLIENT_DEFAULT_MAX = 4 * 1024 * 1024
FRAGMENTS = ["a", "kill ", "4111 1111 1111 1111 ", "bob@example.com ", "[1,", "1]", '{"a":', "é", "\n", " "]


SCHEMAS = st.one_of(
    st.builds(ref_chain, st.integers(1, 14), st.just("items")),
    st.builds(valid_but_slow, st.integers(1, 14)),
    st.just({"type": "array", "uniqueItems": True}),
    st.just({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|aa)+$"}}}),
)
KINDS = st.one_of(
    st.builds(
        lambda p: {"regex": pb.RegexRule(pattern=p)}, st.sampled_from(["a", "[a-z]", ".", "a+", r"\d"])
    ),
    st.builds(
        lambda terms, inside: {"banned_terms": pb.BannedTermsRule(terms=terms, match_inside_words=inside)},
        st.lists(st.sampled_from(["a", "aa", "kill", "ki", "é"]), min_size=1, max_size=4, unique=True),
        st.booleans(),
    ),
    st.just({"pii": pb.PiiRule()}),
    st.builds(lambda n: {"length": pb.LengthRule(max_chars=n)}, st.integers(1, 1000)),
    st.builds(lambda s: {"json": pb.JsonRule(schema=json.dumps(s))}, SCHEMAS),
    st.builds(lambda p: {"required_pattern": pb.RequiredPatternRule(pattern=p)}, st.sampled_from(["z", "a"])),
)
SEVERITIES = st.sampled_from([pb.SEVERITY_INFO, pb.SEVERITY_WARNING, pb.SEVERITY_ERROR, pb.SEVERITY_CRITICAL])
POLICIES = st.builds(
    lambda kinds, severities, budget_ms, context, closed: pb.Policy(
        rules=[
            pb.Rule(id=f"r{i}", severity=severity, category=f"c{i % 2}", **kind)
            for i, (kind, severity) in enumerate(zip(kinds, severities, strict=False))
        ],
        fail_mode=pb.FAIL_MODE_CLOSED if closed else pb.FAIL_MODE_OPEN,
        time_budget=duration_pb2.Duration(seconds=budget_ms // 1000, nanos=budget_ms % 1000 * 1_000_000),
        excerpt_context_chars=context,
    ),
    st.lists(KINDS, min_size=1, max_size=6),
    st.lists(SEVERITIES, min_size=6, max_size=6),
    st.integers(10, 300),
    st.sampled_from([0, 0, 8]),
    st.booleans(),
)
TEXTS = st.builds(
    lambda parts, repeat: "".join(parts) * repeat,
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8),
    st.integers(1, 20_000),
).filter(lambda text: len(text) <= 200_000)


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[LiveServer]:
    def unused(*_: Any) -> None:
        raise AssertionError("this module makes its own assertions")

    with start_live_server(admin_url, template_database, SERVICE, unused) as server:
        yield server


async def _check_while_health_answers(
    live: LiveServer, policy: pb.Policy, text: str, streamed: bool
) -> tuple[pb.CheckVerdict, list[int]] | None:
    stub = GuardrailServiceStub(live.channel)
    policy_id = f"p-{uuid.uuid4().hex[:12]}"
    refused: grpc.aio.AioRpcError | None = None
    try:
        await stub.CreatePolicy(pb.CreatePolicyRequest(policy_id=policy_id, policy=policy), timeout=30)
    except grpc.aio.AioRpcError as error:
        refused = error
    if refused is not None:
        # A policy the server refuses is refused with its reasons, never with an internal error.
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, rich(refused)
        return None
    deadline = policy.time_budget.ToMilliseconds() / 1000 + CALL_SLACK
    name = f"policies/{policy_id}"
    sizes: list[int] = []

    async def one_shot() -> pb.CheckVerdict:
        response = await stub.CheckContent(pb.CheckContentRequest(policy=name, text=text), timeout=deadline)
        sizes.append(response.ByteSize())
        return response.verdict

    async def streamed_check() -> pb.CheckVerdict:
        async def requests() -> AsyncIterator[pb.CheckStreamRequest]:
            yield pb.CheckStreamRequest(start=pb.CheckStreamStart(policy=name))
            for at in range(0, len(text), 50_000):
                yield pb.CheckStreamRequest(chunk=text[at : at + 50_000])
            yield pb.CheckStreamRequest(end=pb.CheckStreamEnd())

        responses = [r async for r in stub.CheckStream(requests(), timeout=deadline)]
        sizes.extend(r.ByteSize() for r in responses)
        assert responses[-1].WhichOneof("event") == "verdict"
        return responses[-1].verdict

    health = health_pb2_grpc.HealthStub(live.channel)
    task = asyncio.ensure_future(streamed_check() if streamed else one_shot())
    while not task.done():
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(0.005)
    return await task, sizes


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(policy=POLICIES, text=TEXTS, streamed=st.booleans())
def test_every_check_ends_with_a_verdict_and_health_answers(
    live: LiveServer, policy: pb.Policy, text: str, streamed: bool
) -> None:
    outcome = live.run(_check_while_health_answers(live, policy, text, streamed))
    assume(outcome is not None)
    assert outcome is not None
    verdict, sizes = outcome
    assert verdict.final
    assert verdict.decision in (pb.DECISION_ALLOW, pb.DECISION_REDACT, pb.DECISION_BLOCK)
    if verdict.unchecked:
        expected = pb.DECISION_BLOCK if policy.fail_mode == pb.FAIL_MODE_CLOSED else pb.DECISION_ALLOW
        assert verdict.decision == expected
    assert all(size < CLIENT_DEFAULT_MAX for size in sizes)
    assert len(verdict.violations) <= 1_000
