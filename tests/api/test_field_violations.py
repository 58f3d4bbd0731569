"""Every bad field of a request is named at once (AIP-193): BadRequest lists exactly the fields broken.

Each create/update RPC of the registry and the deployment manager (and a list of each shape), and every
RPC of the guardrails monitor and the log collector, starts from a valid request; a random nonempty set of
its fields is broken, each independently of the others (a bad value drawn from a few per field), and the
answer must be INVALID_ARGUMENT whose field violations name exactly those fields: none missed because
another check raised first (a conversion, a name parser, the rule compiler), none invented.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelplane.server.guardrails.validation import POLICY_MASK
from modelplane.v1 import common_pb2 as cpb
from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import registry_pb2 as rpb
from modelplane.v1.deployments_pb2_grpc import DeploymentServiceStub
from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceStub
from modelplane.v1.logs_pb2_grpc import LogServiceStub
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub
from tests.support.live_server import CALL_TIMEOUT, LiveServer, start_live_server
from tests.support.rich_errors import RichError, rich

LONG_REQUEST_ID = "r" * 129
OTHER_MODEL_TARGET = "models/other/versions/1"


def _version() -> rpb.ModelVersion:
    return rpb.ModelVersion(
        source_uri="openai:gpt-4o",
        context_window=8192,
        max_output_tokens=1024,
        capabilities=[rpb.CAPABILITY_CHAT, rpb.CAPABILITY_TOOL_USE],
        pricing=rpb.TokenPricing(
            currency_code="USD", input_micros_per_million=1, output_micros_per_million=2
        ),
        description="ok",
        labels={"team": "search"},
    )


def _endpoints(*addresses: str) -> list[dpb.Endpoint]:
    return [dpb.Endpoint(address=address) for address in addresses]


def _create_deployment(deployment_id: str, environment: str, address: str) -> dpb.CreateDeploymentRequest:
    """A deployment of models/chat/versions/1 on one endpoint."""
    return dpb.CreateDeploymentRequest(
        deployment_id=deployment_id,
        deployment=dpb.Deployment(
            environment=environment,
            model="models/chat",
            traffic=dpb.TrafficTable(
                stable=dpb.SlotTraffic(model_version="models/chat/versions/1", endpoints=_endpoints(address))
            ),
        ),
    )


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# A broken field: its path in BadRequest, and the ways of breaking it (each sets one bad value).
Breaks = dict[str, list[Callable[[Message], None]]]


def _set(**values: object) -> Callable[[Message], None]:
    """Sets fields of the request, nested ones named with "__" (model__provider), to the values given."""

    def apply(request: Message) -> None:
        for dotted, value in values.items():
            *parents, leaf = dotted.split("__")
            target: Any = request
            for name in parents:
                target = getattr(target, name)
            if isinstance(value, Message):
                getattr(target, leaf).CopyFrom(value)
            elif isinstance(value, list):
                del getattr(target, leaf)[:]
                getattr(target, leaf).extend(value)
            else:
                setattr(target, leaf, value)

    return apply


def _field(request: Message, path: str) -> Any:
    target: Any = request
    for name in path.split("."):
        target = getattr(target, name)
    return target


def _bad_label(path: str) -> Callable[[Message], None]:
    def apply(request: Message) -> None:
        _field(request, path)["Bad"] = "v"

    return apply


def _append(path: str, value: object) -> Callable[[Message], None]:
    def apply(request: Message) -> None:
        _field(request, path).append(value)

    return apply


def _break_step(index: int, **fields: object) -> Callable[[Message], None]:
    """Breaks one step of a rollout in place, so the other steps keep their indexes."""

    def apply(request: Message) -> None:
        step = _field(request, "rollout.steps")[index]
        for name, value in fields.items():
            if isinstance(value, Message):
                getattr(step, name).CopyFrom(value)
            else:
                setattr(step, name, value)

    return apply


def _break_rule(index: int, **fields: object) -> Callable[[Message], None]:
    """Sets fields of one rule of a policy (nested ones named with "__"), so the other rules keep their
    indexes."""

    def apply(request: Message) -> None:
        _set(**fields)(request.policy.rules[index])  # type: ignore[attr-defined]

    return apply


def _break_event(index: int, **fields: object) -> Callable[[Message], None]:
    """Sets fields of one event of a log batch (nested ones named with "__")."""

    def apply(request: Message) -> None:
        _set(**fields)(request.batch.events[index])  # type: ignore[attr-defined]

    return apply


def _at(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


# A Timestamp beyond year 9999: valid protobuf, refused by every time field.
BAD_TIME = timestamp_pb2.Timestamp(seconds=253402300800)
# Now, to the second: log events must be within a day of the server's clock.
NOW = int(time.time())


def _policy(name: str = "") -> gpb.Policy:
    """A valid policy: a regex rule and a banned-terms rule, every field set."""
    return gpb.Policy(
        name=name,
        display_name="Safe",
        description="d",
        rules=[
            gpb.Rule(
                id="secret",
                severity=gpb.SEVERITY_ERROR,
                category="secrets",
                regex=gpb.RegexRule(pattern="sk-[a-z]+"),
            ),
            gpb.Rule(
                id="words",
                severity=gpb.SEVERITY_WARNING,
                category="words",
                banned_terms=gpb.BannedTermsRule(terms=["darn"]),
            ),
        ],
        decisions=gpb.DecisionTable(
            info=gpb.DECISION_ALLOW,
            warning=gpb.DECISION_REDACT,
            error=gpb.DECISION_BLOCK,
            critical=gpb.DECISION_BLOCK,
        ),
        fallback_content={"secrets": "withheld"},
        default_fallback="no answer",
        fail_mode=gpb.FAIL_MODE_CLOSED,
        time_budget=duration_pb2.Duration(seconds=1),
        excerpt_context_chars=10,
    )


# The ways to break a policy's fields, by their path under `prefix`.
def _policy_breaks(prefix: str) -> Breaks:
    def under(**values: object) -> Callable[[Message], None]:
        return _set(**{f"{prefix}__{k}": v for k, v in values.items()})

    return {
        f"{prefix}.display_name": [under(display_name="x" * 201)],
        f"{prefix}.description": [under(description="x" * 4001)],
        f"{prefix}.rules[0].regex.pattern": [
            _break_rule(0, regex__pattern="("),
            _break_rule(0, regex__pattern="a*"),
        ],
        f"{prefix}.rules[1].severity": [_break_rule(1, severity=0), _break_rule(1, severity=99)],
        f"{prefix}.rules[1].id": [_break_rule(1, id="Bad Id"), _break_rule(1, id="")],
        f"{prefix}.rules[1].category": [_break_rule(1, category="Not ok")],
        f"{prefix}.decisions.warning": [under(decisions__warning=0)],
        f"{prefix}.fallback_content['secrets']": [
            lambda r: _field(r, f"{prefix}.fallback_content").update({"secrets": "x" * 10_001})
        ],
        f"{prefix}.default_fallback": [under(default_fallback="x" * 10_001)],
        f"{prefix}.fail_mode": [under(fail_mode=0), under(fail_mode=7)],
        f"{prefix}.time_budget": [
            under(time_budget=duration_pb2.Duration(seconds=61)),
            under(time_budget=duration_pb2.Duration(seconds=0, nanos=1)),
        ],
        f"{prefix}.excerpt_context_chars": [under(excerpt_context_chars=-1)],
    }


def _event() -> lpb.LogEvent:
    return lpb.LogEvent(
        event_id="e-1",
        event_time=_at(NOW),
        service="web",
        level=lpb.LOG_LEVEL_INFO,
        message="hello",
        links=cpb.EventLinks(request_id="r-1"),
        inference=lpb.InferencePayload(
            provider="local", input_tokens=3, output_tokens=4, status=lpb.INFERENCE_STATUS_OK
        ),
    )


def _batch() -> lpb.LogBatch:
    second = _event()
    second.event_id = "e-2"
    return lpb.LogBatch(client_id="c-1", sequence=1, events=[_event(), second])


# The breaks of a filtered list without order_by: its page size, filter and page token.
_FILTERED_LIST_BREAKS: Breaks = {
    "page_size": [_set(page_size=-1)],
    "filter": [_set(filter="("), _set(filter="bogus = 1")],
    "page_token": [_set(page_token="!!!")],
}

_BATCH_BREAKS: Breaks = {
    "batch.client_id": [_set(batch__client_id="bad id!")],
    "batch.sequence": [_set(batch__sequence=-1)],
    "batch.dropped_since_last": [_set(batch__dropped_since_last=-3)],
    "batch.events[0].level": [_break_event(0, level=0)],
    "batch.events[0].event_time": [
        _break_event(0, event_time=BAD_TIME),
        _break_event(0, event_time=_at(NOW + 3 * 86_400)),
    ],
    "batch.events[0].service": [_break_event(0, service="Web!"), _break_event(0, service="")],
    "batch.events[1].event_id": [_break_event(1, event_id="")],
    "batch.events[1].links.traffic_slot": [_break_event(1, links__traffic_slot=9)],
    "batch.events[1].inference.status": [_break_event(1, inference__status=0)],
    "batch.events[1].inference.input_tokens": [_break_event(1, inference__input_tokens=-1)],
}


async def _unary(stub: Any, method: str, request: Message) -> None:
    await getattr(stub, method)(request, timeout=CALL_TIMEOUT)


async def _sent(*requests: Message) -> AsyncIterator[Message]:
    for request in requests:
        yield request


async def _check_stream(stub: Any, method: str, request: Message) -> None:
    # The start alone: every request drawn here breaks it, and the server answers after reading it (grpc.aio's
    # client may fail a call as INTERNAL when it is still writing once the server has answered).
    async for _ in stub.CheckStream(_sent(request), timeout=CALL_TIMEOUT):
        pass


async def _log_stream(stub: Any, method: str, request: Message) -> None:
    async for _ in stub.StreamLogEvents(_sent(request), timeout=CALL_TIMEOUT):
        pass


async def _tail(stub: Any, method: str, request: Message) -> None:
    stream = stub.TailLogEvents(request, timeout=CALL_TIMEOUT)
    try:
        await stream.read()
    finally:
        stream.cancel()


Stub = (
    type[ModelRegistryServiceStub]
    | type[DeploymentServiceStub]
    | type[GuardrailServiceStub]
    | type[LogServiceStub]
)


@dataclass(frozen=True)
class Case:
    stub: Stub
    base: Callable[[], Message]
    breaks: Breaks
    # How the request is sent (a stream's other messages are valid).
    call: Callable[[Any, str, Message], Awaitable[None]] = _unary
    # The path of the request id of a mutation ("" for a read, whose valid base request must succeed).
    request_id: str = "request_id"
    # A call the base test leaves out: a valid tail answers nothing until events arrive (its one field is
    # named alone by the property test).
    endless: bool = False


CASES: dict[str, Case] = {
    "CreateModel": Case(
        ModelRegistryServiceStub,
        lambda: rpb.CreateModelRequest(model_id="fresh", model=rpb.Model(provider="openai")),
        {
            "model_id": [_set(model_id="Bad_Id"), _set(model_id="")],
            "model.provider": [_set(model__provider="Not Valid!"), _set(model__provider="")],
            "model.display_name": [_set(model__display_name="x" * 201)],
            "model.description": [_set(model__description="x" * 4001)],
            "model.labels['Bad']": [_bad_label("model.labels")],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "UpdateModel": Case(
        ModelRegistryServiceStub,
        lambda: rpb.UpdateModelRequest(
            model=rpb.Model(name="models/chat", display_name="Chat", description="d", labels={"a": "b"}),
            update_mask=_mask("display_name", "description", "labels"),
        ),
        {
            "model.name": [_set(model__name="chat"), _set(model__name="models/Chat")],
            "update_mask.paths": [_append("update_mask.paths", "etag")],
            "model.display_name": [_set(model__display_name="x" * 201)],
            "model.description": [_set(model__description="x" * 4001)],
            "model.labels['Bad']": [_bad_label("model.labels")],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "CreateModelVersion": Case(
        ModelRegistryServiceStub,
        lambda: rpb.CreateModelVersionRequest(parent="models/chat", model_version=_version()),
        {
            "parent": [_set(parent="chat"), _set(parent="models/chat/versions/1")],
            "model_version.capabilities[1]": [
                _set(model_version__capabilities=[rpb.CAPABILITY_CHAT, 999]),
                _set(model_version__capabilities=[rpb.CAPABILITY_CHAT, rpb.CAPABILITY_UNSPECIFIED]),
                _set(model_version__capabilities=[rpb.CAPABILITY_CHAT, rpb.CAPABILITY_CHAT]),
            ],
            "model_version.pricing.currency_code": [
                _set(model_version__pricing__currency_code="usd"),
                _set(model_version__pricing__currency_code="ÄÖÜ"),
            ],
            "model_version.pricing.output_micros_per_million": [
                _set(model_version__pricing__output_micros_per_million=-1)
            ],
            "model_version.source_uri": [_set(model_version__source_uri="")],
            "model_version.source_sha256": [_set(model_version__source_sha256="XYZ")],
            "model_version.context_window": [_set(model_version__context_window=0)],
            "model_version.state": [_set(model_version__state=42)],
            "model_version.lineage.parent_version": [_set(model_version__lineage__parent_version="v1")],
            "model_version.labels['Bad']": [_bad_label("model_version.labels")],
            "model_version.description": [_set(model_version__description="x" * 4001)],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "UpdateModelVersion": Case(
        ModelRegistryServiceStub,
        lambda: rpb.UpdateModelVersionRequest(
            model_version=rpb.ModelVersion(
                name="models/chat/versions/2",
                description="d",
                state=rpb.MODEL_VERSION_STATE_READY,
                labels={"a": "b"},
            ),
            update_mask=_mask("description", "state", "labels"),
        ),
        {
            "model_version.name": [
                _set(model_version__name="models/chat/versions/0"),
                _set(model_version__name="models/chat"),
            ],
            "update_mask.paths": [_append("update_mask.paths", "pricing")],
            "model_version.state": [
                _set(model_version__state=42),
                _set(model_version__state=rpb.MODEL_VERSION_STATE_UNSPECIFIED),
            ],
            "model_version.description": [_set(model_version__description="x" * 4001)],
            "model_version.labels['Bad']": [_bad_label("model_version.labels")],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "SetAlias": Case(
        ModelRegistryServiceStub,
        lambda: rpb.SetAliasRequest(
            name="models/chat/aliases/prod", version="models/chat/versions/1", reason="fine"
        ),
        {
            "name": [_set(name="models/chat/aliases/Prod!"), _set(name="prod")],
            "version": [_set(version="models/chat/versions/0"), _set(version=OTHER_MODEL_TARGET)],
            "expected_version": [_set(expected_version="junk")],
            "reason": [_set(reason="x" * 1001)],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "CreateDeployment": Case(
        DeploymentServiceStub,
        lambda: _create_deployment("fresh", "staging", "10.0.0.9:8000"),
        {
            "deployment_id": [_set(deployment_id="Bad_Id")],
            "deployment.environment": [
                _set(deployment__environment=""),
                _set(deployment__environment="Prod"),
            ],
            "deployment.model": [_set(deployment__model="chat")],
            "deployment.traffic.stable.model_version": [
                _set(deployment__traffic__stable__model_version="junk"),
                _set(deployment__traffic__stable__model_version="models/chat/versions/-1"),
            ],
            "deployment.traffic.stable.endpoints[0].address": [
                _set(deployment__traffic__stable__endpoints=_endpoints("10.0.0.9 8000"))
            ],
            "deployment.traffic.stable.weight_bp": [_set(deployment__traffic__stable__weight_bp=5000)],
            "deployment.traffic.canary": [
                _set(deployment__traffic__canary=dpb.SlotTraffic(model_version="models/chat/versions/2"))
            ],
            "deployment.description": [_set(deployment__description="x" * 4001)],
            "deployment.labels['Bad']": [_bad_label("deployment.labels")],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "UpdateDeployment": Case(
        DeploymentServiceStub,
        lambda: dpb.UpdateDeploymentRequest(
            deployment=dpb.Deployment(
                name="deployments/web",
                description="d",
                labels={"a": "b"},
                traffic=dpb.TrafficTable(stable=dpb.SlotTraffic(endpoints=_endpoints("10.0.0.1:8000"))),
            ),
            update_mask=_mask("description", "labels", "traffic.stable.endpoints"),
        ),
        {
            "deployment.name": [_set(deployment__name="web"), _set(deployment__name="deployments/Web")],
            "update_mask.paths": [_append("update_mask.paths", "environment")],
            "deployment.description": [_set(deployment__description="x" * 4001)],
            "deployment.labels['Bad']": [_bad_label("deployment.labels")],
            "deployment.traffic.stable.endpoints[0].address": [
                _set(deployment__traffic__stable__endpoints=_endpoints(""))
            ],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "StartRollout": Case(
        DeploymentServiceStub,
        lambda: dpb.StartRolloutRequest(
            parent="deployments/web",
            rollout=dpb.Rollout(
                target_version="models/chat/versions/2",
                endpoints=_endpoints("10.0.1.1:8000"),
                strategy=dpb.ROLLOUT_STRATEGY_CANARY,
                steps=[
                    dpb.RolloutStep(weight_bp=1000, pause_until_promoted=True),
                    dpb.RolloutStep(weight_bp=5000, duration=duration_pb2.Duration(seconds=60)),
                ],
                reason="fine",
            ),
        ),
        {
            "parent": [_set(parent="web"), _set(parent="deployments/Web")],
            # A version of another model: see RELATIVE.
            "rollout.target_version": [
                _set(rollout__target_version="junk"),
                _set(rollout__target_version=OTHER_MODEL_TARGET),
            ],
            "rollout.endpoints[0].address": [_set(rollout__endpoints=_endpoints("a b"))],
            "rollout.steps[0].weight_bp": [_break_step(0, weight_bp=0), _break_step(0, weight_bp=10_001)],
            "rollout.steps[1].duration": [
                _break_step(1, duration=duration_pb2.Duration(seconds=1, nanos=2_000_000_000)),
                _break_step(1, duration=duration_pb2.Duration(seconds=0)),
            ],
            "rollout.reason": [_set(rollout__reason="x" * 1001)],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "ListModelVersions": Case(
        ModelRegistryServiceStub,
        lambda: rpb.ListModelVersionsRequest(
            parent="models/chat", page_size=10, filter='provider = "local"', order_by="create_time"
        ),
        {
            "parent": [_set(parent="chat")],
            "page_size": [_set(page_size=-1)],
            "filter": [_set(filter="("), _set(filter="bogus = 1")],
            "order_by": [_set(order_by="bogus"), _set(order_by="create_time sideways")],
            "page_token": [_set(page_token="!!!"), _set(page_token="AAAA")],
        },
        request_id="",
    ),
    "ListAliasHistory": Case(
        ModelRegistryServiceStub,
        lambda: rpb.ListAliasHistoryRequest(parent="models/chat", alias="prod", page_size=10),
        {
            "parent": [_set(parent="models/Chat")],
            "alias": [_set(alias="Prod!")],
            "page_size": [_set(page_size=-5)],
            "page_token": [_set(page_token="!!!")],
        },
        request_id="",
    ),
    "ListRollouts": Case(
        DeploymentServiceStub,
        lambda: dpb.ListRolloutsRequest(parent="deployments/web", page_size=10),
        {
            "parent": [_set(parent="web")],
            "page_size": [_set(page_size=-1)],
            "page_token": [_set(page_token="!!!")],
        },
        request_id="",
    ),
    # ---- the guardrails monitor
    "CreatePolicy": Case(
        GuardrailServiceStub,
        lambda: gpb.CreatePolicyRequest(policy_id="fresh", policy=_policy()),
        {
            "policy_id": [_set(policy_id="Bad_Id"), _set(policy_id="")],
            **_policy_breaks("policy"),
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "GetPolicy": Case(
        GuardrailServiceStub,
        lambda: gpb.GetPolicyRequest(name="policies/safe", revision=1),
        {"name": [_set(name="safe"), _set(name="policies/Safe")], "revision": [_set(revision=-1)]},
        request_id="",
    ),
    "ListPolicies": Case(
        GuardrailServiceStub,
        lambda: gpb.ListPoliciesRequest(page_size=5, filter='display_name = "Safe"'),
        _FILTERED_LIST_BREAKS,
        request_id="",
    ),
    "UpdatePolicy": Case(
        GuardrailServiceStub,
        lambda: gpb.UpdatePolicyRequest(
            policy=_policy("policies/safe"),
            update_mask=_mask(*sorted(POLICY_MASK)),
        ),
        {
            "policy.name": [_set(policy__name="safe"), _set(policy__name="policies/Safe")],
            "update_mask.paths": [_append("update_mask.paths", "name")],
            **_policy_breaks("policy"),
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "DeletePolicy": Case(
        GuardrailServiceStub,
        lambda: gpb.DeletePolicyRequest(name="policies/safe"),
        {"name": [_set(name="safe")], "request_id": [_set(request_id=LONG_REQUEST_ID)]},
    ),
    "ListPolicyRevisions": Case(
        GuardrailServiceStub,
        lambda: gpb.ListPolicyRevisionsRequest(name="policies/safe", page_size=5),
        {
            "name": [_set(name="policies/Safe")],
            "page_size": [_set(page_size=-1)],
            "page_token": [_set(page_token="!!!")],
        },
        request_id="",
    ),
    "SetShadowRevision": Case(
        GuardrailServiceStub,
        lambda: gpb.SetShadowRevisionRequest(
            name="policies/safe",
            policy=_policy(),
            deployment="deployments/web",
            traffic_slot=cpb.TRAFFIC_SLOT_CANARY,
        ),
        {
            "name": [_set(name="safe")],
            **_policy_breaks("policy"),
            "deployment": [_set(deployment="web")],
            "traffic_slot": [_set(traffic_slot=9)],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "SetShadowRevision(revision)": Case(
        GuardrailServiceStub,
        lambda: gpb.SetShadowRevisionRequest(name="policies/safe", revision=1),
        {
            "name": [_set(name="policies/")],
            "revision": [_set(revision=-2), _set(revision=0)],
            "traffic_slot": [_set(traffic_slot=9), _set(traffic_slot=cpb.TRAFFIC_SLOT_STABLE)],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "ClearShadowRevision": Case(
        GuardrailServiceStub,
        lambda: gpb.ClearShadowRevisionRequest(name="policies/safe"),
        {"name": [_set(name="safe")], "request_id": [_set(request_id=LONG_REQUEST_ID)]},
    ),
    "PromoteShadowRevision": Case(
        GuardrailServiceStub,
        lambda: gpb.PromoteShadowRevisionRequest(name="policies/safe"),
        {"name": [_set(name="policies/x/y")], "request_id": [_set(request_id=LONG_REQUEST_ID)]},
    ),
    "GetShadowReport": Case(
        GuardrailServiceStub,
        lambda: gpb.GetShadowReportRequest(
            name="policies/safe", start_time=_at(NOW - 3600), end_time=_at(NOW)
        ),
        {
            "name": [_set(name="safe")],
            "shadow_revision": [_set(shadow_revision=-1)],
            "start_time": [_set(start_time=BAD_TIME)],
            "end_time": [_set(end_time=BAD_TIME)],
        },
        request_id="",
    ),
    "CheckContent": Case(
        GuardrailServiceStub,
        lambda: gpb.CheckContentRequest(
            policy="policies/safe",
            text="hello",
            links=cpb.EventLinks(model_version="models/chat/versions/1", deployment="deployments/web"),
        ),
        {
            "policy": [_set(policy="safe")],
            "policy_revision": [_set(policy_revision=-1)],
            "text": [_set(text="x" * 1_000_001)],
            "links.model_version": [_set(links__model_version="chat")],
            "links.deployment": [_set(links__deployment="web")],
            "links.trace_id": [_set(links__trace_id="XYZ")],
            "links.traffic_slot": [_set(links__traffic_slot=9)],
            "links.request_id": [_set(links__request_id=LONG_REQUEST_ID)],
            "request_id": [_set(request_id=LONG_REQUEST_ID)],
        },
    ),
    "CheckStream": Case(
        GuardrailServiceStub,
        lambda: gpb.CheckStreamRequest(start=gpb.CheckStreamStart(policy="policies/safe")),
        {
            "start.policy": [_set(start__policy="safe")],
            "start.policy_revision": [_set(start__policy_revision=-1)],
            "start.links.deployment": [_set(start__links__deployment="web")],
            "start.links.traffic_slot": [_set(start__links__traffic_slot=9)],
            "start.request_id": [_set(start__request_id=LONG_REQUEST_ID)],
        },
        call=_check_stream,
        request_id="start.request_id",
    ),
    "ListViolations": Case(
        GuardrailServiceStub,
        lambda: gpb.ListViolationsRequest(page_size=5, filter='rule_id = "secret"'),
        _FILTERED_LIST_BREAKS,
        request_id="",
    ),
    "AggregateViolations": Case(
        GuardrailServiceStub,
        lambda: gpb.AggregateViolationsRequest(
            group_by=[gpb.VIOLATION_GROUP_BY_RULE, gpb.VIOLATION_GROUP_BY_TIME_BUCKET],
            bucket_width=duration_pb2.Duration(seconds=60),
            start_time=_at(NOW - 3600),
            end_time=_at(NOW),
            policy="policies/safe",
        ),
        {
            "group_by[0]": [
                _set(group_by=[0, gpb.VIOLATION_GROUP_BY_TIME_BUCKET]),
                _set(group_by=[99, gpb.VIOLATION_GROUP_BY_TIME_BUCKET]),
            ],
            "bucket_width": [_set(bucket_width=duration_pb2.Duration(seconds=0, nanos=5))],
            "start_time": [_set(start_time=BAD_TIME)],
            "end_time": [_set(end_time=BAD_TIME)],
            "policy": [_set(policy="safe"), _set(policy="policies/Safe")],
        },
        request_id="",
    ),
    # ---- the log collector
    "WriteLogEvents": Case(
        LogServiceStub, lambda: lpb.WriteLogEventsRequest(batch=_batch()), _BATCH_BREAKS, request_id=""
    ),
    "StreamLogEvents": Case(
        LogServiceStub,
        lambda: lpb.StreamLogEventsRequest(batch=_batch()),
        _BATCH_BREAKS,
        call=_log_stream,
        request_id="",
    ),
    "QueryLogEvents": Case(
        LogServiceStub,
        lambda: lpb.QueryLogEventsRequest(filter='service = "web"', order_by="event_time desc", page_size=5),
        {
            "filter": [_set(filter="("), _set(filter="bogus = 1")],
            "order_by": [_set(order_by="bogus")],
            "page_size": [_set(page_size=-1)],
            "page_token": [_set(page_token="!!!")],
        },
        request_id="",
    ),
    "TailLogEvents": Case(
        LogServiceStub,
        lambda: lpb.TailLogEventsRequest(filter='service = "web"'),
        {"filter": [_set(filter="("), _set(filter="bogus = 1")]},
        call=_tail,
        request_id="",
        endless=True,
    ),
    "AggregateLogEvents": Case(
        LogServiceStub,
        lambda: lpb.AggregateLogEventsRequest(
            filter='service = "web"',
            group_by=[lpb.LOG_GROUP_BY_SERVICE, lpb.LOG_GROUP_BY_TIME_BUCKET],
            bucket_width=duration_pb2.Duration(seconds=60),
            currency_code="USD",
        ),
        {
            "filter": [_set(filter="("), _set(filter="bogus = 1")],
            "group_by[0]": [_set(group_by=[0, lpb.LOG_GROUP_BY_TIME_BUCKET])],
            "bucket_width": [_set(bucket_width=duration_pb2.Duration(seconds=0, nanos=5))],
            "currency_code": [_set(currency_code="usd")],
        },
        request_id="",
    ),
    "GetIngestionStats": Case(
        LogServiceStub,
        lambda: lpb.GetIngestionStatsRequest(client_id="c-1"),
        {"client_id": [_set(client_id="bad id!")]},
        request_id="",
    ),
}
# The reasons a read's answer may carry: that of the first bad field with a reason of its own.
LIST_REASONS = {"INVALID_FIELD", "INVALID_FILTER", "INVALID_PAGE_TOKEN"}
# And those of the guardrails' and the log collector's requests.
REASONS = {
    "CreatePolicy": {"INVALID_FIELD", "INVALID_RULE", "FALLBACK_BREAKS_POLICY"},
    "UpdatePolicy": {"INVALID_FIELD", "INVALID_RULE"},
    "SetShadowRevision": {"INVALID_FIELD", "INVALID_RULE", "FALLBACK_BREAKS_POLICY"},
    "CheckContent": {"INVALID_FIELD", "TEXT_TOO_LARGE"},
}
# A page token is checked against the query it was made for, so not when order_by (which says what the
# token's keys are) is broken too.
HIDDEN_BY = {("ListModelVersions", "page_token"): "order_by", ("QueryLogEvents", "page_token"): "order_by"}


# A version of another model is a bad value only beside a valid name of the resource it is for: with that
# name broken too, which model it must be of is unknown. (method, path): (the name's path, the value's path).
RELATIVE = {
    ("StartRollout", "rollout.target_version"): ("parent", "rollout.target_version"),
    ("SetAlias", "version"): ("name", "version"),
}


def _expected(method: str, request: Message, broken: set[str]) -> set[str]:
    """The paths the answer must name: the broken ones, but for a version of another model whose owner's
    name is broken too."""
    expected = set(broken)
    for (case, path), (owner, value) in RELATIVE.items():
        if case == method and owner in broken and _field(request, value) == OTHER_MODEL_TARGET:
            expected.discard(path)
    for (case, path), hider in HIDDEN_BY.items():
        if case == method and hider in broken:
            expected.discard(path)
    return expected


async def _seed(channel: grpc.aio.Channel) -> None:
    registry = ModelRegistryServiceStub(channel)
    deployments = DeploymentServiceStub(channel)
    for model_id in ("chat", "other"):
        await registry.CreateModel(
            rpb.CreateModelRequest(model_id=model_id, model=rpb.Model(provider="local"))
        )
    for _ in range(2):
        await registry.CreateModelVersion(
            rpb.CreateModelVersionRequest(parent="models/chat", model_version=_version())
        )
    await registry.CreateModelVersion(
        rpb.CreateModelVersionRequest(parent="models/other", model_version=_version())
    )
    await deployments.CreateDeployment(_create_deployment("web", "prod", "10.0.0.1:8000"))
    guardrails = GuardrailServiceStub(channel)
    await guardrails.CreatePolicy(gpb.CreatePolicyRequest(policy_id="safe", policy=_policy()))
    await guardrails.SetShadowRevision(gpb.SetShadowRevisionRequest(name="policies/safe", policy=_policy()))


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[LiveServer]:
    with start_live_server(
        admin_url,
        template_database,
        rpb.DESCRIPTOR.services_by_name["ModelRegistryService"],
        lambda *_: None,
    ) as base:
        base.run(_seed(base.channel))
        yield base


async def _call(channel: grpc.aio.Channel, method: str, request: Message) -> RichError | None:
    """The rich error of the call, None when it succeeds."""
    case = CASES[method]
    try:
        await case.call(case.stub(channel), method.split("(")[0], request)
    except grpc.aio.AioRpcError as error:
        return rich(error)
    return None


@pytest.mark.parametrize("method", sorted(m for m, case in CASES.items() if not case.endless))
def test_each_base_request_breaks_nothing(live: LiveServer, method: str) -> None:
    # The property below means something only if a base request breaks no rule itself. A read is simply
    # sent; a mutation has its request id alone broken, so that nothing is written, and it must be the
    # only field named.
    case = CASES[method]
    request = case.base()
    if not case.request_id:
        assert live.run(_call(live.channel, method, request)) is None
        return
    case.breaks[case.request_id][0](request)
    error = live.run(_call(live.channel, method, request))
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_paths == [case.request_id]


@pytest.mark.parametrize("method", sorted(CASES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_request_names_exactly_the_broken_fields(
    live: LiveServer, method: str, data: st.DataObject
) -> None:
    case = CASES[method]
    broken = data.draw(st.sets(st.sampled_from(sorted(case.breaks)), min_size=1), label="broken")
    request = case.base()
    for path in sorted(broken):
        data.draw(st.sampled_from(case.breaks[path]), label=path)(request)
    error = live.run(_call(live.channel, method, request))
    assert error is not None, f"{method} accepted {request}"
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    reasons = REASONS.get(method.split("(")[0], LIST_REASONS if not case.request_id else {"INVALID_FIELD"})
    assert error.reason in reasons
    assert set(error.field_paths) == _expected(method, request, broken), error.message


def test_an_unknown_capability_does_not_hide_a_bad_currency(live: LiveServer) -> None:
    version = _version()
    version.capabilities.append(999)  # type: ignore[arg-type]  # no such capability
    version.pricing.currency_code = "usd"
    request = rpb.CreateModelVersionRequest(parent="models/chat", model_version=version)
    error = live.run(_call(live.channel, "CreateModelVersion", request))
    assert error is not None
    assert set(error.field_paths) == {"model_version.capabilities[2]", "model_version.pricing.currency_code"}


def test_a_bad_model_id_does_not_hide_the_bad_fields_of_the_model(live: LiveServer) -> None:
    request = rpb.CreateModelRequest(
        model_id="Bad_Id", model=rpb.Model(provider="Not Valid!", labels={"Bad": "v"})
    )
    error = live.run(_call(live.channel, "CreateModel", request))
    assert error is not None
    assert error.field_paths == ["model_id", "model.provider", "model.labels['Bad']"]


async def _first_of_watch(channel: grpc.aio.Channel, request: dpb.WatchDeploymentRequest) -> RichError:
    stream = DeploymentServiceStub(channel).WatchDeployment(request, timeout=CALL_TIMEOUT)
    try:
        await stream.read()
    except grpc.aio.AioRpcError as error:
        return rich(error)
    finally:
        stream.cancel()
    raise AssertionError(f"WatchDeployment accepted {request}")


def test_a_watch_names_a_bad_deployment_and_a_bad_start_revision(live: LiveServer) -> None:
    request = dpb.WatchDeploymentRequest(deployment="web", start_revision=-1)
    error = live.run(_first_of_watch(live.channel, request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_paths == ["deployment", "start_revision"]
