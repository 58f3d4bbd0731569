"""GuardrailService through a real server on loopback: every RPC, its rules, its codes and its records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from modelplane.server.app import ModelplaneServer
from modelplane.v1 import common_pb2
from modelplane.v1 import guardrails_pb2 as pb
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from tests.support.rich_errors import fails, rich

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceAsyncStub

CARD = "4111 1111 1111 1111"  # passes the Luhn check
BAD_CARD = "4111 1111 1111 1112"  # fails it
VIOLENCE_FALLBACK = "The knight and the dragon became friends."
DEFAULT_FALLBACK = "This story is not available."


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> GuardrailServiceAsyncStub:
    return GuardrailServiceStub(channel)


def story_policy(**overrides: Any) -> pb.Policy:
    """WARNING on mild words, ERROR (redact) on cards, CRITICAL (block) on violence, INFO on 'maybe'."""
    settings: dict[str, Any] = {
        "display_name": "Stories for children",
        "rules": [
            pb.Rule(
                id="mild",
                severity=pb.SEVERITY_WARNING,
                category="language",
                banned_terms=pb.BannedTermsRule(terms=["darn", "heck"]),
            ),
            pb.Rule(
                id="cards",
                severity=pb.SEVERITY_ERROR,
                category="pii",
                pii=pb.PiiRule(kinds=[pb.PII_KIND_PAYMENT_CARD]),
            ),
            pb.Rule(
                id="violence",
                severity=pb.SEVERITY_CRITICAL,
                category="violence",
                banned_terms=pb.BannedTermsRule(terms=["kill", "stab"]),
            ),
            pb.Rule(
                id="hedging",
                severity=pb.SEVERITY_INFO,
                category="style",
                regex=pb.RegexRule(pattern=r"\bmaybe\b", case_insensitive=True),
            ),
        ],
        "fallback_content": {"violence": VIOLENCE_FALLBACK},
        "default_fallback": DEFAULT_FALLBACK,
        "fail_mode": pb.FAIL_MODE_CLOSED,
        **overrides,
    }
    return pb.Policy(**settings)


async def create(stub: GuardrailServiceAsyncStub, policy_id: str = "stories", **overrides: Any) -> pb.Policy:
    response = await stub.CreatePolicy(
        pb.CreatePolicyRequest(policy_id=policy_id, policy=story_policy(**overrides))
    )
    return response.policy


async def check(
    stub: GuardrailServiceAsyncStub, text: str, *, policy: str = "policies/stories", **kwargs: Any
) -> pb.CheckVerdict:
    response = await stub.CheckContent(pb.CheckContentRequest(policy=policy, text=text, **kwargs))
    return response.verdict


# ---- policies


async def test_policy_life_cycle_keeps_every_revision(stub: GuardrailServiceAsyncStub) -> None:
    created = await create(stub)
    assert created.name == "policies/stories"
    assert created.revision == 1
    assert [r.id for r in created.rules] == ["mild", "cards", "violence", "hedging"]
    assert created.decisions.critical == pb.DECISION_BLOCK
    assert created.decisions.warning == pb.DECISION_ALLOW
    assert created.time_budget.ToMilliseconds() == 1000

    updated = (
        await stub.UpdatePolicy(
            pb.UpdatePolicyRequest(
                policy=pb.Policy(
                    name=created.name,
                    etag=created.etag,
                    decisions=pb.DecisionTable(
                        info=pb.DECISION_ALLOW,
                        warning=pb.DECISION_BLOCK,
                        error=pb.DECISION_REDACT,
                        critical=pb.DECISION_BLOCK,
                    ),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["decisions"]),
            )
        )
    ).policy
    assert updated.revision == 2
    assert updated.etag != created.etag
    assert updated.display_name == "Stories for children"  # not in the mask: kept

    old = (await stub.GetPolicy(pb.GetPolicyRequest(name=created.name, revision=1))).policy
    assert old.decisions.warning == pb.DECISION_ALLOW
    latest = (await stub.GetPolicy(pb.GetPolicyRequest(name=created.name))).policy
    assert latest.decisions.warning == pb.DECISION_BLOCK

    # A check names the revision it used, and an old revision still checks with its own rules.
    assert (await check(stub, "Oh darn.")).decision == pb.DECISION_BLOCK
    at_one = await check(stub, "Oh darn.", policy_revision=1)
    assert (at_one.decision, at_one.policy_revision) == (pb.DECISION_ALLOW, 1)

    revisions = await stub.ListPolicyRevisions(pb.ListPolicyRevisionsRequest(name=created.name, page_size=1))
    assert [p.revision for p in revisions.policies] == [2]
    rest = await stub.ListPolicyRevisions(
        pb.ListPolicyRevisionsRequest(name=created.name, page_size=1, page_token=revisions.next_page_token)
    )
    assert [p.revision for p in rest.policies] == [1]
    assert rest.next_page_token == ""

    stale = await fails(
        stub.UpdatePolicy(
            pb.UpdatePolicyRequest(
                policy=pb.Policy(name=created.name, etag=created.etag, description="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
    )
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")

    listed = await stub.ListPolicies(pb.ListPoliciesRequest(filter='display_name:"children"'))
    assert [p.name for p in listed.policies] == ["policies/stories"]

    await stub.DeletePolicy(pb.DeletePolicyRequest(name=created.name, etag=updated.etag))
    gone = await fails(stub.GetPolicy(pb.GetPolicyRequest(name=created.name)))
    assert (gone.code, gone.reason) == (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND")
    # Created again, it continues the numbering, so old records keep naming the old rules.
    again = await create(stub)
    assert again.revision == 3
    missing = await fails(stub.GetPolicy(pb.GetPolicyRequest(name=created.name, revision=1)))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "POLICY_REVISION_NOT_FOUND")


async def test_policy_errors_name_their_fields(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    taken = await fails(create(stub))
    assert (taken.code, taken.reason) == (grpc.StatusCode.ALREADY_EXISTS, "POLICY_ALREADY_EXISTS")

    bad_regex = story_policy()
    bad_regex.rules[3].regex.pattern = "(unclosed"
    error = await fails(stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="other", policy=bad_regex)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RULE")
    assert error.field_paths == ["policy.rules[3].regex.pattern"]

    bad_schema = story_policy(
        rules=[pb.Rule(id="j", severity=pb.SEVERITY_ERROR, category="format", json=pb.JsonRule(schema="{"))]
    )
    error = await fails(stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="other", policy=bad_schema)))
    assert error.reason == "INVALID_RULE"
    assert error.field_paths == ["policy.rules[0].json.schema"]

    unspecified = story_policy(fail_mode=pb.FAIL_MODE_UNSPECIFIED)
    unspecified.rules[0].severity = pb.SEVERITY_UNSPECIFIED
    unspecified.rules[1].ClearField("pii")
    error = await fails(stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="other", policy=unspecified)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(error.field_paths) == [
        "policy.fail_mode",
        "policy.rules[0].severity",
        "policy.rules[1].kind",
    ]

    breaking = story_policy(fallback_content={"violence": "and then they kill the dragon"})
    error = await fails(stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="other", policy=breaking)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FALLBACK_BREAKS_POLICY")
    assert error.field_paths == ["policy.fallback_content['violence']"]

    error = await fails(stub.CreatePolicy(pb.CreatePolicyRequest(policy_id="Bad Id", policy=story_policy())))
    assert error.field_paths == ["policy_id"]
    error = await fails(stub.GetPolicy(pb.GetPolicyRequest(name="stories")))
    assert error.field_paths == ["name"]
    error = await fails(
        stub.UpdatePolicy(
            pb.UpdatePolicyRequest(
                policy=pb.Policy(name="policies/stories"),
                update_mask=field_mask_pb2.FieldMask(paths=["revision"]),
            )
        )
    )
    assert error.field_paths == ["update_mask.paths"]


# ---- checks


async def test_decision_table_end_to_end(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    clean = await check(stub, "Once upon a time there was a kind dragon.")
    assert clean.decision == pb.DECISION_ALLOW
    assert list(clean.violations) == []
    assert clean.check_id == ""

    # WARNING only: allowed, and listed.
    warned = await check(stub, "Oh darn, said the dragon. Oh heck.")
    assert warned.decision == pb.DECISION_ALLOW
    assert [(v.rule_id, v.severity) for v in warned.violations] == [("mild", pb.SEVERITY_WARNING)] * 2
    assert warned.highest_severity == pb.SEVERITY_WARNING

    # One CRITICAL blocks whatever number of INFO violations come with it.
    text = "Maybe, maybe, maybe the knight will kill the dragon, maybe."
    blocked = await check(stub, text)
    assert blocked.decision == pb.DECISION_BLOCK
    assert blocked.fallback_content == VIOLENCE_FALLBACK
    assert blocked.redacted_text == ""
    assert sum(v.severity == pb.SEVERITY_INFO for v in blocked.violations) == 4
    assert blocked.highest_severity == pb.SEVERITY_CRITICAL
    kill = next(v for v in blocked.violations if v.rule_id == "violence")
    assert text[kill.span.start : kill.span.end] == "kill"
    assert "kill" not in kill.excerpt
    assert blocked.check_id != ""

    # ERROR redacts: the card goes, everything around it stays as it was.
    text = f"Pay with {CARD} today, but not with {BAD_CARD}."
    redacted = await check(stub, text)
    assert redacted.decision == pb.DECISION_REDACT
    assert [v.rule_id for v in redacted.violations] == ["cards"]
    span = redacted.violations[0].span
    assert text[span.start : span.end] == CARD
    assert redacted.redacted_text.startswith(text[: span.start])
    assert redacted.redacted_text.endswith(text[span.end :])
    assert CARD not in redacted.redacted_text
    assert "1111 1111" not in redacted.violations[0].excerpt


async def test_check_errors(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    missing = await fails(stub.CheckContent(pb.CheckContentRequest(policy="policies/nope", text="hi")))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND")
    revision = await fails(
        stub.CheckContent(pb.CheckContentRequest(policy="policies/stories", policy_revision=7, text="hi"))
    )
    assert (revision.code, revision.reason) == (grpc.StatusCode.NOT_FOUND, "POLICY_REVISION_NOT_FOUND")
    links = await fails(
        stub.CheckContent(
            pb.CheckContentRequest(
                policy="policies/stories", text="hi", links=common_pb2.EventLinks(trace_id="not-a-trace")
            )
        )
    )
    assert links.field_paths == ["links.trace_id"]


async def test_text_over_the_limit_is_refused(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    error = await fails(
        stub.CheckContent(pb.CheckContentRequest(policy="policies/stories", text="a" * 1_000_001))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_TOO_LARGE")
    assert error.field_paths == ["text"]
    # The server goes on serving.
    assert (await check(stub, "a" * 1_000_000)).decision == pb.DECISION_ALLOW


async def test_time_budget_runs_out_and_the_fail_mode_decides(stub: GuardrailServiceAsyncStub) -> None:
    budget = duration_pb2.Duration()
    budget.FromMilliseconds(1)
    await create(stub, "closed", time_budget=budget)
    await create(stub, "open", time_budget=budget, fail_mode=pb.FAIL_MODE_OPEN)
    # Many matches to count: far more work than the 1 ms budget, whatever the machine.
    text = "maybe " * 160_000
    closed = await check(stub, text, policy="policies/closed")
    assert closed.unchecked
    assert (closed.decision, closed.fallback_content) == (pb.DECISION_BLOCK, DEFAULT_FALLBACK)
    assert closed.fail_mode == pb.FAIL_MODE_CLOSED
    opened = await check(stub, text, policy="policies/open")
    assert opened.unchecked
    assert opened.decision == pb.DECISION_ALLOW


# ---- streams


async def stream(
    stub: GuardrailServiceAsyncStub, chunks: list[str], *, policy: str = "policies/stories"
) -> list[pb.CheckStreamResponse]:
    async def requests() -> AsyncIterator[pb.CheckStreamRequest]:
        yield pb.CheckStreamRequest(start=pb.CheckStreamStart(policy=policy))
        for chunk in chunks:
            yield pb.CheckStreamRequest(chunk=chunk)
        yield pb.CheckStreamRequest(end=pb.CheckStreamEnd())

    return [response async for response in stub.CheckStream(requests())]


def _verdict_essence(verdict: pb.CheckVerdict) -> tuple[object, ...]:
    return (
        verdict.decision,
        [(v.rule_id, v.span.start, v.span.end, v.excerpt) for v in verdict.violations],
        verdict.redacted_text,
        verdict.fallback_content,
        verdict.highest_severity,
    )


async def test_stream_equals_one_shot_whatever_the_chunking(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    texts = [
        "Oh darn, maybe pay with 4111 1111 1111 1111 now.",
        "The knight did not kill anyone. Heck, maybe.",
        "Nothing to see here.",
    ]
    for text in texts:
        one_shot = await check(stub, text)
        for size in (1, 3, 7, len(text)):
            chunks = [text[i : i + size] for i in range(0, len(text), size)]
            responses = await stream(stub, chunks)
            final = responses[-1]
            assert final.WhichOneof("event") == "verdict"
            assert final.verdict.final
            assert _verdict_essence(final.verdict) == _verdict_essence(one_shot), (text, size)


async def test_stream_sends_an_early_block_before_the_end(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    requests: asyncio.Queue[pb.CheckStreamRequest | None] = asyncio.Queue()

    async def outgoing() -> AsyncIterator[pb.CheckStreamRequest]:
        while (item := await requests.get()) is not None:
            yield item

    call = stub.CheckStream(outgoing())
    await requests.put(pb.CheckStreamRequest(start=pb.CheckStreamStart(policy="policies/stories")))
    await requests.put(pb.CheckStreamRequest(chunk="And then the knight ki"))
    await requests.put(pb.CheckStreamRequest(chunk="ll the dragon "))
    await requests.put(pb.CheckStreamRequest(chunk="with a sword"))
    early: pb.CheckVerdict | None = None
    async for response in call:
        if response.WhichOneof("event") == "verdict":
            early = response.verdict
            break
    # The end has not been sent yet, and the server has already said BLOCK.
    assert early is not None
    assert not early.final
    assert (early.decision, early.fallback_content) == (pb.DECISION_BLOCK, VIOLENCE_FALLBACK)
    await requests.put(pb.CheckStreamRequest(end=pb.CheckStreamEnd()))
    await requests.put(None)
    rest = [response async for response in call]
    assert rest[-1].verdict.final
    assert rest[-1].verdict.decision == pb.DECISION_BLOCK


async def test_stream_out_of_order_is_invalid(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)

    async def requests() -> AsyncIterator[pb.CheckStreamRequest]:
        yield pb.CheckStreamRequest(chunk="no start")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        [r async for r in stub.CheckStream(requests())]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rich(info.value).field_paths == ["start"]


# ---- records


async def test_stored_records_hold_no_sensitive_text(
    stub: GuardrailServiceAsyncStub, database_url: str
) -> None:
    secret_word = "stab"
    await create(stub)
    await check(stub, f"Card {CARD}, the knight will {secret_word} nobody.")
    await check(stub, f"Only {CARD} here", request_id="r-1")
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'bytea', 'character varying')"
        )
        assert any(c["table_name"] == "guardrail_violations" for c in columns)
        found: list[str] = []
        for column in columns:
            table, name = column["table_name"], column["column_name"]
            hits = await conn.fetchval(
                f'SELECT count(*) FROM "{table}" WHERE strpos("{name}"::text, $1) > 0',
                CARD,
            )
            if hits:
                found.append(f"{table}.{name}")
        assert found == []
        stored = await conn.fetchval("SELECT count(*) FROM guardrail_violations")
        assert stored == 3
    finally:
        await conn.close()


async def _fixture_checks(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub)
    v1 = common_pb2.EventLinks(
        model_version="models/chat/versions/1",
        deployment="deployments/prod",
        traffic_slot=common_pb2.TRAFFIC_SLOT_STABLE,
    )
    v2 = common_pb2.EventLinks(
        model_version="models/chat/versions/2",
        deployment="deployments/prod",
        traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY,
        trace_id="a" * 32,
    )
    await check(stub, "A clean story.", links=v1)  # clean
    await check(stub, "Another clean story.", links=v2)  # clean
    await check(stub, "Oh darn, oh heck.", links=v1)  # 2 WARNING, ALLOW
    await check(stub, "They kill. Maybe.", links=v2)  # CRITICAL + INFO, BLOCK
    await check(stub, f"Pay {CARD}.", links=v2)  # ERROR, REDACT


async def test_list_violations_filters_and_pages(stub: GuardrailServiceAsyncStub) -> None:
    await _fixture_checks(stub)
    everything = await stub.ListViolations(pb.ListViolationsRequest())
    assert len(everything.violations) == 5
    times = [v.create_time.ToDatetime() for v in everything.violations]
    assert times == sorted(times, reverse=True)
    record = next(v for v in everything.violations if v.rule_id == "cards")
    assert record.policy == "policies/stories"
    assert record.policy_revision == 1
    assert record.links.model_version == "models/chat/versions/2"
    assert record.links.traffic_slot == common_pb2.TRAFFIC_SLOT_CANARY
    assert len(record.matched_hash) == 64
    assert record.check_decision == pb.DECISION_REDACT

    async def names(filter_text: str) -> list[str]:
        response = await stub.ListViolations(pb.ListViolationsRequest(filter=filter_text))
        return sorted(v.rule_id for v in response.violations)

    assert await names("severity = WARNING") == ["mild", "mild"]
    assert await names("decision = BLOCK") == ["violence"]
    assert await names('model_version = "models/chat/versions/2"') == ["cards", "hedging", "violence"]
    assert await names("traffic_slot = STABLE") == ["mild", "mild"]
    assert await names(f'trace_id = "{"a" * 32}"') == ["cards", "hedging", "violence"]
    assert await names('category = "pii" OR rule_id = "hedging"') == ["cards", "hedging"]
    assert await names('policy = "policies/stories"') == ["cards", "hedging", "mild", "mild", "violence"]

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListViolations(pb.ListViolationsRequest(page_size=2, page_token=token))
        seen.extend(v.name for v in page.violations)
        token = page.next_page_token
        if not token:
            break
    assert seen == [v.name for v in everything.violations]

    error = await fails(stub.ListViolations(pb.ListViolationsRequest(filter="nonsense = 1")))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILTER")
    error = await fails(stub.ListViolations(pb.ListViolationsRequest(page_token="garbage")))
    assert error.reason == "INVALID_PAGE_TOKEN"


async def test_aggregate_violations_counts_exactly(stub: GuardrailServiceAsyncStub) -> None:
    await _fixture_checks(stub)
    total = (await stub.AggregateViolations(pb.AggregateViolationsRequest())).groups
    assert len(total) == 1
    group = total[0]
    assert (group.checks, group.checks_with_violations, group.violations, group.blocked_checks) == (
        5,
        3,
        5,
        1,
    )
    assert group.violation_rate == pytest.approx(0.6)
    assert group.block_rate == pytest.approx(0.2)

    by_version = (
        await stub.AggregateViolations(
            pb.AggregateViolationsRequest(group_by=[pb.VIOLATION_GROUP_BY_MODEL_VERSION])
        )
    ).groups
    assert [
        (g.model_version, g.checks, g.checks_with_violations, g.violations, g.blocked_checks)
        for g in by_version
    ] == [
        ("models/chat/versions/1", 2, 1, 2, 0),
        ("models/chat/versions/2", 3, 2, 3, 1),
    ]

    by_rule = (
        await stub.AggregateViolations(pb.AggregateViolationsRequest(group_by=[pb.VIOLATION_GROUP_BY_RULE]))
    ).groups
    assert [(g.policy, g.rule_id, g.checks, g.violations) for g in by_rule] == [
        ("policies/stories", "cards", 1, 1),
        ("policies/stories", "hedging", 1, 1),
        ("policies/stories", "mild", 1, 2),
        ("policies/stories", "violence", 1, 1),
    ]

    by_severity = (
        await stub.AggregateViolations(
            pb.AggregateViolationsRequest(group_by=[pb.VIOLATION_GROUP_BY_SEVERITY])
        )
    ).groups
    assert sorted((g.severity, g.checks) for g in by_severity) == [
        (pb.SEVERITY_UNSPECIFIED, 2),
        (pb.SEVERITY_WARNING, 1),
        (pb.SEVERITY_ERROR, 1),
        (pb.SEVERITY_CRITICAL, 1),
    ]

    width = duration_pb2.Duration(seconds=3600)
    bucketed = (
        await stub.AggregateViolations(
            pb.AggregateViolationsRequest(group_by=[pb.VIOLATION_GROUP_BY_TIME_BUCKET], bucket_width=width)
        )
    ).groups
    assert sum(g.checks for g in bucketed) == 5
    assert all(g.bucket_start.seconds % 3600 == 0 for g in bucketed)

    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    later = (await stub.AggregateViolations(pb.AggregateViolationsRequest(start_time=future))).groups
    assert list(later) == []

    error = await fails(
        stub.AggregateViolations(pb.AggregateViolationsRequest(group_by=[pb.VIOLATION_GROUP_BY_TIME_BUCKET]))
    )
    assert error.field_paths == ["bucket_width"]


async def test_repeated_request_id_stores_one_record(
    stub: GuardrailServiceAsyncStub, server: ModelplaneServer
) -> None:
    await create(stub)
    first = await check(stub, "They kill.", request_id="same")
    second = await check(stub, "They kill.", request_id="same")
    assert first.check_id
    assert second.check_id == ""
    assert first.decision == second.decision == pb.DECISION_BLOCK
    listed = await stub.ListViolations(pb.ListViolationsRequest())
    assert len(listed.violations) == 1


async def test_records_keep_the_callers_request_id_apart_from_the_retry_key(
    stub: GuardrailServiceAsyncStub,
) -> None:
    await create(stub)
    caller = common_pb2.EventLinks(request_id="req-of-the-story", trace_id="a" * 32)
    # Two checks of one caller request (say, two paragraphs), each with its own retry key: both are kept,
    # and both records join the caller's request.
    await check(stub, "They kill.", links=caller, request_id="check-1")
    await check(stub, "They kill again.", links=caller, request_id="check-2")
    await check(stub, "They kill.", links=caller, request_id="check-1")  # a retry: stores nothing
    listed = await stub.ListViolations(pb.ListViolationsRequest())
    assert len(listed.violations) == 2
    assert {v.links.request_id for v in listed.violations} == {"req-of-the-story"}
