"""Random requests to every DeploymentService RPC get only the statuses their contract names, with details.

Requests are built from the generated descriptors, so a new RPC or field is fuzzed without a change here.
Strings are drawn by field name: deployment and rollout names (unicode digits, huge numbers), version names
of READY, DEPRECATED and ARCHIVED versions, endpoint addresses (whitespace, 512 and 513 characters), routing
keys, page tokens, request ids, masks; enums take unknown numbers, integers and Durations reach the int64
extremes. The server is seeded with a deployment whose rollout is in progress, finished rollouts of each
kind, and a history, so that the random requests reach the state machine and not only the validation.
Whatever comes back must be OK or a code and reason the RPC's comment (or the README) names, never INTERNAL,
UNKNOWN or UNAVAILABLE; every error carries ErrorInfo in the "modelplane" domain, and every
INVALID_ARGUMENT names its fields.

Hypothesis drives plain (synchronous) tests, so the module owns one event loop and one server on it and runs
each example on that loop; pytest-asyncio's per-test loops never touch the server.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from modelplane.server import pagination
from modelplane.v1 import deployments_pb2 as pb
from modelplane.v1 import registry_pb2 as rpb
from modelplane.v1.deployments_pb2_grpc import DeploymentServiceStub
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub
from tests.support.live_server import (
    EXAMPLES,
    MAX_REQUEST_BYTES,
    LiveServer,
    Request,
    check_error,
    described,
    start_live_server,
)
from tests.support.proto_strategies import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    UNICODE,
    ProtoStrategies,
    any_text,
    merged,
    message_class,
    page_tokens_from,
    small_text,
)
from tests.support.rich_errors import RichError

SERVICE = pb.DESCRIPTOR.services_by_name["DeploymentService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)

IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION
AB = grpc.StatusCode.ABORTED

_BAD_FIELD = frozenset({"INVALID_FIELD"})
_WRITE = frozenset({"INVALID_FIELD", "REQUEST_ID_REUSED"})
_LIST = frozenset({"INVALID_FIELD", "INVALID_PAGE_TOKEN"})
_ETAG = frozenset({"ETAG_MISMATCH"})
_ROLLOUT_CONTROL: dict[grpc.StatusCode, frozenset[str]] = {
    IA: _WRITE,
    NF: frozenset({"ROLLOUT_NOT_FOUND"}),
    AB: _ETAG,
    FP: frozenset({"ILLEGAL_TRANSITION"}),
}
_START: dict[grpc.StatusCode, frozenset[str]] = {
    IA: _WRITE,
    NF: frozenset({"DEPLOYMENT_NOT_FOUND", "MODEL_VERSION_NOT_FOUND"}),
    FP: frozenset({"ROLLOUT_IN_PROGRESS"}),
}

# The codes and reasons each RPC may answer with when storage is up and the caller may call it: its comment
# in deployments.proto, the README's "Errors" and "Deployments", and INVALID_ARGUMENT (INVALID_FIELD) for a
# malformed field of any request. A reason outside these is a contract change, not a detail.
DOCUMENTED: dict[str, dict[grpc.StatusCode, frozenset[str]]] = {
    "CreateDeployment": {
        IA: _WRITE,
        NF: frozenset({"MODEL_NOT_FOUND", "MODEL_VERSION_NOT_FOUND"}),
        grpc.StatusCode.ALREADY_EXISTS: frozenset({"DEPLOYMENT_ALREADY_EXISTS"}),
    },
    "GetDeployment": {IA: _BAD_FIELD, NF: frozenset({"DEPLOYMENT_NOT_FOUND"})},
    "ListDeployments": {IA: _LIST},
    "UpdateDeployment": {IA: _WRITE, NF: frozenset({"DEPLOYMENT_NOT_FOUND"}), AB: _ETAG},
    "DeleteDeployment": {
        IA: _WRITE,
        NF: frozenset({"DEPLOYMENT_NOT_FOUND"}),
        AB: _ETAG,
        FP: frozenset({"ROLLOUT_IN_PROGRESS"}),
    },
    "StartRollout": _START,
    "PlanRollout": {**_START, IA: _BAD_FIELD},
    "GetRollout": {IA: _BAD_FIELD, NF: frozenset({"ROLLOUT_NOT_FOUND"})},
    "ListRollouts": {IA: _LIST, NF: frozenset({"DEPLOYMENT_NOT_FOUND"})},
    "PromoteRollout": {**_ROLLOUT_CONTROL, FP: frozenset({"ILLEGAL_TRANSITION", "VERSION_ARCHIVED"})},
    "PauseRollout": _ROLLOUT_CONTROL,
    "ResumeRollout": {**_ROLLOUT_CONTROL, FP: frozenset({"ILLEGAL_TRANSITION", "VERSION_ARCHIVED"})},
    "RollbackRollout": _ROLLOUT_CONTROL,
    "AbortRollout": _ROLLOUT_CONTROL,
    "ReportEndpointHealth": {
        IA: _WRITE,
        NF: frozenset({"DEPLOYMENT_NOT_FOUND"}),
        FP: frozenset({"VERSION_ARCHIVED"}),
    },
    "ListDeploymentHistory": {IA: _LIST, NF: frozenset({"DEPLOYMENT_NOT_FOUND"})},
    "ResolveRoute": {
        IA: _BAD_FIELD,
        NF: frozenset({"DEPLOYMENT_NOT_FOUND"}),
        FP: frozenset({"NO_READY_ENDPOINT"}),
    },
    "WatchDeployment": {IA: _BAD_FIELD, grpc.StatusCode.OUT_OF_RANGE: frozenset({"REVISION_COMPACTED"})},
}


# ---------------------------------------------------------------------------------------------------------
# Values

# google.protobuf.Duration's valid range of seconds.
DURATION_MAX_SECONDS = 315_537_897_599

# Seeded by the module fixture, so that random names often hit real resources. models/chat has versions 1
# and 4 READY, 2 DEPRECATED and 3 ARCHIVED.
MODEL = "models/chat"
V1, V2, V3, V4 = (f"{MODEL}/versions/{n}" for n in range(1, 5))
EMBED = "models/embed"
DEPLOYMENT_IDS = ["web", "batch", "search"]
DEPLOYMENTS = [f"deployments/{d}" for d in DEPLOYMENT_IDS]
# deployments/web: rollout 1 ABORTED, rollout 2 CANARY in progress; deployments/batch: rollout 1 IMMEDIATE,
# SUCCEEDED; deployments/search: no rollout, its only endpoint NOT_READY.
ROLLOUTS = ["deployments/web/rollouts/1", "deployments/web/rollouts/2", "deployments/batch/rollouts/1"]
STABLE_ADDRESSES = ["10.0.0.1:8000", "10.0.0.2:8000"]
CANARY_ADDRESS = "10.0.1.1:8000"
ADDRESSES = [*STABLE_ADDRESSES, CANARY_ADDRESS, "10.0.2.1:8000", "10.0.3.1:8000", "10.0.4.1:8000"]
# A model and deployments the random requests never name (random ids are at most 21 characters or come from
# the lists above), for the fixed cases.
QUIET_MODEL_ID = "quiet-model-for-fixed-cases-only"
QUIET_MODEL = f"models/{QUIET_MODEL_ID}"
QUIET_VERSIONS = [f"{QUIET_MODEL}/versions/{n}" for n in range(1, 4)]
# Page tokens from real list calls at seed time; a token from one list sent to another must fail cleanly.
REAL_PAGE_TOKENS: list[str] = []

ids = st.one_of(
    st.sampled_from([*DEPLOYMENT_IDS, "missing", "prod", "chat", "a", "-", "Web", "web-", "9lives"]),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
)
# Non-ASCII digits are left to the fixed cases: see test_a_unicode_digit_in_a_rollout_name_is_refused.
numbers = st.one_of(
    st.integers(-2, 5).map(str),
    st.sampled_from(
        [str(INT64_MAX), str(INT64_MIN), str(2**64), "9" * 18, "9" * 19, "01", "+1", "1.0", "one", ""]
    ),
)
deployment_names = st.one_of(
    st.sampled_from(
        [*DEPLOYMENTS, "deployments/missing", "deployments/", "deployments/-", "deployments/a/b"]
    ),
    st.builds("deployments/{}".format, ids),
    st.builds("{}/{}".format, st.sampled_from(DEPLOYMENTS), any_text),
    st.builds("models/{}".format, ids),
    any_text,
)
rollout_names = st.one_of(
    st.sampled_from(ROLLOUTS),
    st.builds("deployments/{}/rollouts/{}".format, ids, numbers),
    st.builds("{}/{}".format, st.sampled_from(ROLLOUTS), any_text),
    deployment_names,
)
version_names = st.one_of(
    st.sampled_from([V1, V2, V3, V4, f"{MODEL}/versions/5", f"{EMBED}/versions/1", MODEL, ""]),
    st.builds("models/{}/versions/{}".format, ids, numbers),
    any_text,
)
model_names = st.one_of(
    st.sampled_from([MODEL, EMBED, "models/missing", "models/-", "models/", V1, ""]),
    st.builds("models/{}".format, ids),
    any_text,
)
addresses = st.one_of(
    st.sampled_from(
        [*ADDRESSES, "", " ", "a b", "10.0.0.1:8000 ", "\u2028", "\x1f", "x" * 512, "x" * 513, "é" * 512]
    ),
    st.text(UNICODE, min_size=1, max_size=20),
    any_text,
)
routing_keys = st.one_of(
    st.sampled_from(["", "user-42", "k" * 1024, "k" * 1025, "\U0001d54f" * 1024, "\U0001d54f" * 1025]),
    any_text,
)

page_tokens = page_tokens_from(REAL_PAGE_TOKENS)
request_ids = st.one_of(
    st.just(""), st.uuids().map(str), st.sampled_from(["repeat-1", "repeat-2", "r" * 129]), any_text
)
label_keys = st.one_of(st.sampled_from(["team", "zone", "a", "-", "_", "Team", "", "x" * 64]), small_text)

# String fields by name: the values that reach deep into the service, mixed with anything at all.
TEXT_BY_FIELD: dict[str, st.SearchStrategy[str]] = {
    "name": rollout_names,
    "parent": deployment_names,
    "deployment": deployment_names,
    "active_rollout": rollout_names,
    "deployment_id": st.one_of(ids, any_text),
    "environment": st.one_of(ids, any_text),
    "model": model_names,
    "model_version": version_names,
    "target_version": version_names,
    "from_version": version_names,
    "address": addresses,
    "routing_key": routing_keys,
    "page_token": page_tokens,
    "request_id": request_ids,
    "etag": st.one_of(st.sampled_from(["", '"1"', "W/x", "0" * 16]), any_text),
    "reason": st.one_of(st.sampled_from(["fuzz", "r" * 1000, "r" * 1001]), any_text),
    "description": st.one_of(st.sampled_from(["fuzz", "d" * 4000, "d" * 4001]), any_text),
}


# Durations and timestamps as the wire allows them (any int64 seconds, any int32 nanos), not only as the
# well-known types' rules allow them.
TIMESTAMP_SECONDS = st.one_of(
    st.sampled_from([0, 1, -1, 1_700_000_000, 253_402_300_799, 253_402_300_800, -62_135_596_800]),
    st.sampled_from([-62_135_596_801, INT64_MAX, INT64_MIN]),
    st.integers(INT64_MIN, INT64_MAX),
)
NANOS = st.one_of(st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1, 500_000_000]), st.integers())
timestamps = st.builds(
    lambda seconds, nanos: timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
    TIMESTAMP_SECONDS,
    NANOS.filter(lambda n: INT32_MIN <= n <= INT32_MAX),
)
DURATION_SECONDS = st.one_of(
    st.sampled_from(
        [
            0,
            1,
            -1,
            60,
            86_400,
            86_401,
            30 * 86_400,
            30 * 86_400 + 1,
            DURATION_MAX_SECONDS,
            DURATION_MAX_SECONDS + 1,
            -DURATION_MAX_SECONDS - 1,
            INT64_MAX,
            INT64_MIN,
        ]
    ),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(-100, 100_000),
)
durations = st.builds(
    lambda seconds, nanos: duration_pb2.Duration(seconds=seconds, nanos=nanos),
    DURATION_SECONDS,
    st.one_of(
        st.sampled_from([0, 1, 500_000_000, 999_999_999, 1_000_000_000, -1, -999_999_999]),
        st.integers(INT32_MIN, INT32_MAX),
    ),
)
WELL_KNOWN: dict[str, st.SearchStrategy[Message]] = {
    timestamp_pb2.Timestamp.DESCRIPTOR.full_name: timestamps,
    duration_pb2.Duration.DESCRIPTOR.full_name: durations,
}

proto = ProtoStrategies(
    text_by_field=TEXT_BY_FIELD,
    int_edges=(0, 1, -1, 2, 50, 999, 1000, 1001, 5000, 9999, 10_000, 10_001),
    near_zero_max=10_100,
    map_keys=label_keys,
    mask_paths=[
        "*",
        "",
        "description",
        "labels",
        "traffic.stable.endpoints",
        "traffic",
        "traffic.stable",
        "traffic.canary",
        "traffic.stable.weight_bp",
        "labels.team",
        "x.y",
        "*.*",
    ],
    well_known=WELL_KNOWN,
)


# ---------------------------------------------------------------------------------------------------------
# Valid requests: past field validation into the store and the rollout state machine


def _endpoints(*addresses_: str, **labels: str) -> list[pb.Endpoint]:
    return [pb.Endpoint(address=address, labels=labels) for address in addresses_]


def _pause(weight: int) -> pb.RolloutStep:
    return pb.RolloutStep(weight_bp=weight, pause_until_promoted=True)


def _timed(weight: int, seconds: int, nanos: int = 0) -> pb.RolloutStep:
    return pb.RolloutStep(weight_bp=weight, duration=duration_pb2.Duration(seconds=seconds, nanos=nanos))


def _deployment(model: str, version: str, *addresses_: str, environment: str = "prod") -> pb.Deployment:
    return pb.Deployment(
        environment=environment,
        model=model,
        traffic=pb.TrafficTable(
            stable=pb.SlotTraffic(model_version=version, endpoints=_endpoints(*addresses_))
        ),
    )


steps = st.lists(
    st.one_of(
        st.builds(_pause, st.integers(1, 10_000)),
        st.builds(_timed, st.integers(1, 10_000), st.sampled_from([1, 3600, 86_400])),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda step: step.weight_bp,
).map(lambda drawn: sorted(drawn, key=lambda step: step.weight_bp))
rollouts = st.one_of(
    st.builds(
        lambda version, address, drawn: pb.Rollout(
            target_version=version,
            endpoints=_endpoints(address),
            strategy=pb.ROLLOUT_STRATEGY_CANARY,
            steps=drawn,
            reason="fuzz",
        ),
        st.sampled_from([V1, V2, V3, V4]),
        st.sampled_from(ADDRESSES),
        steps,
    ),
    st.builds(
        lambda version, address, strategy: pb.Rollout(
            target_version=version, endpoints=_endpoints(address), strategy=strategy
        ),
        st.sampled_from([V1, V2, V3, V4]),
        st.sampled_from(ADDRESSES),
        st.sampled_from([pb.ROLLOUT_STRATEGY_BLUE_GREEN, pb.ROLLOUT_STRATEGY_IMMEDIATE]),
    ),
)
existing_deployments = st.sampled_from(DEPLOYMENTS)
# The deployments of models/chat, whose versions the valid rollouts name.
chat_deployments = st.sampled_from(DEPLOYMENTS[:2])
existing_rollouts = st.sampled_from(ROLLOUTS)

# A valid request of each RPC against the seeded resources. Most fully random requests fail validation on
# their first field, so a third of the examples start from one of these and another third change at most
# two fields of one (at each nesting level), which takes them past validation into the store.
VALID_REQUESTS: dict[str, st.SearchStrategy[Message]] = {
    "CreateDeployment": st.builds(
        lambda deployment_id, environment, version: pb.CreateDeploymentRequest(
            deployment_id=deployment_id,
            deployment=_deployment(MODEL, version, "10.9.0.1:8000", environment=environment),
        ),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
        st.sampled_from([V1, V2, V3, V4]),
    ),
    "GetDeployment": st.builds(lambda name: pb.GetDeploymentRequest(name=name), existing_deployments),
    "ListDeployments": st.sampled_from(
        [pb.ListDeploymentsRequest(page_size=1), pb.ListDeploymentsRequest(page_size=1, model=MODEL)]
    ),
    "UpdateDeployment": st.builds(
        lambda name, paths: pb.UpdateDeploymentRequest(
            deployment=pb.Deployment(
                name=name,
                description="fuzzed",
                labels={"team": "fuzz"},
                traffic=pb.TrafficTable(stable=pb.SlotTraffic(endpoints=_endpoints(*STABLE_ADDRESSES))),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
        existing_deployments,
        st.sampled_from([["description"], ["labels"], ["traffic.stable.endpoints"], ["*"]]),
    ),
    "DeleteDeployment": st.builds(
        lambda deployment_id: pb.DeleteDeploymentRequest(name=f"deployments/{deployment_id}"),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
    ),
    "StartRollout": st.builds(
        lambda parent, rollout: pb.StartRolloutRequest(parent=parent, rollout=rollout),
        chat_deployments,
        rollouts,
    ),
    "PlanRollout": st.builds(
        lambda parent, rollout: pb.PlanRolloutRequest(parent=parent, rollout=rollout),
        chat_deployments,
        rollouts,
    ),
    "GetRollout": st.builds(lambda name: pb.GetRolloutRequest(name=name), existing_rollouts),
    "ListRollouts": st.builds(
        lambda parent: pb.ListRolloutsRequest(parent=parent, page_size=1), existing_deployments
    ),
    "PromoteRollout": st.builds(
        lambda name, to_end: pb.PromoteRolloutRequest(name=name, to_end=to_end, reason="fuzz"),
        existing_rollouts,
        st.booleans(),
    ),
    "PauseRollout": st.builds(lambda name: pb.PauseRolloutRequest(name=name), existing_rollouts),
    "ResumeRollout": st.builds(lambda name: pb.ResumeRolloutRequest(name=name), existing_rollouts),
    "RollbackRollout": st.one_of(
        st.builds(
            lambda name: pb.RollbackRolloutRequest(name=name, mode=pb.ROLLBACK_MODE_INSTANT),
            existing_rollouts,
        ),
        st.builds(
            lambda name, seconds: pb.RollbackRolloutRequest(
                name=name,
                mode=pb.ROLLBACK_MODE_STEPPED,
                step_interval=duration_pb2.Duration(seconds=seconds),
            ),
            existing_rollouts,
            st.sampled_from([1, 60, 86_400]),
        ),
    ),
    "AbortRollout": st.builds(lambda name: pb.AbortRolloutRequest(name=name), existing_rollouts),
    "ReportEndpointHealth": st.builds(
        lambda deployment, address, ready: pb.ReportEndpointHealthRequest(
            deployment=deployment, address=address, ready=ready
        ),
        existing_deployments,
        st.sampled_from([*ADDRESSES, "10.0.5.1:8000"]),
        st.booleans(),
    ),
    "ListDeploymentHistory": st.builds(
        lambda parent: pb.ListDeploymentHistoryRequest(parent=parent, page_size=1), existing_deployments
    ),
    "ResolveRoute": st.builds(
        lambda deployment, key: pb.ResolveRouteRequest(deployment=deployment, routing_key=key),
        existing_deployments,
        st.sampled_from(["", "user-42", "k" * 1024]),
    ),
    "WatchDeployment": st.builds(
        lambda deployment, revision: pb.WatchDeploymentRequest(
            deployment=deployment, start_revision=revision
        ),
        st.one_of(existing_deployments, st.just("deployments/missing")),
        st.sampled_from([0, 1, 5]),
    ),
}


@functools.cache
def requests_of(method: MethodDescriptor) -> st.SearchStrategy[Message]:
    """Fully random requests, valid ones, and valid ones with a few fields changed to random values."""

    def define() -> st.SearchStrategy[Message]:
        base = VALID_REQUESTS[method.name]
        near_valid = st.builds(merged, base, proto.messages(method.input_type, sparse=True))
        return st.one_of(proto.messages(method.input_type), near_valid, base)

    return st.deferred(define)


# ---------------------------------------------------------------------------------------------------------
# The server


def _version_request(parent: str, uri: str) -> rpb.CreateModelVersionRequest:
    return rpb.CreateModelVersionRequest(
        parent=parent,
        model_version=rpb.ModelVersion(
            source_uri=uri,
            context_window=8192,
            max_output_tokens=1024,
            pricing=rpb.TokenPricing(currency_code="USD"),
        ),
    )


async def _set_state(channel: grpc.aio.Channel, version: str, state: int) -> None:
    await ModelRegistryServiceStub(channel).UpdateModelVersion(
        rpb.UpdateModelVersionRequest(
            model_version=rpb.ModelVersion(name=version, state=state),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )
    )


async def _seed(channel: grpc.aio.Channel) -> list[str]:
    """The resources named above, a rollout in each state that matters, and page tokens from each list."""
    registry = ModelRegistryServiceStub(channel)
    stub = DeploymentServiceStub(channel)
    for model_id, count in (("chat", 4), ("embed", 1), (QUIET_MODEL_ID, 3)):
        await registry.CreateModel(
            rpb.CreateModelRequest(model_id=model_id, model=rpb.Model(provider="local"))
        )
        for n in range(count):
            await registry.CreateModelVersion(_version_request(f"models/{model_id}", f"local:{model_id}-{n}"))
    await _set_state(channel, V2, rpb.MODEL_VERSION_STATE_DEPRECATED)
    await _set_state(channel, V3, rpb.MODEL_VERSION_STATE_ARCHIVED)
    await _set_state(channel, QUIET_VERSIONS[2], rpb.MODEL_VERSION_STATE_ARCHIVED)

    await stub.CreateDeployment(
        pb.CreateDeploymentRequest(deployment_id="web", deployment=_deployment(MODEL, V1, *STABLE_ADDRESSES))
    )
    await stub.StartRollout(
        pb.StartRolloutRequest(
            parent="deployments/web",
            rollout=pb.Rollout(
                target_version=V4,
                endpoints=_endpoints("10.0.2.1:8000"),
                strategy=pb.ROLLOUT_STRATEGY_CANARY,
                steps=[_pause(1000)],
            ),
        )
    )
    await stub.AbortRollout(pb.AbortRolloutRequest(name=ROLLOUTS[0], reason="not now"))
    await stub.StartRollout(
        pb.StartRolloutRequest(
            parent="deployments/web",
            rollout=pb.Rollout(
                target_version=V2,
                endpoints=_endpoints(CANARY_ADDRESS, zone="a"),
                strategy=pb.ROLLOUT_STRATEGY_CANARY,
                steps=[_pause(1000), _timed(5000, 86_400), _pause(9000)],
                reason="new snapshot",
            ),
        )
    )
    # The canary reports ready: PROGRESSING at its first step, with 10% of the traffic.
    await stub.ReportEndpointHealth(
        pb.ReportEndpointHealthRequest(deployment="deployments/web", address=CANARY_ADDRESS, ready=True)
    )
    await stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(
            deployment=pb.Deployment(name="deployments/web", description="the web front end"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )
    await stub.CreateDeployment(
        pb.CreateDeploymentRequest(
            deployment_id="batch", deployment=_deployment(MODEL, V4, "10.0.3.1:8000", environment="batch")
        )
    )
    await stub.StartRollout(
        pb.StartRolloutRequest(
            parent="deployments/batch",
            rollout=pb.Rollout(
                target_version=V2,
                endpoints=_endpoints("10.0.3.2:8000"),
                strategy=pb.ROLLOUT_STRATEGY_IMMEDIATE,
            ),
        )
    )
    await stub.CreateDeployment(
        pb.CreateDeploymentRequest(
            deployment_id="search", deployment=_deployment(EMBED, f"{EMBED}/versions/1", "10.0.4.1:8000")
        )
    )
    await stub.ReportEndpointHealth(
        pb.ReportEndpointHealthRequest(deployment="deployments/search", address="10.0.4.1:8000", ready=False)
    )
    tokens = [
        (await stub.ListDeployments(pb.ListDeploymentsRequest(page_size=1))).next_page_token,
        (await stub.ListDeployments(pb.ListDeploymentsRequest(page_size=1, model=MODEL))).next_page_token,
        (
            await stub.ListRollouts(pb.ListRolloutsRequest(parent="deployments/web", page_size=1))
        ).next_page_token,
        (
            await stub.ListDeploymentHistory(
                pb.ListDeploymentHistoryRequest(parent="deployments/web", page_size=1)
            )
        ).next_page_token,
    ]
    assert all(tokens), tokens
    return tokens


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[LiveServer]:
    """One seeded server for the module on a loop of its own, so that hypothesis examples can share it."""
    with start_live_server(admin_url, template_database, SERVICE, check_outcome) as server:
        REAL_PAGE_TOKENS[:] = server.run(_seed(server.channel))
        yield server


# ---------------------------------------------------------------------------------------------------------
# The property


def check_outcome(
    method: MethodDescriptor, request: Request, error: RichError | None, responses: list[Message]
) -> None:
    where = described(method, request)
    if error is None:
        # A watch that is still open has always sent something first: the deployment or a progress mark.
        assert responses, f"no response from {where}"
        return
    check_error(error, where, DOCUMENTED[method.name])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_only_documented_statuses(live: LiveServer, method: MethodDescriptor, data: st.DataObject) -> None:
    request = data.draw(requests_of(method), label="request")
    assume(request.ByteSize() < MAX_REQUEST_BYTES)
    error, responses = live.run(live.call(method, request))
    # Shown by --hypothesis-show-statistics: how deep the random requests get.
    event("OK" if error is None else f"{error.code.name} {error.reason}")
    check_outcome(method, request, error, responses)


def test_every_rpc_has_a_contract_and_a_valid_request() -> None:
    # A new RPC must say here which statuses it may answer with before it is fuzzed.
    assert set(DOCUMENTED) == {m.name for m in METHODS} == set(VALID_REQUESTS)


def test_the_seeded_tokens_are_real(live: LiveServer) -> None:
    # The fuzzer mixes these in; they must be tokens the server itself made.
    assert len(REAL_PAGE_TOKENS) == 4
    error, responses = live.expect(
        "ListDeployments", pb.ListDeploymentsRequest(page_token=REAL_PAGE_TOKENS[0])
    )
    assert error is None, error
    assert responses[0].deployments  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------
# Fixed cases: each documented edge once, with the code, reason and path it must get


def _quiet_deployment(live: LiveServer, version: str = QUIET_VERSIONS[0]) -> str:
    """A new deployment of the quiet model in an environment of its own; its name."""
    suffix = uuid.uuid4().hex[:12]
    deployment = _deployment(QUIET_MODEL, version, "10.1.0.1:8000", environment=f"env-{suffix}")
    error, _ = live.expect(
        "CreateDeployment", pb.CreateDeploymentRequest(deployment_id=f"fixed-{suffix}", deployment=deployment)
    )
    assert error is None, error
    return f"deployments/fixed-{suffix}"


def _start(
    live: LiveServer, parent: str, rollout: pb.Rollout
) -> tuple[RichError | None, pb.StartRolloutResponse | None]:
    error, responses = live.expect("StartRollout", pb.StartRolloutRequest(parent=parent, rollout=rollout))
    response = responses[0] if responses else None
    assert response is None or isinstance(response, pb.StartRolloutResponse)
    return error, response


def _canary(*step_list: pb.RolloutStep, version: str = QUIET_VERSIONS[1]) -> pb.Rollout:
    return pb.Rollout(
        target_version=version,
        endpoints=_endpoints("10.1.1.1:8000"),
        strategy=pb.ROLLOUT_STRATEGY_CANARY,
        steps=step_list,
    )


def _refused(error: RichError | None, path: str, reason: str = "INVALID_FIELD") -> None:
    assert error is not None, f"{path} was accepted"
    assert (error.code, error.reason) == (IA, reason), error
    assert path in error.field_paths, error.field_paths


STEP_CASES = [
    pytest.param([_pause(5000), _pause(5000)], "rollout.steps[1].weight_bp", id="not-rising"),
    pytest.param([_pause(5000), _pause(1000)], "rollout.steps[1].weight_bp", id="falling"),
    pytest.param([_pause(10_001)], "rollout.steps[0].weight_bp", id="over-10000"),
    pytest.param([_pause(0)], "rollout.steps[0].weight_bp", id="zero"),
    pytest.param([_pause(INT32_MIN)], "rollout.steps[0].weight_bp", id="int32-min"),
    pytest.param([_pause(INT32_MAX)], "rollout.steps[0].weight_bp", id="int32-max"),
    pytest.param([pb.RolloutStep(weight_bp=10)], "rollout.steps[0]", id="no-advance"),
    pytest.param(
        [pb.RolloutStep(weight_bp=10, pause_until_promoted=False)],
        "rollout.steps[0].pause_until_promoted",
        id="pause-false",
    ),
    pytest.param([], "rollout.steps", id="no-steps"),
    pytest.param([_pause(n) for n in range(1, 102)], "rollout.steps", id="101-steps"),
    pytest.param([_timed(10, 0)], "rollout.steps[0].duration", id="duration-zero"),
    pytest.param([_timed(10, -1)], "rollout.steps[0].duration", id="duration-negative"),
    pytest.param([_timed(10, 30 * 86_400, 1)], "rollout.steps[0].duration", id="duration-over-30-days"),
    pytest.param([_timed(10, DURATION_MAX_SECONDS + 1)], "rollout.steps[0].duration", id="duration-past-max"),
    pytest.param(
        [_timed(10, -DURATION_MAX_SECONDS - 1)], "rollout.steps[0].duration", id="duration-before-min"
    ),
    pytest.param([_timed(10, INT64_MAX)], "rollout.steps[0].duration", id="duration-int64-max"),
    pytest.param([_timed(10, INT64_MIN)], "rollout.steps[0].duration", id="duration-int64-min"),
    pytest.param([_timed(10, 0, -1)], "rollout.steps[0].duration", id="nanos-negative"),
    pytest.param([_timed(10, 0, INT32_MIN)], "rollout.steps[0].duration", id="nanos-int32-min"),
]


@pytest.mark.parametrize("method_name", ["StartRollout", "PlanRollout"])
@pytest.mark.parametrize(("step_list", "path"), STEP_CASES)
def test_a_bad_step_is_refused_by_path(
    live: LiveServer, method_name: str, step_list: list[pb.RolloutStep], path: str
) -> None:
    request_class = pb.StartRolloutRequest if method_name == "StartRollout" else pb.PlanRolloutRequest
    error, _ = live.expect(
        method_name, request_class(parent=_quiet_deployment(live), rollout=_canary(*step_list))
    )
    _refused(error, path)


# Durations that break google.protobuf.Duration's own rules (nanos beyond +-999,999,999, or of the other
# sign than the seconds) but would land within the allowed range once added up.
OFF_RULE_DURATIONS = [
    (0, 1_000_000_000, "nanos-one-second"),
    (0, INT32_MAX, "nanos-int32-max"),
    (2, -1, "mixed-signs"),
]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [pytest.param(seconds, nanos, id=label) for seconds, nanos, label in OFF_RULE_DURATIONS],
)
def test_a_step_duration_outside_its_own_rules_is_refused(live: LiveServer, seconds: int, nanos: int) -> None:
    rollout = _canary(_timed(10, seconds, nanos))
    error, _ = live.expect(
        "PlanRollout", pb.PlanRolloutRequest(parent=_quiet_deployment(live), rollout=rollout)
    )
    _refused(error, "rollout.steps[0].duration")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [pytest.param(seconds, nanos, id=label) for seconds, nanos, label in OFF_RULE_DURATIONS],
)
def test_a_rollback_interval_outside_its_own_rules_is_refused(
    live: LiveServer, seconds: int, nanos: int
) -> None:
    parent = _quiet_deployment(live)
    error, _ = _start(live, parent, _canary(_pause(1000)))
    assert error is None, error
    request = pb.RollbackRolloutRequest(
        name=f"{parent}/rollouts/1",
        mode=pb.ROLLBACK_MODE_STEPPED,
        step_interval=duration_pb2.Duration(seconds=seconds, nanos=nanos),
    )
    error, _ = live.expect("RollbackRollout", request)
    _refused(error, "step_interval")


@pytest.mark.parametrize(
    ("strategy", "path"),
    [
        pytest.param(pb.ROLLOUT_STRATEGY_UNSPECIFIED, "rollout.strategy", id="unspecified"),
        pytest.param(4, "rollout.strategy", id="unknown-4"),
        pytest.param(-1, "rollout.strategy", id="unknown-negative"),
        pytest.param(INT32_MAX, "rollout.strategy", id="unknown-int32-max"),
    ],
)
def test_an_unknown_strategy_is_refused(live: LiveServer, strategy: int, path: str) -> None:
    rollout = pb.Rollout(
        target_version=QUIET_VERSIONS[1],
        endpoints=_endpoints("10.1.1.1:8000"),
        strategy=strategy,  # type: ignore[arg-type]  # unknown numbers on purpose
    )
    error, _ = _start(live, _quiet_deployment(live), rollout)
    _refused(error, path)


@pytest.mark.parametrize("strategy", [pb.ROLLOUT_STRATEGY_BLUE_GREEN, pb.ROLLOUT_STRATEGY_IMMEDIATE])
def test_steps_for_a_strategy_without_steps_are_refused(live: LiveServer, strategy: int) -> None:
    rollout = pb.Rollout(
        target_version=QUIET_VERSIONS[1],
        endpoints=_endpoints("10.1.1.1:8000"),
        strategy=strategy,  # type: ignore[arg-type]
        steps=[_pause(10)],
    )
    error, _ = _start(live, _quiet_deployment(live), rollout)
    _refused(error, "rollout.steps")


@pytest.mark.parametrize(
    ("endpoints", "path"),
    [
        pytest.param([], "rollout.endpoints", id="none"),
        pytest.param(_endpoints("a", "a"), "rollout.endpoints[1].address", id="twice"),
        pytest.param(_endpoints(""), "rollout.endpoints[0].address", id="empty"),
        pytest.param(_endpoints("a b"), "rollout.endpoints[0].address", id="space"),
        pytest.param(_endpoints("a\u2028b"), "rollout.endpoints[0].address", id="unicode-space"),
        pytest.param(_endpoints("x" * 513), "rollout.endpoints[0].address", id="513"),
        pytest.param(
            _endpoints(*(f"10.2.{n // 256}.{n % 256}:1" for n in range(257))), "rollout.endpoints", id="257"
        ),
        pytest.param(_endpoints("a", Team="x"), "rollout.endpoints[0].labels['Team']", id="label-key"),
    ],
)
def test_bad_canary_endpoints_are_refused(live: LiveServer, endpoints: list[pb.Endpoint], path: str) -> None:
    rollout = pb.Rollout(
        target_version=QUIET_VERSIONS[1], endpoints=endpoints, strategy=pb.ROLLOUT_STRATEGY_BLUE_GREEN
    )
    error, _ = _start(live, _quiet_deployment(live), rollout)
    _refused(error, path)


def test_the_longest_address_and_routing_key_are_served(live: LiveServer) -> None:
    address = "\U0001d54f" * 512
    parent = _quiet_deployment(live)
    error, _ = live.expect(
        "ReportEndpointHealth", pb.ReportEndpointHealthRequest(deployment=parent, address=address, ready=True)
    )
    assert error is None, error
    error, responses = live.expect(
        "ResolveRoute", pb.ResolveRouteRequest(deployment=parent, routing_key="\U0001d54f" * 1024)
    )
    assert error is None, error
    route = responses[0]
    assert isinstance(route, pb.ResolveRouteResponse)
    assert (route.endpoint.address, route.model_version) == ("10.1.0.1:8000", QUIET_VERSIONS[0])
    error, _ = live.expect("ResolveRoute", pb.ResolveRouteRequest(deployment=parent, routing_key="k" * 1025))
    _refused(error, "routing_key")
    error, _ = live.expect(
        "ReportEndpointHealth", pb.ReportEndpointHealthRequest(deployment=parent, address="x" * 513)
    )
    _refused(error, "address")


def test_an_archived_version_is_refused_where_named(live: LiveServer) -> None:
    suffix = uuid.uuid4().hex[:12]
    error, _ = live.expect(
        "CreateDeployment",
        pb.CreateDeploymentRequest(
            deployment_id=f"fixed-{suffix}",
            deployment=_deployment(QUIET_MODEL, QUIET_VERSIONS[2], "a", environment=f"env-{suffix}"),
        ),
    )
    _refused(error, "deployment.traffic.stable.model_version")
    parent = _quiet_deployment(live)
    rollout = pb.Rollout(
        target_version=QUIET_VERSIONS[2], endpoints=_endpoints("b"), strategy=pb.ROLLOUT_STRATEGY_IMMEDIATE
    )
    error, _ = live.expect("PlanRollout", pb.PlanRolloutRequest(parent=parent, rollout=rollout))
    _refused(error, "rollout.target_version")
    error, _ = _start(live, parent, rollout)
    _refused(error, "rollout.target_version")


@pytest.mark.parametrize(
    ("table", "path"),
    [
        pytest.param(
            pb.TrafficTable(stable=pb.SlotTraffic(model_version="", endpoints=_endpoints("a"))),
            "deployment.traffic.stable.model_version",
            id="no-version",
        ),
        pytest.param(
            pb.TrafficTable(stable=pb.SlotTraffic(model_version=V1, endpoints=_endpoints("a"))),
            "deployment.traffic.stable.model_version",
            id="another-model",
        ),
        pytest.param(
            pb.TrafficTable(
                stable=pb.SlotTraffic(
                    model_version=QUIET_VERSIONS[0], endpoints=_endpoints("a"), weight_bp=5000
                )
            ),
            "deployment.traffic.stable.weight_bp",
            id="split-weight",
        ),
        pytest.param(
            pb.TrafficTable(
                stable=pb.SlotTraffic(model_version=QUIET_VERSIONS[0], endpoints=_endpoints("a")),
                canary=pb.SlotTraffic(model_version=QUIET_VERSIONS[1], endpoints=_endpoints("b")),
            ),
            "deployment.traffic.canary",
            id="canary-given",
        ),
        pytest.param(
            pb.TrafficTable(stable=pb.SlotTraffic(model_version=QUIET_VERSIONS[0])),
            "deployment.traffic.stable.endpoints",
            id="no-endpoints",
        ),
    ],
)
def test_a_bad_new_table_is_refused_by_path(live: LiveServer, table: pb.TrafficTable, path: str) -> None:
    suffix = uuid.uuid4().hex[:12]
    deployment = pb.Deployment(environment=f"env-{suffix}", model=QUIET_MODEL, traffic=table)
    error, _ = live.expect(
        "CreateDeployment", pb.CreateDeploymentRequest(deployment_id=f"fixed-{suffix}", deployment=deployment)
    )
    _refused(error, path)


def test_a_version_that_does_not_exist_is_not_found(live: LiveServer) -> None:
    suffix = uuid.uuid4().hex[:12]
    error, _ = live.expect(
        "CreateDeployment",
        pb.CreateDeploymentRequest(
            deployment_id=f"fixed-{suffix}",
            deployment=_deployment(QUIET_MODEL, f"{QUIET_MODEL}/versions/{'9' * 18}", "a", environment="x"),
        ),
    )
    assert error is not None
    assert (error.code, error.reason) == (NF, "MODEL_VERSION_NOT_FOUND"), error
    error, _ = live.expect(
        "CreateDeployment",
        pb.CreateDeploymentRequest(
            deployment_id=f"fixed-{suffix}",
            deployment=_deployment("models/nowhere", "models/nowhere/versions/1", "a", environment="x"),
        ),
    )
    assert error is not None
    assert (error.code, error.reason) == (NF, "MODEL_NOT_FOUND"), error


@pytest.mark.parametrize(
    ("mode", "interval", "path"),
    [
        pytest.param(pb.ROLLBACK_MODE_UNSPECIFIED, None, "mode", id="mode-unspecified"),
        pytest.param(3, None, "mode", id="mode-unknown"),
        pytest.param(-1, None, "mode", id="mode-negative"),
        pytest.param(pb.ROLLBACK_MODE_INSTANT, (1, 0), "step_interval", id="instant-with-interval"),
        pytest.param(pb.ROLLBACK_MODE_STEPPED, None, "step_interval", id="stepped-without-interval"),
        pytest.param(pb.ROLLBACK_MODE_STEPPED, (0, 0), "step_interval", id="stepped-zero"),
        pytest.param(pb.ROLLBACK_MODE_STEPPED, (86_400, 1), "step_interval", id="stepped-over-a-day"),
        pytest.param(pb.ROLLBACK_MODE_STEPPED, (INT64_MAX, 0), "step_interval", id="stepped-int64-max"),
        pytest.param(pb.ROLLBACK_MODE_STEPPED, (INT64_MIN, 0), "step_interval", id="stepped-int64-min"),
        pytest.param(
            pb.ROLLBACK_MODE_STEPPED, (DURATION_MAX_SECONDS + 1, 0), "step_interval", id="stepped-past-max"
        ),
        pytest.param(pb.ROLLBACK_MODE_STEPPED, (0, -1), "step_interval", id="stepped-nanos-negative"),
    ],
)
def test_a_bad_rollback_is_refused_by_path(
    live: LiveServer, mode: int, interval: tuple[int, int] | None, path: str
) -> None:
    request = pb.RollbackRolloutRequest(name=ROLLOUTS[1], mode=mode)  # type: ignore[arg-type]
    if interval is not None:
        request.step_interval.CopyFrom(duration_pb2.Duration(seconds=interval[0], nanos=interval[1]))
    error, _ = live.expect("RollbackRollout", request)
    _refused(error, path)


def test_illegal_transitions_name_the_state(live: LiveServer) -> None:
    parent = _quiet_deployment(live)
    error, started = _start(live, parent, _canary(_pause(1000), _pause(5000)))
    assert error is None, error
    assert started is not None
    name = started.rollout.name
    assert started.rollout.state == pb.ROLLOUT_STATE_WAITING_READY
    error, _ = live.expect("PromoteRollout", pb.PromoteRolloutRequest(name=name))
    assert error is not None
    assert (error.code, error.reason, error.metadata.get("state")) == (
        FP,
        "ILLEGAL_TRANSITION",
        "WAITING_READY",
    )
    error, _ = live.expect("ResumeRollout", pb.ResumeRolloutRequest(name=name))
    assert error is not None
    assert (error.code, error.reason, error.metadata.get("state")) == (
        FP,
        "ILLEGAL_TRANSITION",
        "WAITING_READY",
    )
    error, _ = live.expect("DeleteDeployment", pb.DeleteDeploymentRequest(name=parent))
    assert error is not None
    assert (error.code, error.reason) == (FP, "ROLLOUT_IN_PROGRESS"), error
    error, _ = _start(live, parent, _canary(_pause(1000)))
    assert error is not None
    assert (error.code, error.reason) == (FP, "ROLLOUT_IN_PROGRESS"), error
    error, _ = live.expect("PauseRollout", pb.PauseRolloutRequest(name=name, etag="stale"))
    assert error is not None
    assert (error.code, error.reason) == (AB, "ETAG_MISMATCH"), error
    error, _ = live.expect("AbortRollout", pb.AbortRolloutRequest(name=name))
    assert error is None, error
    for method_name, request in [
        ("AbortRollout", pb.AbortRolloutRequest(name=name)),
        ("PauseRollout", pb.PauseRolloutRequest(name=name)),
        ("RollbackRollout", pb.RollbackRolloutRequest(name=name, mode=pb.ROLLBACK_MODE_INSTANT)),
    ]:
        error, _ = live.expect(method_name, request)
        assert error is not None, method_name
        assert (error.code, error.reason, error.metadata.get("state")) == (
            FP,
            "ILLEGAL_TRANSITION",
            "ABORTED",
        )


@pytest.mark.parametrize(
    "name",
    [
        "deployments/web/rollouts/0",
        "deployments/web/rollouts/-1",
        "deployments/web/rollouts/+1",
        "deployments/web/rollouts/" + "9" * 19,
        "deployments/web/rollouts/",
        "deployments/Web/rollouts/1",
        "deployments/web/rollouts/1/x",
    ],
)
def test_a_malformed_rollout_name_is_refused(live: LiveServer, name: str) -> None:
    error, _ = live.expect("GetRollout", pb.GetRolloutRequest(name=name))
    _refused(error, "name")


def test_the_largest_rollout_number_is_not_found(live: LiveServer) -> None:
    error, _ = live.expect("GetRollout", pb.GetRolloutRequest(name="deployments/web/rollouts/" + "9" * 18))
    assert error is not None
    assert (error.code, error.reason) == (NF, "ROLLOUT_NOT_FOUND"), error


# str.isdigit() holds for superscripts and other digits int() cannot parse.
UNICODE_DIGIT = "\u00b2"  # SUPERSCRIPT TWO


def test_a_unicode_digit_in_a_rollout_name_is_refused(live: LiveServer) -> None:
    error, _ = live.expect(
        "GetRollout", pb.GetRolloutRequest(name=f"deployments/web/rollouts/{UNICODE_DIGIT}")
    )
    _refused(error, "name")


def test_a_unicode_digit_in_a_version_name_is_refused(live: LiveServer) -> None:
    rollout = pb.Rollout(
        target_version=f"{QUIET_MODEL}/versions/{UNICODE_DIGIT}",
        endpoints=_endpoints("a"),
        strategy=pb.ROLLOUT_STRATEGY_IMMEDIATE,
    )
    error, _ = live.expect(
        "PlanRollout", pb.PlanRolloutRequest(parent=_quiet_deployment(live), rollout=rollout)
    )
    _refused(error, "rollout.target_version")


def _forged_token(fingerprint: str, key: object) -> str:
    """A token with a correct checksum and query but a key no list ever issued (the checksum is no secret)."""
    return pagination.encode_page_token(fingerprint, [key])  # type: ignore[list-item]


def _forged_list(method_name: str, parent: str, key: object) -> Message:
    request_class = message_class(SERVICE.methods_by_name[method_name].input_type)
    token = _forged_token(pagination.query_fingerprint(method_name, parent), key)
    request = request_class()
    request.parent = parent  # type: ignore[attr-defined]
    request.page_token = token  # type: ignore[attr-defined]
    return request


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(key, id=label)
        for key, label in [(2**63, "int64-max-plus-1"), (-(2**63) - 1, "int64-min-minus-1"), (2**80, "2^80")]
    ],
)
@pytest.mark.parametrize("method_name", ["ListRollouts", "ListDeploymentHistory"])
def test_a_forged_page_token_beyond_int64_is_refused(live: LiveServer, method_name: str, key: int) -> None:
    error, _ = live.expect(method_name, _forged_list(method_name, _quiet_deployment(live), key))
    _refused(error, "page_token", "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize("key", [2**63 - 1, -(2**63), 0])
@pytest.mark.parametrize("method_name", ["ListRollouts", "ListDeploymentHistory"])
def test_a_forged_page_token_within_int64_is_served(live: LiveServer, method_name: str, key: int) -> None:
    # Forging a token gains nothing: it only positions a list the caller may read anyway.
    error, _ = live.expect(method_name, _forged_list(method_name, _quiet_deployment(live), key))
    assert error is None, error


def test_a_forged_page_token_with_a_nul_key_is_refused(live: LiveServer) -> None:
    token = _forged_token(pagination.query_fingerprint("ListDeployments", ""), "web\x00")
    error, _ = live.expect("ListDeployments", pb.ListDeploymentsRequest(page_token=token))
    _refused(error, "page_token", "INVALID_PAGE_TOKEN")


def test_a_page_token_of_another_list_is_refused(live: LiveServer) -> None:
    # REAL_PAGE_TOKENS[2] was made for ListRollouts of deployments/web.
    error, _ = live.expect(
        "ListDeploymentHistory",
        pb.ListDeploymentHistoryRequest(parent="deployments/web", page_token=REAL_PAGE_TOKENS[2]),
    )
    _refused(error, "page_token", "INVALID_PAGE_TOKEN")
    error, _ = live.expect(
        "ListRollouts", pb.ListRolloutsRequest(parent="deployments/batch", page_token=REAL_PAGE_TOKENS[2])
    )
    _refused(error, "page_token", "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    ("revision", "first"),
    [pytest.param(INT64_MAX, "progress", id="int64-max"), pytest.param(0, "change", id="now")],
)
def test_a_watch_from_any_revision_starts(live: LiveServer, revision: int, first: str) -> None:
    error, responses = live.expect(
        "WatchDeployment",
        pb.WatchDeploymentRequest(deployment=_quiet_deployment(live), start_revision=revision),
    )
    assert error is None, error
    message = responses[0]
    assert isinstance(message, pb.WatchDeploymentResponse)
    assert message.WhichOneof("event") == first


@pytest.mark.parametrize("revision", [-1, INT64_MIN])
def test_a_negative_start_revision_is_refused(live: LiveServer, revision: int) -> None:
    error, _ = live.expect(
        "WatchDeployment", pb.WatchDeploymentRequest(deployment="deployments/search", start_revision=revision)
    )
    _refused(error, "start_revision")


@pytest.mark.parametrize("method_name", ["ListDeployments", "ListRollouts", "ListDeploymentHistory"])
@pytest.mark.parametrize("size", [INT32_MIN, -1])
def test_a_negative_page_size_is_refused(live: LiveServer, method_name: str, size: int) -> None:
    request_class = message_class(SERVICE.methods_by_name[method_name].input_type)
    request = request_class()
    request.page_size = size  # type: ignore[attr-defined]
    if method_name != "ListDeployments":
        request.parent = "deployments/web"  # type: ignore[attr-defined]
    error, _ = live.expect(method_name, request)
    _refused(error, "page_size")


def test_the_no_ready_endpoint_case_is_failed_precondition(live: LiveServer) -> None:
    parent = _quiet_deployment(live)
    health = pb.ReportEndpointHealthRequest(deployment=parent, address="10.1.0.1:8000", ready=False)
    error, responses = live.expect("ReportEndpointHealth", health)
    assert error is None, error
    assert responses[0].changed  # type: ignore[attr-defined]
    error, _ = live.expect("ResolveRoute", pb.ResolveRouteRequest(deployment=parent, routing_key="user-42"))
    assert error is not None
    assert (error.code, error.reason) == (FP, "NO_READY_ENDPOINT"), error


@pytest.mark.parametrize(
    ("paths", "path"),
    [
        pytest.param([], "update_mask", id="empty"),
        pytest.param(["environment"], "update_mask.paths", id="immutable"),
        pytest.param(["traffic.stable.weight_bp"], "update_mask.paths", id="weights"),
        pytest.param(["traffic"], "update_mask.paths", id="whole-table"),
        pytest.param(["\U0001d54f" * 3000], "update_mask.paths", id="huge"),
    ],
)
def test_a_bad_mask_is_refused(live: LiveServer, paths: list[str], path: str) -> None:
    request = pb.UpdateDeploymentRequest(
        deployment=pb.Deployment(name="deployments/web", description="x"),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    error, _ = live.expect("UpdateDeployment", request)
    _refused(error, path)


NUL = "\x00"


def _nul_cases() -> list[Any]:
    rollout = pb.Rollout(
        target_version=QUIET_VERSIONS[1], endpoints=_endpoints("a"), strategy=pb.ROLLOUT_STRATEGY_IMMEDIATE
    )
    return [
        pytest.param(
            "ReportEndpointHealth",
            pb.ReportEndpointHealthRequest(deployment="deployments/web", address=f"10.0.0.1{NUL}"),
            "address",
            id="address",
        ),
        pytest.param(
            "ResolveRoute",
            pb.ResolveRouteRequest(deployment="deployments/web", routing_key=NUL),
            "routing_key",
            id="routing_key",
        ),
        pytest.param(
            "UpdateDeployment",
            pb.UpdateDeploymentRequest(
                deployment=pb.Deployment(name="deployments/web", description=NUL),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
            "deployment.description",
            id="description",
        ),
        pytest.param(
            "UpdateDeployment",
            pb.UpdateDeploymentRequest(
                deployment=pb.Deployment(
                    name="deployments/web",
                    traffic=pb.TrafficTable(stable=pb.SlotTraffic(endpoints=_endpoints(NUL))),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["traffic.stable.endpoints"]),
            ),
            "deployment.traffic.stable.endpoints[0].address",
            id="endpoint-address",
        ),
        pytest.param(
            "UpdateDeployment",
            pb.UpdateDeploymentRequest(
                deployment=pb.Deployment(name="deployments/web", labels={"team": NUL}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            ),
            "deployment.labels['team']",
            id="label",
        ),
        pytest.param(
            "DeleteDeployment",
            pb.DeleteDeploymentRequest(name="deployments/web", etag=NUL),
            "etag",
            id="etag",
        ),
        pytest.param(
            "PromoteRollout",
            pb.PromoteRolloutRequest(name=ROLLOUTS[1], reason=NUL),
            "reason",
            id="reason",
        ),
        pytest.param(
            "AbortRollout",
            pb.AbortRolloutRequest(name=ROLLOUTS[1], request_id=NUL),
            "request_id",
            id="request_id",
        ),
        pytest.param(
            "StartRollout",
            pb.StartRolloutRequest(parent="deployments/web", rollout=_merged_rollout(rollout, reason=NUL)),
            "rollout.reason",
            id="rollout-reason",
        ),
        pytest.param(
            "StartRollout",
            pb.StartRolloutRequest(
                parent="deployments/web",
                rollout=_merged_rollout(rollout, endpoints=[pb.Endpoint(address="a", labels={"zone": NUL})]),
            ),
            "rollout.endpoints[0].labels['zone']",
            id="endpoint-label",
        ),
    ]


def _merged_rollout(rollout: pb.Rollout, **fields: Any) -> pb.Rollout:
    merged = pb.Rollout()
    merged.CopyFrom(rollout)
    for name, value in fields.items():
        if name == "endpoints":
            del merged.endpoints[:]
            merged.endpoints.extend(value)
        else:
            setattr(merged, name, value)
    return merged


@pytest.mark.parametrize(("method_name", "request_", "path"), _nul_cases())
def test_a_nul_character_is_refused_by_field_path(
    live: LiveServer, method_name: str, request_: Message, path: str
) -> None:
    error, _ = live.expect(method_name, request_)
    _refused(error, path)


def test_a_reused_request_id_is_refused(live: LiveServer) -> None:
    parent = _quiet_deployment(live)
    request_id = str(uuid.uuid4())
    first = pb.ReportEndpointHealthRequest(
        deployment=parent, address="10.1.9.1:80", ready=True, request_id=request_id
    )
    assert live.expect("ReportEndpointHealth", first)[0] is None
    assert live.expect("ReportEndpointHealth", first)[0] is None
    other = pb.ReportEndpointHealthRequest(
        deployment=parent, address="10.1.9.2:80", ready=True, request_id=request_id
    )
    error, _ = live.expect("ReportEndpointHealth", other)
    _refused(error, "request_id", "REQUEST_ID_REUSED")


async def _new_quiet_version(live: LiveServer) -> str:
    """A fresh READY version of the quiet model, so that archiving it disturbs no other case."""
    created = await ModelRegistryServiceStub(live.channel).CreateModelVersion(
        _version_request(QUIET_MODEL, f"local:{uuid.uuid4().hex}")
    )
    return str(created.model_version.name)


def _archive(live: LiveServer, version: str) -> None:
    async def archive() -> None:
        await _set_state(live.channel, version, rpb.MODEL_VERSION_STATE_ARCHIVED)

    live.run(archive())


def _blue_green_waiting(live: LiveServer) -> tuple[str, str]:
    """A deployment of the quiet model with a BLUE_GREEN rollout WAITING_READY on a fresh version."""
    version = live.run(_new_quiet_version(live))
    parent = _quiet_deployment(live)
    rollout = pb.Rollout(
        target_version=version, endpoints=_endpoints("10.1.2.1:8000"), strategy=pb.ROLLOUT_STRATEGY_BLUE_GREEN
    )
    error, started = _start(live, parent, rollout)
    assert error is None, error
    assert started is not None
    assert started.rollout.state == pb.ROLLOUT_STATE_WAITING_READY
    return parent, version


# A rollout that succeeds in a call other than PromoteRollout: its target version was archived while the
# rollout waited, so the success fails VERSION_ARCHIVED (named in these RPCs' comments) and nothing changes.
def test_a_health_report_that_would_succeed_an_archived_rollout(live: LiveServer) -> None:
    parent, version = _blue_green_waiting(live)
    _archive(live, version)
    live.expect(
        "ReportEndpointHealth",
        pb.ReportEndpointHealthRequest(deployment=parent, address="10.1.2.1:8000", ready=True),
    )


def test_a_resume_that_would_succeed_an_archived_rollout(live: LiveServer) -> None:
    parent, version = _blue_green_waiting(live)
    name = f"{parent}/rollouts/1"
    assert live.expect("PauseRollout", pb.PauseRolloutRequest(name=name))[0] is None
    health = pb.ReportEndpointHealthRequest(deployment=parent, address="10.1.2.1:8000", ready=True)
    assert live.expect("ReportEndpointHealth", health)[0] is None
    _archive(live, version)
    live.expect("ResumeRollout", pb.ResumeRolloutRequest(name=name))


def test_a_promotion_of_an_archived_version_changes_nothing(live: LiveServer) -> None:
    version = live.run(_new_quiet_version(live))
    parent = _quiet_deployment(live)
    error, started = _start(live, parent, _canary(_pause(1000), version=version))
    assert error is None, error
    assert started is not None
    health = pb.ReportEndpointHealthRequest(deployment=parent, address="10.1.1.1:8000", ready=True)
    assert live.expect("ReportEndpointHealth", health)[0] is None
    _archive(live, version)
    error, before = live.expect("GetDeployment", pb.GetDeploymentRequest(name=parent))
    assert error is None, error
    error, _ = live.expect(
        "PromoteRollout", pb.PromoteRolloutRequest(name=f"{parent}/rollouts/1", to_end=True)
    )
    assert error is not None
    assert (error.code, error.reason) == (FP, "VERSION_ARCHIVED"), error
    error, after = live.expect("GetDeployment", pb.GetDeploymentRequest(name=parent))
    assert error is None, error
    assert before == after
