"""What the web console's tests (and its screenshots) look at, written through the gRPC API with an admin
token: a model with three versions and an alias moved twice, a deployment, a guardrail policy with two
revisions and the violations of a few checks, and an hour of inference and routing events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from modelplane.v1 import (
    common_pb2,
    deployments_pb2,
    deployments_pb2_grpc,
    guardrails_pb2,
    guardrails_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

# The authorization metadata of every call.
Metadata = tuple[tuple[str, str], ...]

MODEL = "models/chat"
DEPLOYMENT = "deployments/chat-prod"
POLICY = "policies/kids-safe"
CANARY_ENDPOINT = "10.0.0.9:8000"
# One call's deadline while seeding; not a performance bound.
TIMEOUT = 20.0
# Inference events per minute of the seeded hour, and the minutes seeded.
EVENTS_PER_MINUTE = 4
MINUTES = 60


def _version(
    context_window: int, output_micros: int, capabilities: list[registry_pb2.Capability.ValueType]
) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        source_uri=f"openai:chat-{context_window}",
        capabilities=capabilities,
        context_window=context_window,
        max_output_tokens=min(context_window, 4096),
        pricing=registry_pb2.TokenPricing(
            currency_code="USD",
            input_micros_per_million=output_micros // 4,
            output_micros_per_million=output_micros,
        ),
        state=registry_pb2.MODEL_VERSION_STATE_READY,
    )


def seed_registry(channel: grpc.Channel, metadata: Metadata) -> None:
    registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    registry.CreateModel(
        registry_pb2.CreateModelRequest(
            model_id="chat",
            model=registry_pb2.Model(display_name="Chat", provider="openai", labels={"team": "stories"}),
        ),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    chat, tools = registry_pb2.CAPABILITY_CHAT, registry_pb2.CAPABILITY_TOOL_USE
    streaming = registry_pb2.CAPABILITY_STREAMING
    for version in (
        _version(8192, 2_000_000, [chat, streaming]),
        _version(128_000, 10_000_000, [chat, tools, streaming]),
        _version(32_000, 6_000_000, [chat, tools]),
    ):
        registry.CreateModelVersion(
            registry_pb2.CreateModelVersionRequest(parent=MODEL, model_version=version),
            metadata=metadata,
            timeout=TIMEOUT,
        )
    for target, reason in ((1, "first release"), (2, "more context for long stories")):
        registry.SetAlias(
            registry_pb2.SetAliasRequest(
                name=f"{MODEL}/aliases/staging", version=f"{MODEL}/versions/{target}", reason=reason
            ),
            metadata=metadata,
            timeout=TIMEOUT,
        )


def seed_deployment(
    channel: grpc.Channel,
    metadata: Metadata,
    name: str = DEPLOYMENT,
    environment: str = "prod",
    stable_endpoint: str = "10.0.0.7:8000",
) -> None:
    """A deployment of the model with version 1 stable on one endpoint."""
    deployments = deployments_pb2_grpc.DeploymentServiceStub(channel)
    deployments.CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(
            deployment_id=name.removeprefix("deployments/"),
            deployment=deployments_pb2.Deployment(
                environment=environment,
                model=MODEL,
                traffic=deployments_pb2.TrafficTable(
                    stable=deployments_pb2.SlotTraffic(
                        model_version=f"{MODEL}/versions/1",
                        endpoints=[deployments_pb2.Endpoint(address=stable_endpoint)],
                    )
                ),
                description="The story teller's chat model",
            ),
        ),
        metadata=metadata,
        timeout=TIMEOUT,
    )


def _policy(rules: list[guardrails_pb2.Rule]) -> guardrails_pb2.Policy:
    block, redact, allow = (
        guardrails_pb2.DECISION_BLOCK,
        guardrails_pb2.DECISION_REDACT,
        guardrails_pb2.DECISION_ALLOW,
    )
    return guardrails_pb2.Policy(
        display_name="Kids safe",
        rules=rules,
        decisions=guardrails_pb2.DecisionTable(info=allow, warning=redact, error=block, critical=block),
        default_fallback="Once upon a time, everyone was kind.",
        fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
    )


def seed_policy(channel: grpc.Channel, metadata: Metadata) -> None:
    guardrails = guardrails_pb2_grpc.GuardrailServiceStub(channel)
    rules = [
        guardrails_pb2.Rule(
            id="scary-words",
            severity=guardrails_pb2.SEVERITY_ERROR,
            category="violence",
            description="Words too frightening for the age group",
            banned_terms=guardrails_pb2.BannedTermsRule(terms=["dragon fire", "monster"]),
        ),
        guardrails_pb2.Rule(
            id="emails",
            severity=guardrails_pb2.SEVERITY_WARNING,
            category="privacy",
            pii=guardrails_pb2.PiiRule(kinds=[guardrails_pb2.PII_KIND_EMAIL]),
        ),
    ]
    guardrails.CreatePolicy(
        guardrails_pb2.CreatePolicyRequest(policy_id="kids-safe", policy=_policy(rules)),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    rules.append(
        guardrails_pb2.Rule(
            id="shouting",
            severity=guardrails_pb2.SEVERITY_INFO,
            category="tone",
            regex=guardrails_pb2.RegexRule(pattern="[A-Z]{8,}"),
        )
    )
    updated = _policy(rules)
    updated.name = POLICY
    guardrails.UpdatePolicy(
        guardrails_pb2.UpdatePolicyRequest(
            policy=updated, update_mask=field_mask_pb2.FieldMask(paths=["rules"])
        ),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    for text in (
        "The monster hid under the bed.",
        "Write to wizard@example.com for more.",
        "A monster breathed dragon fire. AAAAAAAARGH!",
    ):
        guardrails.CheckContent(
            guardrails_pb2.CheckContentRequest(policy=POLICY, text=text), metadata=metadata, timeout=TIMEOUT
        )


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def seed_logs(channel: grpc.Channel, metadata: Metadata, now: datetime | None = None) -> int:
    """An hour of inference events of version 1 (stable), a tenth of them errors, with latencies from 100
    to 460 ms; returns how many were written."""
    logs = logs_pb2_grpc.LogServiceStub(channel)
    now = now or datetime.now(UTC)
    events = []
    for minute in range(MINUTES):
        for n in range(EVENTS_PER_MINUTE):
            index = minute * EVENTS_PER_MINUTE + n
            failed = index % 10 == 0
            events.append(
                logs_pb2.LogEvent(
                    event_id=f"seed-{uuid.uuid4().hex}",
                    event_time=_timestamp(now - timedelta(minutes=MINUTES - minute, seconds=n)),
                    service="storyteller",
                    instance="storyteller-0",
                    level=logs_pb2.LOG_LEVEL_ERROR if failed else logs_pb2.LOG_LEVEL_INFO,
                    message="provider timed out" if failed else "narrative generated",
                    links=common_pb2.EventLinks(
                        deployment=DEPLOYMENT, traffic_slot=common_pb2.TRAFFIC_SLOT_STABLE
                    ),
                    inference=logs_pb2.InferencePayload(
                        provider="openai",
                        model_version=f"{MODEL}/versions/1",
                        input_tokens=400 + index % 50,
                        output_tokens=150 + index % 30,
                        latency=duration_pb2.Duration(nanos=(100 + (index * 37) % 360) * 1_000_000),
                        status=logs_pb2.INFERENCE_STATUS_ERROR if failed else logs_pb2.INFERENCE_STATUS_OK,
                    ),
                )
            )
    logs.WriteLogEvents(
        logs_pb2.WriteLogEventsRequest(batch=logs_pb2.LogBatch(events=events)),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    return len(events)


def seed(channel: grpc.Channel, token: str) -> None:
    """Everything above, with `token` (an admin's)."""
    metadata = (("authorization", f"Bearer {token}"),)
    seed_registry(channel, metadata)
    seed_deployment(channel, metadata)
    seed_policy(channel, metadata)
    seed_logs(channel, metadata)


def seed_slot_events(
    channel: grpc.Channel,
    metadata: Metadata,
    deployment: str,
    slot: common_pb2.TrafficSlot.ValueType,
    version: str,
    *,
    count: int,
    errors: int,
) -> None:
    """`count` inference events of one slot of a deployment, written now, the first `errors` of them
    failed, latencies 1 to 100 ms alike on every slot: what a rollout's analysis gates read."""
    logs = logs_pb2_grpc.LogServiceStub(channel)
    now = _timestamp(datetime.now(UTC))
    events = [
        logs_pb2.LogEvent(
            event_id=f"slot-{uuid.uuid4().hex}",
            event_time=now,
            service="storyteller",
            level=logs_pb2.LOG_LEVEL_ERROR if index < errors else logs_pb2.LOG_LEVEL_INFO,
            links=common_pb2.EventLinks(deployment=deployment, traffic_slot=slot),
            inference=logs_pb2.InferencePayload(
                provider="openai",
                model_version=version,
                input_tokens=100,
                output_tokens=50,
                latency=duration_pb2.Duration(nanos=(1 + index % 100) * 1_000_000),
                status=logs_pb2.INFERENCE_STATUS_ERROR if index < errors else logs_pb2.INFERENCE_STATUS_OK,
            ),
        )
        for index in range(count)
    ]
    logs.WriteLogEvents(
        logs_pb2.WriteLogEventsRequest(batch=logs_pb2.LogBatch(events=events)),
        metadata=metadata,
        timeout=TIMEOUT,
    )
