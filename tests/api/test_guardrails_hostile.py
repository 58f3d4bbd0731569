"""The guardrails monitor against callers with real tokens who try to turn it against the server.

Each test reproduces an attack: a policy that makes the server fetch a URL or read a file, schemas and texts
that cost minutes or gigabytes, checks that record millions of rows or answer more than a client can
read, excerpts that rebuild the text, a hash that confirms a guessed secret, a Duration out of its range.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from modelplane.server.guardrails.engine import MAX_LISTED, MAX_LISTED_PER_RULE
from modelplane.v1 import guardrails_pb2 as pb
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from tests.support import StartServer
from tests.support.hostile_schemas import ref_chain, valid_but_slow
from tests.support.rich_errors import fails

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceAsyncStub

# The client's default largest message: every answer must fit in it.
CLIENT_DEFAULT_MAX = 4 * 1024 * 1024


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> GuardrailServiceAsyncStub:
    return GuardrailServiceStub(channel)


def json_rule(schema: Any, rule_id: str = "shape") -> pb.Rule:
    return pb.Rule(
        id=rule_id,
        severity=pb.SEVERITY_CRITICAL,
        category="format",
        json=pb.JsonRule(schema=json.dumps(schema)),
    )


async def create(
    stub: GuardrailServiceAsyncStub, policy_id: str, rules: list[pb.Rule], **fields: Any
) -> pb.Policy:
    # A JSON rule would block any prose fallback: such policies have none.
    fallback = "" if any(rule.HasField("json") for rule in rules) else "Not available."
    policy = pb.Policy(rules=rules, fail_mode=pb.FAIL_MODE_CLOSED, default_fallback=fallback, **fields)
    return (await stub.CreatePolicy(pb.CreatePolicyRequest(policy_id=policy_id, policy=policy))).policy


async def check(stub: GuardrailServiceAsyncStub, policy_id: str, text: str, **kwargs: Any) -> pb.CheckVerdict:
    request = pb.CheckContentRequest(policy=f"policies/{policy_id}", text=text, **kwargs)
    return (await stub.CheckContent(request, timeout=120)).verdict


def budget(milliseconds: int) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromMilliseconds(milliseconds)
    return value


# ---- 1. no policy reaches the network or the file system


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP listener on loopback that records whatever connects to it; it must receive nothing."""
    received: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(1024) or b"(connected)")
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, received
    finally:
        server.close()
        await server.wait_closed()


async def test_a_schema_ref_to_a_url_is_refused_and_nothing_is_fetched(
    stub: GuardrailServiceAsyncStub, listener: tuple[int, list[bytes]]
) -> None:
    port, received = listener
    url = f"http://127.0.0.1:{port}/x.json"
    error = await fails(create(stub, "remote", [json_rule({"$ref": url})]))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_RULE"
    assert error.field_paths == ["policy.rules[0].json.schema.$ref"]
    # Deeper in the schema, behind an $id that would make a relative ref remote, and as a fallback's check.
    nested = {"type": "object", "properties": {"a": {"items": {"$ref": url}}}}
    error = await fails(create(stub, "nested", [json_rule(nested)]))
    assert error.field_paths == ["policy.rules[0].json.schema.properties.a.items.$ref"]
    based = {"$id": f"http://127.0.0.1:{port}/", "$ref": "x.json"}
    error = await fails(create(stub, "based", [json_rule(based)]))
    assert set(error.field_paths) == {"policy.rules[0].json.schema.$id", "policy.rules[0].json.schema.$ref"}
    await asyncio.sleep(0.2)
    assert received == []


async def test_a_schema_ref_to_a_file_is_refused(stub: GuardrailServiceAsyncStub) -> None:
    for ref in ("file:///etc/passwd", "/etc/passwd", "other.json#/a", "#/$defs/missing", "#/type"):
        error = await fails(create(stub, "files", [json_rule({"type": "string", "$ref": ref})]))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, ref
        assert error.field_paths == ["policy.rules[0].json.schema.$ref"], ref
        assert "no URL, file or other document is read" in error.message, ref


async def test_refs_inside_the_schema_still_work(stub: GuardrailServiceAsyncStub) -> None:
    schema = {"$defs": {"word": {"type": "string", "pattern": "^[a-z]+$"}}, "items": {"$ref": "#/$defs/word"}}
    await create(stub, "inside", [json_rule(schema)])
    assert (await check(stub, "inside", '["ok", "fine"]')).decision == pb.DECISION_ALLOW
    assert (await check(stub, "inside", '["ok", "NOT"]')).decision == pb.DECISION_BLOCK


# ---- 2. schema complexity is bounded when the policy is written, and every check has its budget


async def test_an_exponential_schema_is_refused_when_written(stub: GuardrailServiceAsyncStub) -> None:
    for depth in (16, 22):
        error = await fails(create(stub, "exponential", [json_rule(ref_chain(depth))]))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "INVALID_RULE"
        assert error.field_paths == ["policy.rules[0].json.schema"]
        assert "subschemas" in error.message
    cycle = {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
    error = await fails(create(stub, "cycle", [json_rule(cycle)]))
    assert error.field_paths[0].startswith("policy.rules[0].json.schema")
    assert "cycle" in error.message


async def test_a_json_check_stops_at_the_time_budget_whatever_the_texts_size(
    stub: GuardrailServiceAsyncStub,
) -> None:
    # Within the bound, yet slow on every element of a long array.
    await create(stub, "slow-json", [json_rule(valid_but_slow(10))], time_budget=budget(50))
    verdict = await check(stub, "slow-json", json.dumps([1] * 50_000))
    assert verdict.unchecked
    assert verdict.decision == pb.DECISION_BLOCK
    # A short text is under the budget too: it no longer runs on the event loop outside any budget.
    short = json.dumps([1] * 2_000)
    assert len(short) < 16 * 1024
    assert (await check(stub, "slow-json", short)).unchecked


async def test_unique_items_over_many_objects_is_checked(stub: GuardrailServiceAsyncStub) -> None:
    await create(stub, "unique", [json_rule({"type": "array", "uniqueItems": True})])
    distinct = json.dumps([{"n": i, "tag": [i, str(i)]} for i in range(1_500)])
    assert (await check(stub, "unique", distinct)).decision == pb.DECISION_ALLOW
    repeated = json.dumps([{"n": i % 1_499, "tag": [1.0]} for i in range(1_500)])
    assert (await check(stub, "unique", repeated)).decision == pb.DECISION_BLOCK
    # JSON equality: 1 and 1.0 are the same item, true and 1 are not.
    assert (await check(stub, "unique", "[1, 1.0]")).decision == pb.DECISION_BLOCK
    assert (await check(stub, "unique", "[true, 1]")).decision == pb.DECISION_ALLOW


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("patternProperties", {"^a": {}}),
        ("$dynamicRef", "#x"),
        ("$recursiveRef", "#"),
        ("unevaluatedProperties", False),
    ],
)
async def test_unbounded_schema_keywords_are_refused(
    stub: GuardrailServiceAsyncStub, keyword: str, value: Any
) -> None:
    error = await fails(create(stub, "keywords", [json_rule({"properties": {"a": {keyword: value}}})]))
    assert error.field_paths == [f"policy.rules[0].json.schema.properties.a.{keyword}"]


# ---- 3. what one check records and returns is capped; the caller always gets its verdict


def banned(rule_id: str, terms: list[str], severity: pb.Severity.ValueType = pb.SEVERITY_CRITICAL) -> pb.Rule:
    return pb.Rule(
        id=rule_id, severity=severity, category="violence", banned_terms=pb.BannedTermsRule(terms=terms)
    )


async def test_a_million_matches_give_a_verdict_and_a_bounded_record(
    stub: GuardrailServiceAsyncStub,
) -> None:
    # A budget that no load on the machine runs out: what this bounds is the record and the answer.
    await create(stub, "kills", [banned("violence", ["kill", "stab"])], time_budget=budget(60_000))
    text = "kill " * 200_000
    response = await stub.CheckContent(
        pb.CheckContentRequest(policy="policies/kills", text=text), timeout=120
    )
    verdict = response.verdict
    assert not verdict.unchecked
    assert verdict.decision == pb.DECISION_BLOCK
    assert len(verdict.violations) == MAX_LISTED_PER_RULE
    assert dict(verdict.omitted_violations) == {"violence": 200_000 - MAX_LISTED_PER_RULE}
    assert response.ByteSize() < CLIENT_DEFAULT_MAX
    # The records hold the listed violations; the check's count holds every one.
    records = await stub.ListViolations(pb.ListViolationsRequest(page_size=1000))
    assert len(records.violations) == MAX_LISTED_PER_RULE
    groups = await stub.AggregateViolations(pb.AggregateViolationsRequest(policy="policies/kills"))
    assert [g.violations for g in groups.groups] == [200_000]


async def test_a_thousand_regex_rules_list_at_most_the_global_cap(stub: GuardrailServiceAsyncStub) -> None:
    rules = [
        pb.Rule(id=f"r{i}", severity=pb.SEVERITY_INFO, category="noise", regex=pb.RegexRule(pattern="[a-z]"))
        for i in range(1_000)
    ]
    # A budget long enough to count every match (the default 1 s is not: the check would be unchecked).
    await create(stub, "noisy", rules, time_budget=budget(60_000))
    text = "abcdefghij " * 20
    verdict = await check(stub, "noisy", text)
    assert not verdict.unchecked
    assert len(verdict.violations) == MAX_LISTED
    found = len(verdict.violations) + sum(verdict.omitted_violations.values())
    assert found == 1_000 * 200


async def test_every_answer_fits_the_clients_default_message_size(stub: GuardrailServiceAsyncStub) -> None:
    category = "c" * 63
    await create(
        stub,
        "dense",
        [
            pb.Rule(id="pii", severity=pb.SEVERITY_ERROR, category=category, pii=pb.PiiRule()),
            pb.Rule(
                id="letters", severity=pb.SEVERITY_ERROR, category=category, regex=pb.RegexRule(pattern="x")
            ),
        ],
        # Long enough to find every match: what is bounded here is the answer, not the time.
        time_budget=budget(60_000),
    )
    # PII-dense: 50,000 card numbers, each redacted with a long category.
    cards = await stub.CheckContent(
        pb.CheckContentRequest(policy="policies/dense", text="4111 1111 1111 1111 " * 50_000), timeout=120
    )
    assert cards.verdict.decision == pb.DECISION_REDACT
    assert cards.ByteSize() < CLIENT_DEFAULT_MAX
    # A million one-letter matches would redact to 74 MB: the answer is a BLOCK instead.
    letters = await stub.CheckContent(
        pb.CheckContentRequest(policy="policies/dense", text="x" * 1_000_000), timeout=120
    )
    assert letters.verdict.decision == pb.DECISION_BLOCK
    assert letters.verdict.redaction_too_large
    assert letters.verdict.fallback_content == "Not available."
    assert letters.ByteSize() < CLIENT_DEFAULT_MAX


async def test_a_stream_of_a_million_matches_ends_with_its_verdict(stub: GuardrailServiceAsyncStub) -> None:
    await create(
        stub, "stream-kills", [banned("violence", ["kill"], pb.SEVERITY_WARNING)], time_budget=budget(60_000)
    )

    async def requests() -> AsyncIterator[pb.CheckStreamRequest]:
        yield pb.CheckStreamRequest(start=pb.CheckStreamStart(policy="policies/stream-kills"))
        for _ in range(10):
            yield pb.CheckStreamRequest(chunk="kill " * 20_000)
        yield pb.CheckStreamRequest(end=pb.CheckStreamEnd())

    responses = [r async for r in stub.CheckStream(requests(), timeout=120)]
    final = responses[-1].verdict
    assert final.final
    assert len(final.violations) == MAX_LISTED_PER_RULE
    assert dict(final.omitted_violations) == {"violence": 200_000 - MAX_LISTED_PER_RULE}
    progressed = sum(len(r.progress.violations) for r in responses if r.HasField("progress"))
    assert progressed <= MAX_LISTED_PER_RULE
    assert all(r.ByteSize() < CLIENT_DEFAULT_MAX for r in responses)


# ---- 5. excerpts show nothing the rules did not match, unless a policy asks for context


async def test_excerpts_do_not_rebuild_the_text(stub: GuardrailServiceAsyncStub) -> None:
    vowels = pb.Rule(
        id="vowels", severity=pb.SEVERITY_INFO, category="style", regex=pb.RegexRule(pattern="[aeiou]")
    )
    await create(stub, "vowels", [vowels])
    secret = "the vault code is xk7-zulu-93, tell nobody at all"
    verdict = await check(stub, "vowels", secret)
    assert verdict.violations
    assert {v.excerpt for v in verdict.violations} == {"*"}
    records = await stub.ListViolations(pb.ListViolationsRequest(page_size=1000))
    assert {r.excerpt for r in records.violations} == {"*"}

    await create(stub, "context", [vowels], excerpt_context_chars=4)
    first = (await check(stub, "context", secret)).violations[0]
    # Four characters each side; the other vowels in the window stay masked.
    assert first.excerpt == "th* v**"
    error = await fails(create(stub, "too-much", [vowels], excerpt_context_chars=33))
    assert error.field_paths == ["policy.excerpt_context_chars"]
    # A choice made on the policy: an update can make it, and the next revision carries it.
    updated = await stub.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy=pb.Policy(name="policies/vowels", excerpt_context_chars=2),
            update_mask=field_mask_pb2.FieldMask(paths=["excerpt_context_chars"]),
        )
    )
    assert (updated.policy.revision, updated.policy.excerpt_context_chars) == (2, 2)
    assert (await check(stub, "vowels", secret)).violations[0].excerpt == "th* v"


# ---- 7. a Duration out of its own range is refused


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(1, 2_000_000_000), (0, -1_000_000), (1, -1_000_000), (-1, 0), (0, 1_500_000)]
)
async def test_a_time_budget_out_of_range_is_refused(
    stub: GuardrailServiceAsyncStub, seconds: int, nanos: int
) -> None:
    value = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    error = await fails(create(stub, "budget", [banned("v", ["kill"])], time_budget=value))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_paths == ["policy.time_budget"]


# ---- 6. no service or reader token can confirm a guessed secret


async def _token_channels(database_url: str, target: str) -> dict[str, grpc.aio.Channel]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        secrets = {
            role: (await create_token(conn, f"hostile-{role}", role))[1]
            for role in ("operator", "service", "reader")
        }
    finally:
        await conn.close()
    channels: dict[str, grpc.aio.Channel] = {}
    for role, secret in secrets.items():
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(), grpc.access_token_call_credentials(secret)
        )
        channels[role] = grpc.aio.secure_channel(target, credentials)
    return channels


async def test_matched_hashes_confirm_no_guess_for_service_or_reader(
    start_server: StartServer, database_url: str
) -> None:
    server: ModelplaneServer = await start_server(auth=True)
    channels = await _token_channels(database_url, server.target)
    try:
        operator, service, reader = (
            GuardrailServiceStub(channels[r]) for r in ("operator", "service", "reader")
        )
        ssn = pb.Rule(
            id="ssn", severity=pb.SEVERITY_WARNING, category="pii", pii=pb.PiiRule(kinds=[pb.PII_KIND_US_SSN])
        )
        await create(operator, "people", [ssn])
        await create(operator, "others", [ssn])
        victim = "123-45-6789"
        await check(service, "people", f"the customer's number is {victim}")
        # The guesses: 1,000 candidates in one check, then the records to compare hashes.
        guesses = " ".join(f"123-45-{n:04d}" for n in range(6_000, 7_000))
        await check(service, "people", guesses)
        for stub in (service, reader):
            records = await stub.ListViolations(pb.ListViolationsRequest(page_size=1000))
            assert records.violations
            assert {r.matched_hash for r in records.violations} == {""}
        # An operator sees hashes: equal within a policy, different across policies.
        await check(service, "others", f"the customer's number is {victim}")
        seen = await operator.ListViolations(
            pb.ListViolationsRequest(page_size=1000, filter='rule_id = "ssn"')
        )
        victim_hashes = {
            r.policy: r.matched_hash
            for r in seen.violations
            if r.span.end - r.span.start == len(victim) and r.span.start == 25
        }
        assert set(victim_hashes) == {"policies/people", "policies/others"}
        assert all(len(h) == 64 for h in victim_hashes.values())
        assert victim_hashes["policies/people"] != victim_hashes["policies/others"]
    finally:
        for channel in channels.values():
            await channel.close(grace=None)


# ---- 4. the event loop answers while hostile checks run


async def test_health_answers_while_hostile_checks_run(
    stub: GuardrailServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    await create(stub, "slow", [json_rule(valid_but_slow(10))], time_budget=budget(2_000))
    await create(stub, "many", [banned("violence", ["kill"])])
    health = health_pb2_grpc.HealthStub(channel)
    checks = [
        asyncio.ensure_future(check(stub, "slow", json.dumps([1] * 100_000))),
        asyncio.ensure_future(check(stub, "many", "kill " * 200_000)),
    ]
    answered = 0
    while not all(c.done() for c in checks):
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        answered += 1
        await asyncio.sleep(0.01)
    assert answered > 1
    slow, many = await asyncio.gather(*checks)
    assert slow.unchecked
    assert many.decision == pb.DECISION_BLOCK


async def test_a_stream_that_outlasts_its_budget_still_ends_with_its_verdict(
    stub: GuardrailServiceAsyncStub,
) -> None:
    # Early scanning of all chunks together gets one budget; chunk after chunk, then the final check.
    await create(stub, "tight", [banned("violence", ["kill"])], time_budget=budget(1))

    async def requests() -> AsyncIterator[pb.CheckStreamRequest]:
        yield pb.CheckStreamRequest(start=pb.CheckStreamStart(policy="policies/tight"))
        for _ in range(10):
            yield pb.CheckStreamRequest(chunk="a calm story " * 6_000)
        for _ in range(2_000):
            yield pb.CheckStreamRequest(chunk="calm ")
        yield pb.CheckStreamRequest(end=pb.CheckStreamEnd())

    responses = [r async for r in stub.CheckStream(requests(), timeout=120)]
    final = responses[-1].verdict
    assert final.final
    assert final.decision == pb.DECISION_BLOCK if final.unchecked else pb.DECISION_ALLOW
