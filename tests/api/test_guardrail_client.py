"""The guardrails client against the real modelplane server on loopback: policies and their revisions, checks
one-shot and streamed, records and aggregates, and each documented reason arriving as its own class."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import grpc
import pytest

from modelplane.client import GuardrailClient, RetryPolicy, connect, errors
from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from modelplane.v1 import common_pb2, guardrails_pb2
from tests.support import StartServer

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)
POLICY_ID = "kids-safe"
POLICY = f"policies/{POLICY_ID}"
CARD = "4111 1111 1111 1111"
EMAIL = "mara.keeper@example.org"
FALLBACK = "Once upon a time, everyone was kind."
DEFAULT_FALLBACK = "This story is not available."
RETRIED_TRACE = "0af7651916cd43dd8448eb211c80319c"
RECORDS_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def kids_policy(*, extra_terms: tuple[str, ...] = ()) -> guardrails_pb2.Policy:
    """Violence is blocked, PII redacted, a mild word only listed."""
    return guardrails_pb2.Policy(
        display_name="Kids safe",
        rules=[
            guardrails_pb2.Rule(
                id="violence",
                severity=guardrails_pb2.SEVERITY_CRITICAL,
                category="violence",
                banned_terms=guardrails_pb2.BannedTermsRule(
                    terms=["dragonfire", "sword fight", *extra_terms]
                ),
            ),
            guardrails_pb2.Rule(
                id="pii", severity=guardrails_pb2.SEVERITY_ERROR, category="pii", pii=guardrails_pb2.PiiRule()
            ),
            guardrails_pb2.Rule(
                id="mild",
                severity=guardrails_pb2.SEVERITY_INFO,
                category="style",
                banned_terms=guardrails_pb2.BannedTermsRule(terms=["gloomy"]),
            ),
        ],
        fallback_content={"violence": FALLBACK},
        default_fallback=DEFAULT_FALLBACK,
        fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
    )


@pytest.fixture
async def client(server: ModelplaneServer) -> AsyncIterator[GuardrailClient]:
    async with connect(server.target, retry=FAST_RETRY) as connection:
        yield connection.guardrails


@pytest.fixture
async def policy(client: GuardrailClient) -> guardrails_pb2.Policy:
    return await client.create_policy(policy_id=POLICY_ID, policy=kids_policy())


# Policies.


async def test_policy_lifecycle_keeps_every_revision(client: GuardrailClient) -> None:
    created = await client.create_policy(policy_id=POLICY_ID, policy=kids_policy())
    updated = await client.update_policy(
        policy=guardrails_pb2.Policy(name=POLICY, etag=created.etag, description="second"),
        update_mask=["description"],
    )
    latest = await client.get_policy(name=POLICY)
    first = await client.get_policy(name=POLICY, revision=1)
    revisions = [p.revision async for p in client.list_policy_revisions(name=POLICY, page_size=1)]
    listed = [p.name async for p in client.list_policies(page_size=1)]

    assert (created.name, created.revision) == (POLICY, 1)
    assert (updated.revision, updated.description) == (2, "second")
    assert latest == updated
    assert (first.revision, first.description) == (1, "")
    assert revisions == [2, 1]
    assert listed == [POLICY]

    await client.delete_policy(name=POLICY, etag=updated.etag)
    with pytest.raises(errors.PolicyNotFound) as caught:
        await client.get_policy(name=POLICY)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_documented_reasons_arrive_as_their_classes(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    with pytest.raises(errors.PolicyAlreadyExists):
        await client.create_policy(policy_id=POLICY_ID, policy=kids_policy())
    with pytest.raises(errors.PolicyRevisionNotFound):
        await client.get_policy(name=POLICY, revision=9)
    with pytest.raises(errors.EtagMismatch):
        await client.update_policy(
            policy=guardrails_pb2.Policy(name=POLICY, etag="stale", description="x"),
            update_mask=["description"],
        )
    with pytest.raises(errors.PolicyNotFound):
        await client.check_content(policy="policies/missing", text="hello")


async def test_a_rule_that_does_not_compile_names_its_field(client: GuardrailClient) -> None:
    bad = kids_policy()
    bad.rules.append(
        guardrails_pb2.Rule(
            id="broken",
            severity=guardrails_pb2.SEVERITY_WARNING,
            category="content",
            regex=guardrails_pb2.RegexRule(pattern="(unclosed"),
        )
    )

    with pytest.raises(errors.InvalidRule) as caught:
        await client.create_policy(policy_id="broken", policy=bad)

    assert isinstance(caught.value, errors.InvalidArgument)
    assert [v.field for v in caught.value.field_violations] == ["policy.rules[3].regex.pattern"]


async def test_a_fallback_that_breaks_its_own_policy_is_refused(client: GuardrailClient) -> None:
    bad = kids_policy()
    bad.fallback_content["violence"] = "They had a sword fight at dawn."

    with pytest.raises(errors.FallbackBreaksPolicy) as caught:
        await client.create_policy(policy_id="self-breaking", policy=bad)

    assert caught.value.field_violations
    assert "fallback_content" in caught.value.field_violations[0].field


# Checks.


async def test_check_content_allow_redact_block(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    allowed = await client.check_content(policy=POLICY, text="A gloomy day by the sea.")
    redacted_text = f"Write to {EMAIL} for the map."
    redacted = await client.check_content(policy=POLICY, text=redacted_text)
    blocked = await client.check_content(policy=POLICY, text="Then came the dragonfire and a gloomy night.")

    assert allowed.decision == guardrails_pb2.DECISION_ALLOW
    assert [v.rule_id for v in allowed.violations] == ["mild"]
    assert (allowed.policy, allowed.policy_revision, allowed.final) == (POLICY, policy.revision, True)

    assert redacted.decision == guardrails_pb2.DECISION_REDACT
    assert EMAIL not in redacted.redacted_text
    start = redacted_text.index(EMAIL)
    [span] = [(v.span.start, v.span.end) for v in redacted.violations]
    assert span == (start, start + len(EMAIL))
    # Everything outside the span is left as it was.
    assert redacted.redacted_text.startswith(redacted_text[:start])
    assert redacted.redacted_text.endswith(redacted_text[start + len(EMAIL) :])

    assert blocked.decision == guardrails_pb2.DECISION_BLOCK
    assert blocked.fallback_content == FALLBACK
    assert blocked.highest_severity == guardrails_pb2.SEVERITY_CRITICAL
    assert {v.rule_id for v in blocked.violations} == {"violence", "mild"}


async def test_a_text_over_the_limit_is_refused(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    with pytest.raises(errors.TextTooLarge) as caught:
        await client.check_content(policy=POLICY, text="a" * 1_000_001)

    assert [v.field for v in caught.value.field_violations] == ["text"]


class LoseFirstResponse(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Lets the first call of `method` reach the server, then reports UNAVAILABLE to the client, as when a
    connection breaks after the server answered."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.lost = 0

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        if method.endswith(self.method) and self.lost == 0:
            await call
            self.lost += 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="connection lost",
                debug_error_string="",
            )
        return call


async def test_a_retried_check_stores_its_records_once(
    server: ModelplaneServer, client: GuardrailClient
) -> None:
    await client.create_policy(policy_id=POLICY_ID, policy=kids_policy())
    lose = LoseFirstResponse("/CheckContent")
    # grpc-stubs leaves the interceptor type open and asks for a cast.
    channel = grpc.aio.insecure_channel(server.target, interceptors=[cast(Any, lose)])
    async with GuardrailClient(channel, retry=FAST_RETRY) as retrying:
        verdict = await retrying.check_content(
            policy=POLICY, text="the dragonfire", links=common_pb2.EventLinks(trace_id=RETRIED_TRACE)
        )

    records = [r async for r in client.list_violations(filter=f'trace_id = "{RETRIED_TRACE}"')]
    assert lose.lost == 1
    assert verdict.decision == guardrails_pb2.DECISION_BLOCK
    assert len(records) == 1


async def test_check_stream_gives_an_early_block_and_a_final_verdict_equal_to_one_shot(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    text = "A gloomy tale. Then the drag" + f"onfire rose. Mail {EMAIL}."
    async with client.check_stream(policy=POLICY) as stream:
        # The banned term spans the two chunks.
        await stream.send(text[:28])
        await stream.send(text[28:40])
        early = await asyncio.wait_for(stream.wait_blocked(), 10)
        assert stream.blocked
        await stream.send(text[40:])
        final = await stream.finish()
    one_shot = await client.check_content(policy=POLICY, text=text)

    assert early is not None
    assert (early.decision, early.final, early.fallback_content) == (
        guardrails_pb2.DECISION_BLOCK,
        False,
        FALLBACK,
    )
    assert "violence" in {v.rule_id for v in early.violations}
    assert final.final
    assert (final.decision, final.fallback_content, final.highest_severity) == (
        one_shot.decision,
        one_shot.fallback_content,
        one_shot.highest_severity,
    )
    assert list(final.violations) == list(one_shot.violations)
    assert {v.rule_id for v in stream.violations} <= {v.rule_id for v in final.violations}


async def test_check_stream_of_a_clean_text_has_no_early_verdict(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    async with client.check_stream(policy=POLICY) as stream:
        for chunk in ("A calm ", "day by ", "the sea."):
            await stream.send(chunk)
        final = await stream.finish()

    assert await stream.wait_blocked() is None
    assert not stream.blocked
    assert (final.decision, len(final.violations), final.final) == (guardrails_pb2.DECISION_ALLOW, 0, True)


async def test_check_stream_of_an_unknown_policy_raises_its_reason(client: GuardrailClient) -> None:
    async def check_unknown() -> None:
        async with client.check_stream(policy="policies/missing") as stream:
            await stream.send("hello")
            await stream.finish()

    with pytest.raises(errors.PolicyNotFound):
        await check_unknown()


async def test_leaving_a_stream_unfinished_cancels_it(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    async with client.check_stream(policy=POLICY) as stream:
        # The text after the term makes the match certain: "dragonfires" would not be the banned word.
        await stream.send("the dragonfire and")
        await asyncio.wait_for(stream.wait_blocked(), 10)
    # The channel still serves calls after the stream was dropped.
    verdict = await client.check_content(policy=POLICY, text="calm")

    assert verdict.decision == guardrails_pb2.DECISION_ALLOW


# Records.


async def test_records_are_listed_page_by_page_and_aggregated(
    client: GuardrailClient, policy: guardrails_pb2.Policy
) -> None:
    links = common_pb2.EventLinks(model_version="models/story/versions/1", trace_id=RECORDS_TRACE)
    start = datetime.now(UTC) - timedelta(minutes=1)
    for _ in range(3):
        await client.check_content(policy=POLICY, text=f"Pay with {CARD} now.", links=links)
    await client.check_content(policy=POLICY, text="the dragonfire", links=links)
    await client.check_content(policy=POLICY, text="all calm", links=links)

    records = [r async for r in client.list_violations(filter=f'trace_id = "{RECORDS_TRACE}"', page_size=2)]
    blocked = [r async for r in client.list_violations(filter="decision = BLOCK")]
    groups = await client.aggregate_violations(
        group_by=[guardrails_pb2.VIOLATION_GROUP_BY_MODEL_VERSION], start_time=start, policy=POLICY
    )

    assert len(records) == 4
    assert {r.rule_id for r in records} == {"pii", "violence"}
    assert all(r.links.model_version == "models/story/versions/1" and r.policy == POLICY for r in records)
    # A masked excerpt and a keyed hash, never the card number itself.
    card_records = [r for r in records if r.rule_id == "pii"]
    assert all(CARD not in r.excerpt and CARD.replace(" ", "") not in r.excerpt for r in card_records)
    assert len({r.matched_hash for r in card_records}) == 1
    assert [r.rule_id for r in blocked] == ["violence"]
    [group] = groups
    assert (group.model_version, group.checks, group.checks_with_violations, group.blocked_checks) == (
        "models/story/versions/1",
        5,
        4,
        1,
    )
    assert group.violation_rate == pytest.approx(0.8)


# Auth: a role that may read policies may not necessarily check with them.


async def test_a_token_without_the_role_is_denied(start_server: StartServer, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        _, admin = await create_token(conn, "admin", "admin")
        _, reader = await create_token(conn, "reader", "reader")
    finally:
        await conn.close()
    server = await start_server(auth=True)
    async with connect(server.target, token=admin) as connection:
        await connection.guardrails.create_policy(policy_id=POLICY_ID, policy=kids_policy())
    async with connect(server.target, token=reader) as connection:
        seen = await connection.guardrails.get_policy(name=POLICY)
        with pytest.raises(errors.RoleNotAllowed):
            await connection.guardrails.check_content(policy=POLICY, text="hello")
    async with connect(server.target) as connection:
        with pytest.raises(errors.TokenMissing):
            await connection.guardrails.get_policy(name=POLICY)

    assert seen.name == POLICY
