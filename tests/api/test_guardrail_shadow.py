"""Shadow revisions of guardrail policies against the real server and Postgres: checks answer the active
verdict only, the report counts both revisions and names the rules that differ, samples keep the privacy
rules of violation records, promotion writes a new active revision, and bad input names its fields."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from google.protobuf import duration_pb2

from modelplane.client import GuardrailClient, connect, errors
from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from modelplane.v1 import common_pb2
from modelplane.v1 import guardrails_pb2 as pb
from tests.support import StartServer
from tests.support.hostile_schemas import valid_but_slow

POLICY_ID = "stories"
POLICY = f"policies/{POLICY_ID}"
CARD = "4111 1111 1111 1111"


def _rule(rule_id: str, severity: pb.Severity.ValueType, category: str, **kind: object) -> pb.Rule:
    return pb.Rule(id=rule_id, severity=severity, category=category, **kind)  # type: ignore[arg-type]


def active_policy() -> pb.Policy:
    """Violence blocks, PII redacts, a gloomy word is only listed."""
    return pb.Policy(
        rules=[
            _rule(
                "violence",
                pb.SEVERITY_CRITICAL,
                "violence",
                banned_terms=pb.BannedTermsRule(terms=["dragonfire"]),
            ),
            _rule("pii", pb.SEVERITY_ERROR, "pii", pii=pb.PiiRule(kinds=[pb.PII_KIND_PAYMENT_CARD])),
            _rule("mild", pb.SEVERITY_INFO, "style", banned_terms=pb.BannedTermsRule(terms=["gloomy"])),
        ],
        default_fallback="This story is not available.",
        fail_mode=pb.FAIL_MODE_CLOSED,
    )


def candidate_policy() -> pb.Policy:
    """Stricter: one more violent word, cards blocked instead of redacted, the gloomy rule gone."""
    return pb.Policy(
        rules=[
            _rule(
                "violence",
                pb.SEVERITY_CRITICAL,
                "violence",
                banned_terms=pb.BannedTermsRule(terms=["dragonfire", "thunder"]),
            ),
            _rule("pii", pb.SEVERITY_CRITICAL, "pii", pii=pb.PiiRule(kinds=[pb.PII_KIND_PAYMENT_CARD])),
        ],
        default_fallback="This story is not available.",
        fail_mode=pb.FAIL_MODE_CLOSED,
    )


@pytest.fixture
async def client(server: ModelplaneServer) -> AsyncIterator[GuardrailClient]:
    async with connect(server.target) as connection:
        yield connection.guardrails


# text -> (active decision, shadow decision)
TEXTS = {
    "A dragonfire tale.": (pb.DECISION_BLOCK, pb.DECISION_BLOCK),
    "And the thunder rolled over the hills.": (pb.DECISION_ALLOW, pb.DECISION_BLOCK),
    f"Pay with {CARD} today.": (pb.DECISION_REDACT, pb.DECISION_BLOCK),
    "A gloomy day by the sea.": (pb.DECISION_ALLOW, pb.DECISION_ALLOW),
    "Hello there.": (pb.DECISION_ALLOW, pb.DECISION_ALLOW),
}


async def test_checks_answer_the_active_verdict_and_the_report_counts_both(client: GuardrailClient) -> None:
    await client.create_policy(policy_id=POLICY_ID, policy=active_policy())
    unshadowed = {text: await client.check_content(policy=POLICY, text=text) for text in TEXTS}
    shadowed = await client.set_shadow_revision(name=POLICY, policy=candidate_policy())
    assert (shadowed.revision, shadowed.shadow_revision) == (1, 2)
    started = datetime.now(UTC) - timedelta(seconds=1)

    for text, (active, _) in TEXTS.items():
        verdict = await client.check_content(policy=POLICY, text=text)
        assert (verdict.decision, verdict.policy_revision) == (active, 1), text
        # The same answer as before the shadow was set, but for the id of the stored record.
        before = unshadowed[text]
        assert bool(verdict.check_id) == bool(before.check_id), text
        verdict.ClearField("check_id")
        before.ClearField("check_id")
        assert verdict == before, text

    report = await client.get_shadow_report(name=POLICY, start_time=started)
    assert (report.policy, report.shadow_revision, list(report.active_revisions)) == (POLICY, 2, [1])
    assert (report.checks, report.skipped, report.changed_decisions) == (5, 0, 2)
    assert (report.active.revision, report.active.would_block, report.active.would_redact) == (1, 1, 1)
    assert (report.shadow.revision, report.shadow.would_block, report.shadow.would_redact) == (2, 3, 0)
    assert (report.active.unchecked, report.shadow.unchecked) == (0, 0)
    assert report.shadow.block_rate == pytest.approx(3 / 5)
    assert report.active.redact_rate == pytest.approx(1 / 5)
    differences = {
        d.rule_id: (d.active_only, d.shadow_only, d.decision_changed) for d in report.rule_differences
    }
    assert differences == {"violence": (0, 1, 0), "pii": (0, 0, 1), "mild": (1, 0, 0)}

    # Samples come from the two checks decided apart, masked, with the policy's keyed hash (no auth: shown).
    assert {s.rule_id for s in report.samples} == {"violence", "pii"}
    for sample in report.samples:
        assert sample.shadow_decision == pb.DECISION_BLOCK
        assert sample.active_decision in (pb.DECISION_ALLOW, pb.DECISION_REDACT)
        assert sample.active_revision == 1
        assert "thunder" not in sample.excerpt
        assert CARD not in sample.excerpt
        assert set(sample.excerpt.replace("1111", "")) <= {"*", " "}
        assert len(sample.matched_hash) == 64
    thunder = next(s for s in report.samples if s.rule_id == "violence")
    assert (thunder.span.start, thunder.span.end, thunder.excerpt) == (8, 15, "*******")

    # A window before the checks holds none of them; one that ends before it starts is refused.
    empty = await client.get_shadow_report(name=POLICY, end_time=started)
    assert (empty.checks, len(empty.samples), len(empty.rule_differences)) == (0, 0, 0)
    with pytest.raises(errors.InvalidArgument) as raised:
        await client.get_shadow_report(name=POLICY, start_time=started, end_time=started - timedelta(1))
    assert [v.field for v in raised.value.field_violations] == ["end_time"]

    # Cleared, checks are no longer shadowed; what was recorded stays readable by revision.
    cleared = await client.clear_shadow_revision(name=POLICY)
    assert cleared.shadow_revision == 0
    await client.check_content(policy=POLICY, text="thunder")
    again = await client.get_shadow_report(name=POLICY, shadow_revision=2)
    assert again.checks == 5
    with pytest.raises(errors.FailedPrecondition) as not_set:
        await client.get_shadow_report(name=POLICY)
    assert not_set.value.reason == "SHADOW_NOT_SET"


async def test_promote_makes_a_new_active_revision_with_the_shadows_rules(client: GuardrailClient) -> None:
    await client.create_policy(policy_id=POLICY_ID, policy=active_policy())
    shadowed = await client.set_shadow_revision(name=POLICY, policy=candidate_policy())
    candidate = await client.get_policy(name=POLICY, revision=2)
    # The candidate is a revision of the history, but not the active one.
    assert (await client.get_policy(name=POLICY)).revision == 1
    assert [p.revision async for p in client.list_policy_revisions(name=POLICY)] == [2, 1]
    assert (await client.check_content(policy=POLICY, text="thunder")).decision == pb.DECISION_ALLOW

    with pytest.raises(errors.EtagMismatch):
        await client.promote_shadow_revision(name=POLICY, etag="stale")
    promoted = await client.promote_shadow_revision(name=POLICY, etag=shadowed.etag)
    assert (promoted.revision, promoted.shadow_revision) == (3, 0)
    assert list(promoted.rules) == list(candidate.rules)
    assert promoted.etag != shadowed.etag
    assert [p.revision async for p in client.list_policy_revisions(name=POLICY)] == [3, 2, 1]
    verdict = await client.check_content(policy=POLICY, text="thunder")
    assert (verdict.decision, verdict.policy_revision) == (pb.DECISION_BLOCK, 3)

    with pytest.raises(errors.FailedPrecondition) as raised:
        await client.promote_shadow_revision(name=POLICY)
    assert raised.value.reason == "SHADOW_NOT_SET"

    # An older revision may be shadowed too (trying a rollback), and updates number after every revision.
    back = await client.set_shadow_revision(name=POLICY, revision=1)
    assert back.shadow_revision == 1
    updated = await client.update_policy(
        policy=pb.Policy(name=POLICY, description="after"), update_mask=["description"]
    )
    assert (updated.revision, updated.shadow_revision) == (4, 1)


async def test_bad_shadow_input_names_its_fields(client: GuardrailClient, channel: object) -> None:
    with pytest.raises(errors.PolicyNotFound):
        await client.set_shadow_revision(name=POLICY, revision=1)
    with pytest.raises(errors.PolicyNotFound):
        await client.get_shadow_report(name=POLICY)
    created = await client.create_policy(policy_id=POLICY_ID, policy=active_policy())

    with pytest.raises(errors.PolicyRevisionNotFound):
        await client.set_shadow_revision(name=POLICY, revision=9)
    with pytest.raises(errors.PolicyRevisionNotFound):
        await client.get_shadow_report(name=POLICY, shadow_revision=9)
    with pytest.raises(errors.InvalidArgument) as active:
        await client.set_shadow_revision(name=POLICY, revision=1)
    assert [v.field for v in active.value.field_violations] == ["revision"]
    with pytest.raises(errors.InvalidArgument) as negative:
        await client.set_shadow_revision(name=POLICY, revision=-3)
    assert [v.field for v in negative.value.field_violations] == ["revision"]
    bad = pb.Policy(
        rules=[_rule("x", pb.SEVERITY_ERROR, "x", regex=pb.RegexRule(pattern="(unclosed"))],
        fail_mode=pb.FAIL_MODE_OPEN,
    )
    with pytest.raises(errors.InvalidRule) as rule:
        await client.set_shadow_revision(name=POLICY, policy=bad)
    assert [v.field for v in rule.value.field_violations] == ["policy.rules[0].regex.pattern"]
    with pytest.raises(errors.EtagMismatch):
        await client.set_shadow_revision(name=POLICY, policy=candidate_policy(), etag="stale")
    with pytest.raises(errors.InvalidArgument) as bad_name:
        await client.get_shadow_report(name="stories")
    assert [v.field for v in bad_name.value.field_violations] == ["name"]
    with pytest.raises(errors.InvalidArgument) as bad_revision:
        await client.get_shadow_report(name=POLICY, shadow_revision=-1)
    assert [v.field for v in bad_revision.value.field_violations] == ["shadow_revision"]

    # Neither a revision nor a candidate (the typed client refuses it before sending).
    with pytest.raises(ValueError, match="exactly one"):
        await client.set_shadow_revision(name=POLICY)
    stub = client._stub  # the raw call, as another language's client could send it
    with pytest.raises(errors.InvalidArgument) as neither:
        await client._unary(stub.SetShadowRevision, pb.SetShadowRevisionRequest(name=POLICY), None)
    assert [v.field for v in neither.value.field_violations] == ["revision"]

    # Nothing was written by the refused calls: the policy is as created, without a shadow.
    now = await client.get_policy(name=POLICY)
    assert (now.revision, now.shadow_revision, now.etag) == (1, 0, created.etag)
    assert [p.revision async for p in client.list_policy_revisions(name=POLICY)] == [1]


async def test_a_streamed_check_is_shadowed_on_its_whole_text(client: GuardrailClient) -> None:
    await client.create_policy(policy_id=POLICY_ID, policy=active_policy())
    await client.set_shadow_revision(name=POLICY, policy=candidate_policy())
    async with client.check_stream(policy=POLICY) as stream:
        # The shadow's term arrives split over two chunks.
        for chunk in ("And the thun", "der rolled ", "over the hills."):
            await stream.send(chunk)
        verdict = await stream.finish()
    assert (verdict.decision, verdict.policy_revision) == (pb.DECISION_ALLOW, 1)
    report = await client.get_shadow_report(name=POLICY)
    assert (report.checks, report.shadow.would_block, report.changed_decisions) == (1, 1, 1)
    assert [(s.rule_id, s.span.start, s.span.end) for s in report.samples] == [("violence", 8, 15)]


async def test_a_shadow_narrowed_to_a_deployment_slot_sees_only_its_checks(client: GuardrailClient) -> None:
    await client.create_policy(policy_id=POLICY_ID, policy=active_policy())
    with pytest.raises(errors.InvalidArgument) as no_deployment:
        await client.set_shadow_revision(
            name=POLICY, policy=candidate_policy(), traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY
        )
    assert [v.field for v in no_deployment.value.field_violations] == ["traffic_slot"]
    with pytest.raises(errors.InvalidArgument) as bad_deployment:
        await client.set_shadow_revision(name=POLICY, policy=candidate_policy(), deployment="web")
    assert [v.field for v in bad_deployment.value.field_violations] == ["deployment"]

    narrowed = await client.set_shadow_revision(
        name=POLICY,
        policy=candidate_policy(),
        deployment="deployments/web",
        traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY,
    )
    assert (narrowed.shadow_revision, narrowed.shadow_deployment, narrowed.shadow_traffic_slot) == (
        2,
        "deployments/web",
        common_pb2.TRAFFIC_SLOT_CANARY,
    )
    text = "And the thunder rolled."
    for links in (
        common_pb2.EventLinks(deployment="deployments/web", traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY),
        common_pb2.EventLinks(deployment="deployments/web", traffic_slot=common_pb2.TRAFFIC_SLOT_STABLE),
        common_pb2.EventLinks(deployment="deployments/other", traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY),
        None,
    ):
        verdict = await client.check_content(policy=POLICY, text=text, links=links)
        assert verdict.decision == pb.DECISION_ALLOW
    report = await client.get_shadow_report(name=POLICY)
    assert (report.checks, report.shadow.would_block) == (1, 1)
    assert [s.links.traffic_slot for s in report.samples] == [common_pb2.TRAFFIC_SLOT_CANARY]

    # Cleared, the narrowing goes with the shadow.
    cleared = await client.clear_shadow_revision(name=POLICY)
    assert (cleared.shadow_revision, cleared.shadow_deployment, cleared.shadow_traffic_slot) == (
        0,
        "",
        common_pb2.TRAFFIC_SLOT_UNSPECIFIED,
    )


async def test_a_shadow_out_of_its_budget_is_recorded_and_never_delays_the_verdict(
    client: GuardrailClient,
) -> None:
    await client.create_policy(policy_id=POLICY_ID, policy=active_policy())
    slow = pb.Policy(
        rules=[
            _rule(
                "shape",
                pb.SEVERITY_CRITICAL,
                "shape",
                json=pb.JsonRule(schema=json.dumps(valid_but_slow(10))),
            )
        ],
        fail_mode=pb.FAIL_MODE_OPEN,
        time_budget=duration_pb2.Duration(nanos=20_000_000),
    )
    await client.set_shadow_revision(name=POLICY, policy=slow)
    verdict = await client.check_content(policy=POLICY, text=json.dumps([1] * 50_000))
    assert (verdict.decision, verdict.unchecked) == (pb.DECISION_ALLOW, False)
    report = await client.get_shadow_report(name=POLICY)
    assert (report.checks, report.shadow.unchecked, report.active.unchecked) == (1, 1, 0)
    # Its fail mode is OPEN: the shadow's would-be decision is ALLOW, as the active one.
    assert (report.shadow.would_block, report.changed_decisions) == (0, 0)


async def test_only_admins_and_operators_see_the_samples_hashes(
    start_server: StartServer, database_url: str
) -> None:
    server: ModelplaneServer = await start_server(auth=True)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        tokens = {
            role: (await create_token(conn, f"shadow-{role}", role))[1]
            for role in ("operator", "service", "reader")
        }
        tokens["scoped"] = (await create_token(conn, "shadow-scoped", "operator", ["deployments/web"]))[1]
    finally:
        await conn.close()
    async with (
        connect(server.target, token=tokens["operator"]) as operator,
        connect(server.target, token=tokens["service"]) as service,
        connect(server.target, token=tokens["reader"]) as reader,
        connect(server.target, token=tokens["scoped"]) as scoped,
    ):
        await operator.guardrails.create_policy(policy_id=POLICY_ID, policy=active_policy())
        with pytest.raises(errors.PermissionDenied):
            await service.guardrails.set_shadow_revision(name=POLICY, policy=candidate_policy())
        with pytest.raises(errors.PermissionDenied):
            await reader.guardrails.set_shadow_revision(name=POLICY, policy=candidate_policy())
        await operator.guardrails.set_shadow_revision(name=POLICY, policy=candidate_policy())
        await service.guardrails.check_content(policy=POLICY, text=f"Pay with {CARD} today.")

        seen = await operator.guardrails.get_shadow_report(name=POLICY)
        assert seen.samples
        assert all(len(s.matched_hash) == 64 for s in seen.samples)
        for other in (service, reader):
            report = await other.guardrails.get_shadow_report(name=POLICY)
            assert report.checks == 1
            assert report.samples
            assert {s.matched_hash for s in report.samples} == {""}
            assert [s.excerpt for s in report.samples] == [s.excerpt for s in seen.samples]
        with pytest.raises(errors.PermissionDenied):
            await reader.guardrails.promote_shadow_revision(name=POLICY)
        # An operator scoped to one deployment may narrow a shadow to it only.
        with pytest.raises(errors.PermissionDenied) as outside:
            await scoped.guardrails.set_shadow_revision(
                name=POLICY, revision=2, deployment="deployments/other"
            )
        assert outside.value.reason == "OUT_OF_SCOPE"
        inside = await scoped.guardrails.set_shadow_revision(
            name=POLICY, revision=2, deployment="deployments/web"
        )
        assert inside.shadow_deployment == "deployments/web"
