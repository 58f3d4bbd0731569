"""Random requests to every ModelRegistryService RPC get only documented statuses, with the promised details.

Requests are built from the generated descriptors, so a new RPC or field is fuzzed without a change here:
strings mix resource names, filters, page tokens, unicode and huge text; integers reach the int64 extremes;
enums take unknown numbers. Whatever comes back must be OK or a documented code, never INTERNAL or UNKNOWN;
every error carries ErrorInfo in the "modelplane" domain, and every INVALID_ARGUMENT names its fields.

Hypothesis drives plain (synchronous) tests, so the module owns one event loop and one server on it and runs
each example on that loop; pytest-asyncio's per-test loops never touch the server.
"""

from __future__ import annotations

import functools
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from modelplane.v1 import registry_pb2 as pb
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub
from tests.support import live_server
from tests.support.live_server import MAX_REQUEST_BYTES, Request, check_error, described, start_live_server
from tests.support.proto_strategies import (
    INT64_MAX,
    INT64_MIN,
    SPECIAL_TEXTS,
    ProtoStrategies,
    any_texts,
    filters_over,
    huge_text,
    merged,
    message_class,
    page_tokens_from,
    small_text,
)
from tests.support.rich_errors import RichError

T = TypeVar("T")

SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)

# The codes a registry RPC may answer a well-formed call with when storage is up and the caller may call it,
# each with any reason but an empty one.
DOCUMENTED: dict[grpc.StatusCode, frozenset[str] | None] = dict.fromkeys(
    [
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    ]
)


# ---------------------------------------------------------------------------------------------------------
# Values

# Seeded by the module fixture, so that random names often hit real resources.
MODEL_IDS = ["chat", "embed"]
EXISTING_NAMES = [
    "models/chat",
    "models/embed",
    "models/-",
    "models/chat/versions/1",
    "models/chat/versions/2",
    "models/embed/versions/1",
    "models/chat/aliases/prod",
    "models/chat/aliases/staging",
]
# A model the random requests never name (their ids are at most 21 characters or come from the lists above).
QUIET_ID = "quiet-model-for-fixed-cases-only"
QUIET = f"models/{QUIET_ID}"
# Page tokens from real list calls at seed time; a token from one list sent to another must fail cleanly.
REAL_PAGE_TOKENS: list[str] = []

# Without the byte-order mark among the specials, unlike the other services' strings: other specials would
# draw other examples in the repeatable run.
any_text = any_texts(SPECIAL_TEXTS[:-1])

ids = st.one_of(
    st.sampled_from([*MODEL_IDS, "missing", "prod", "staging", "a", "-"]),
    st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
)
version_numbers = st.one_of(
    st.integers(-3, 5).map(str),
    st.sampled_from([str(INT64_MAX), str(INT64_MIN), str(2**64), "01", "+1", "1.0", "one", ""]),
)
resource_names = st.one_of(
    st.sampled_from(EXISTING_NAMES),
    st.builds("models/{}".format, ids),
    st.builds("models/{}/versions/{}".format, ids, version_numbers),
    st.builds("models/{}/aliases/{}".format, ids, ids),
    st.builds("{}/{}".format, st.sampled_from(EXISTING_NAMES), any_text),
    any_text,
)

FILTER_FIELDS = [
    "name",
    "display_name",
    "provider",
    "labels",
    "labels.team",
    "labels.-",
    "create_time",
    "update_time",
    "model",
    "state",
    "capabilities",
    "alias",
    "context_window",
    "max_output_tokens",
    "input_price",
    "output_price",
    "version_id",
    "unknown",
    "labels.team.x",
    "",
]
FILTER_VALUES = [
    '"openai"',
    "openai",
    "READY",
    "ready",
    "CAPABILITY_TOOL_USE",
    "tool_use",
    "bogus",
    "*",
    "42",
    "-1",
    "0",
    str(INT64_MAX),
    str(INT64_MIN),
    str(2**63),
    str(-(2**63) - 1),
    "1e9",
    '"2025-01-01T00:00:00Z"',
    '"2025-13-40T99:00:00Z"',
    '"not a time"',
    '"models/chat*"',
    '"models/*"',
    "'single'",
    '"a\\"b"',
    '"unterminated',
    "AND",
    "OR",
    "NOT",
    '""',
    "()",
]
filters = filters_over(
    FILTER_FIELDS,
    FILTER_VALUES,
    nested='provider = "openai"',
    malformed=["", "(", ")", "AND", "NOT", "a =", "= b", "labels.", "x" * 2001, "(" * 5000],
    any_text=any_text,
)
page_tokens = page_tokens_from(REAL_PAGE_TOKENS, any_text=any_text, unpadded=True)
order_bys = st.one_of(
    st.builds(
        "{}{}".format,
        st.sampled_from(
            ["name", "create_time", "update_time", "version_id", "context_window", "output_price", "x"]
        ),
        st.sampled_from(["", " desc", " asc", " DESC", "  desc", " desc desc", ","]),
    ),
    any_text,
)
hex_digests = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64), st.text("0123456789ABCDEFabcdefg", max_size=70)
)
currencies = st.one_of(st.sampled_from(["USD", "EUR", "usd", "US", "USDD", "XXX", ""]), small_text)
label_keys = st.one_of(
    st.sampled_from(["team", "tier", "a", "-", "_", "Team", "", "x" * 64]), small_text, huge_text
)
request_ids = st.one_of(st.just(""), st.uuids().map(str), st.sampled_from(["repeat-1", "repeat-2"]), any_text)

# String fields by name: the values that reach deep into the service, mixed with anything at all.
TEXT_BY_FIELD: dict[str, st.SearchStrategy[str]] = {
    "name": resource_names,
    "parent": resource_names,
    "version": resource_names,
    "expected_version": resource_names,
    "parent_version": resource_names,
    "latest_version": resource_names,
    "model": resource_names,
    "alias": st.one_of(resource_names, ids),
    "model_id": st.one_of(ids, any_text),
    "filter": filters,
    "page_token": page_tokens,
    "order_by": order_bys,
    "source_sha256": hex_digests,
    "currency_code": currencies,
    "request_id": request_ids,
    "provider": st.one_of(st.sampled_from(["openai", "local", "anthropic", "OpenAI", ""]), any_text),
    "source_uri": st.one_of(st.sampled_from(["openai:gpt-4o", "s3://models/chat/7", ""]), any_text),
    "etag": st.one_of(st.sampled_from(["", '"1"', "W/x"]), any_text),
}

proto = ProtoStrategies(
    text_by_field=TEXT_BY_FIELD,
    any_text=any_text,
    int_edges=(0, 1, -1, 2, 50, 1000, 1001, 4096, 128_000),
    near_zero_max=300_000,
    map_keys=label_keys,
    mask_paths=[
        "*",
        "",
        "name",
        "etag",
        "labels",
        "labels.team",
        "pricing",
        "pricing.currency_code",
        "x.y",
        "*.*",
    ],
)


def _version(uri: str, window: int, output_price: int, **kwargs: Any) -> pb.ModelVersion:
    return pb.ModelVersion(
        source_uri=uri,
        context_window=window,
        max_output_tokens=min(4096, window),
        capabilities=[pb.CAPABILITY_CHAT, pb.CAPABILITY_TOOL_USE],
        pricing=pb.TokenPricing(
            currency_code="USD", input_micros_per_million=1_000_000, output_micros_per_million=output_price
        ),
        **kwargs,
    )


def _valid_version() -> pb.ModelVersion:
    return _version("openai:fuzz", 32_000, 7, description="fuzzed", labels={"team": "fuzz"})


# A valid request of each RPC against the seeded resources. Most fully random requests fail validation on
# their first field, so half of the examples start from one of these and change at most two fields (at
# each nesting level), which takes them past validation into the store.
VALID_REQUESTS: dict[str, st.SearchStrategy[Message]] = {
    "CreateModel": st.builds(
        lambda model_id: pb.CreateModelRequest(model_id=model_id, model=pb.Model(provider="openai")),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"),
    ),
    "GetModel": st.just(pb.GetModelRequest(name="models/chat")),
    "ListModels": st.just(pb.ListModelsRequest(page_size=1, filter='provider = "openai"')),
    "UpdateModel": st.just(
        pb.UpdateModelRequest(
            model=pb.Model(name="models/chat", display_name="Chat", labels={"team": "search"}),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    ),
    "DeleteModel": st.just(pb.DeleteModelRequest(name="models/embed")),
    "CreateModelVersion": st.just(
        pb.CreateModelVersionRequest(parent="models/chat", model_version=_valid_version())
    ),
    "GetModelVersion": st.just(pb.GetModelVersionRequest(name="models/chat/versions/1")),
    "ListModelVersions": st.just(
        pb.ListModelVersionsRequest(parent="models/-", page_size=2, filter="capabilities:tool_use")
    ),
    "UpdateModelVersion": st.just(
        pb.UpdateModelVersionRequest(
            model_version=pb.ModelVersion(name="models/chat/versions/2", description="big"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    ),
    "DeleteModelVersion": st.just(pb.DeleteModelVersionRequest(name="models/chat/versions/1")),
    "SetAlias": st.just(
        pb.SetAliasRequest(name="models/chat/aliases/prod", version="models/chat/versions/1", reason="fuzz")
    ),
    "GetAlias": st.just(pb.GetAliasRequest(name="models/chat/aliases/prod")),
    "ListAliases": st.just(pb.ListAliasesRequest(parent="models/chat", page_size=1)),
    "DeleteAlias": st.just(pb.DeleteAliasRequest(name="models/chat/aliases/staging")),
    "ListAliasHistory": st.just(pb.ListAliasHistoryRequest(parent="models/chat", alias="prod")),
    "ResolveModel": st.just(
        pb.ResolveModelRequest(
            constraints=pb.ModelConstraints(
                provider="openai", required_capabilities=[pb.CAPABILITY_CHAT], min_context_window=1000
            )
        )
    ),
    "WatchModels": st.just(pb.WatchModelsRequest(start_revision=1)),
}


@functools.cache
def requests_of(method: MethodDescriptor) -> st.SearchStrategy[Message]:
    """Fully random requests, and valid ones with a few fields changed to random values."""

    def define() -> st.SearchStrategy[Message]:
        base = VALID_REQUESTS.get(method.name, st.just(message_class(method.input_type)()))
        near_valid = st.builds(merged, base, proto.messages(method.input_type, sparse=True))
        return st.one_of(proto.messages(method.input_type), near_valid)

    return st.deferred(define)


# ---------------------------------------------------------------------------------------------------------
# The server


@dataclass
class LiveServer:
    """The module's server; a call answers its error alone, as no registry check reads a response."""

    base: live_server.LiveServer

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.base.run(coroutine)

    async def call(self, method: MethodDescriptor, request: Message) -> RichError | None:
        """None when the call succeeds (the first message, for a stream); the rich error otherwise."""
        error, _ = await self.base.call(method, request)
        return error


async def _seed(channel: grpc.aio.Channel) -> list[str]:
    """The resources of EXISTING_NAMES, and page tokens from each list RPC."""
    stub = ModelRegistryServiceStub(channel)
    await stub.CreateModel(
        pb.CreateModelRequest(model_id="chat", model=pb.Model(provider="openai", labels={"team": "search"}))
    )
    await stub.CreateModel(pb.CreateModelRequest(model_id="embed", model=pb.Model(provider="local")))
    await stub.CreateModelVersion(
        pb.CreateModelVersionRequest(parent="models/chat", model_version=_version("openai:a", 8192, 5))
    )
    await stub.CreateModelVersion(
        pb.CreateModelVersionRequest(
            parent="models/chat", model_version=_version("openai:b", 128_000, 9, labels={"tier": "big"})
        )
    )
    await stub.CreateModelVersion(
        pb.CreateModelVersionRequest(parent="models/embed", model_version=_version("s3://e/1", 512, 1))
    )
    await stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version="models/chat/versions/1"))
    await stub.SetAlias(
        pb.SetAliasRequest(name="models/chat/aliases/staging", version="models/chat/versions/2")
    )
    await stub.SetAlias(
        pb.SetAliasRequest(name="models/chat/aliases/staging", version="models/chat/versions/1")
    )
    # QUIET is for the fixed cases below; no random name reaches it, so the fuzzing cannot change it.
    await stub.CreateModel(pb.CreateModelRequest(model_id=QUIET_ID, model=pb.Model(provider="local")))
    await stub.CreateModelVersion(
        pb.CreateModelVersionRequest(parent=QUIET, model_version=_version("s3://q/1", 512, 1))
    )
    await stub.SetAlias(pb.SetAliasRequest(name=f"{QUIET}/aliases/prod", version=f"{QUIET}/versions/1"))
    tokens = [
        (await stub.ListModels(pb.ListModelsRequest(page_size=1))).next_page_token,
        (
            await stub.ListModels(pb.ListModelsRequest(page_size=1, order_by="create_time desc"))
        ).next_page_token,
        (
            await stub.ListModelVersions(pb.ListModelVersionsRequest(parent="models/-", page_size=1))
        ).next_page_token,
        (
            await stub.ListModelVersions(pb.ListModelVersionsRequest(parent="models/chat", page_size=1))
        ).next_page_token,
        (await stub.ListAliases(pb.ListAliasesRequest(parent="models/chat", page_size=1))).next_page_token,
        (
            await stub.ListAliasHistory(pb.ListAliasHistoryRequest(parent="models/chat", page_size=1))
        ).next_page_token,
    ]
    assert all(tokens), tokens
    return tokens


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[LiveServer]:
    """One seeded server for the module on a loop of its own, so that hypothesis examples can share it."""
    with start_live_server(
        admin_url,
        template_database,
        SERVICE,
        lambda method, request, error, _: check_outcome(method, request, error),
    ) as base:
        REAL_PAGE_TOKENS[:] = base.run(_seed(base.channel))
        yield LiveServer(base)


# ---------------------------------------------------------------------------------------------------------
# The property


def check_outcome(method: MethodDescriptor, request: Request, error: RichError | None) -> None:
    if error is None:
        return
    check_error(error, described(method, request), DOCUMENTED)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(data=st.data())
def test_only_documented_statuses(live: LiveServer, method: MethodDescriptor, data: st.DataObject) -> None:
    request = data.draw(requests_of(method), label="request")
    assume(request.ByteSize() < MAX_REQUEST_BYTES)
    error = live.run(live.call(method, request))
    # Shown by --hypothesis-show-statistics: how deep the random requests get.
    event("OK" if error is None else f"{error.code.name} {error.reason}")
    check_outcome(method, request, error)


def test_the_seeded_tokens_are_real(live: LiveServer) -> None:
    # The fuzzer mixes these in; they must be tokens the server itself made.
    assert len(REAL_PAGE_TOKENS) == 6
    assert (
        live.run(
            live.call(
                SERVICE.methods_by_name["ListModels"], pb.ListModelsRequest(page_token=REAL_PAGE_TOKENS[0])
            )
        )
        is None
    )


WIDE = "\U0001d54f"  # 4 bytes in UTF-8, 12 characters in a percent-encoded grpc-message

# A huge bad value in fields that errors quote, each answered to a client with default limits.
TRAILER_CASES = [
    pytest.param("GetModel", pb.GetModelRequest(name="m" * 60_000), id="get_model.name"),
    pytest.param(
        "CreateModel",
        pb.CreateModelRequest(model_id=WIDE * 5000, model=pb.Model(provider="openai")),
        id="create_model.model_id",
    ),
    pytest.param(
        "ListModels",
        pb.ListModelsRequest(filter=WIDE * 1999),
        id="list_models.filter",
    ),
    pytest.param("ListModels", pb.ListModelsRequest(order_by=WIDE * 3000), id="list_models.order_by"),
    pytest.param(
        "ListModelVersions",
        pb.ListModelVersionsRequest(parent="models/-", order_by=WIDE * 3000),
        id="list_model_versions.order_by",
    ),
    pytest.param(
        "CreateModel",
        pb.CreateModelRequest(model_id="wide", model=pb.Model(provider="openai", labels={WIDE * 5000: "x"})),
        id="model.labels.key",
    ),
    pytest.param(
        "CreateModel",
        pb.CreateModelRequest(
            model_id="wide",
            model=pb.Model(provider="openai", labels={f"{WIDE * 500}{i}": "x" for i in range(30)}),
        ),
        id="model.labels.many_keys",
    ),
    pytest.param(
        "UpdateModel",
        pb.UpdateModelRequest(
            model=pb.Model(name=QUIET), update_mask=field_mask_pb2.FieldMask(paths=[WIDE * 5000])
        ),
        id="update_model.update_mask",
    ),
    pytest.param(
        "ResolveModel",
        pb.ResolveModelRequest(constraints=pb.ModelConstraints(labels={"team": "\x1f" * 3000})),
        id="constraints.labels",
    ),
    pytest.param(
        "ResolveModel",
        pb.ResolveModelRequest(constraints=pb.ModelConstraints(provider=WIDE * 3000)),
        id="constraints.provider",
    ),
]


@pytest.mark.parametrize(("method_name", "request_"), TRAILER_CASES)
def test_a_huge_bad_value_fits_a_default_client(
    live: LiveServer, method_name: str, request_: Message
) -> None:
    method = SERVICE.methods_by_name[method_name]

    async def call_with_default_limits() -> RichError | None:
        async with grpc.aio.insecure_channel(live.base.server.target) as channel:
            return await LiveServer(replace(live.base, channel=channel)).call(method, request_)

    error = live.run(call_with_default_limits())
    check_outcome(method, request_, error)
    assert error is not None
    assert len(error.message) <= 1000


NUL = "\x00"


def _quiet_version(**kwargs: Any) -> pb.CreateModelVersionRequest:
    return pb.CreateModelVersionRequest(parent=QUIET, model_version=_version(**kwargs))


def _quiet_description(description: str, etag: str = "") -> pb.UpdateModelVersionRequest:
    return pb.UpdateModelVersionRequest(
        model_version=pb.ModelVersion(name=f"{QUIET}/versions/1", description=description, etag=etag),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )


# A NUL character in each kind of string field, one at a time, with the path the refusal must name. Before
# the server refused NUL up front, most of these reached Postgres and ended INTERNAL.
NUL_CASES: list[tuple[str, Message, str]] = [
    (
        "CreateModel",
        pb.CreateModelRequest(model_id="nul-a", model=pb.Model(provider="openai", display_name=NUL)),
        "model.display_name",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model_id="nul-b", model=pb.Model(provider="openai", description=NUL)),
        "model.description",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model_id="nul-c", model=pb.Model(provider="openai", labels={"team": NUL})),
        "model.labels['team']",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model_id="nul-d", model=pb.Model(provider=f"open{NUL}")),
        "model.provider",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model_id="nul-e", model=pb.Model(provider="openai"), request_id=NUL),
        "request_id",
    ),
    ("GetModel", pb.GetModelRequest(name=QUIET + NUL), "name"),
    ("ListModels", pb.ListModelsRequest(filter=f'display_name = "{NUL}"'), "filter"),
    ("ListModels", pb.ListModelsRequest(page_token=NUL), "page_token"),
    ("ListModels", pb.ListModelsRequest(order_by=NUL), "order_by"),
    (
        "ListModelVersions",
        pb.ListModelVersionsRequest(parent="models/-", filter=f'alias = "{NUL}"'),
        "filter",
    ),
    (
        "UpdateModel",
        pb.UpdateModelRequest(
            model=pb.Model(name=QUIET, etag=NUL, display_name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        "model.etag",
    ),
    (
        "UpdateModel",
        pb.UpdateModelRequest(model=pb.Model(name=QUIET), update_mask=field_mask_pb2.FieldMask(paths=[NUL])),
        "update_mask.paths[0]",
    ),
    ("DeleteModel", pb.DeleteModelRequest(name=QUIET, etag=NUL), "etag"),
    (
        "CreateModelVersion",
        _quiet_version(uri=f"s3://{NUL}", window=512, output_price=1),
        "model_version.source_uri",
    ),
    (
        "CreateModelVersion",
        _quiet_version(uri="s3://q/2", window=512, output_price=1, description=NUL),
        "model_version.description",
    ),
    (
        "CreateModelVersion",
        _quiet_version(uri="s3://q/2", window=512, output_price=1, lineage=pb.Lineage(source_run=NUL)),
        "model_version.lineage.source_run",
    ),
    (
        "CreateModelVersion",
        _quiet_version(uri="s3://q/2", window=512, output_price=1, labels={"a": NUL}),
        "model_version.labels['a']",
    ),
    ("UpdateModelVersion", _quiet_description(NUL), "model_version.description"),
    ("UpdateModelVersion", _quiet_description("x", etag=NUL), "model_version.etag"),
    (
        "DeleteModelVersion",
        pb.DeleteModelVersionRequest(name=f"{QUIET}/versions/1", request_id=NUL),
        "request_id",
    ),
    (
        "SetAlias",
        pb.SetAliasRequest(name=f"{QUIET}/aliases/prod", version=f"{QUIET}/versions/1", reason=NUL),
        "reason",
    ),
    (
        "SetAlias",
        pb.SetAliasRequest(name=f"{QUIET}/aliases/prod", version=f"{QUIET}/versions/1", expected_version=NUL),
        "expected_version",
    ),
    (
        "DeleteAlias",
        pb.DeleteAliasRequest(name=f"{QUIET}/aliases/prod", expected_version=NUL),
        "expected_version",
    ),
    ("DeleteAlias", pb.DeleteAliasRequest(name=f"{QUIET}/aliases/prod", reason=NUL), "reason"),
    ("ListAliasHistory", pb.ListAliasHistoryRequest(parent=QUIET, alias=NUL), "alias"),
    ("ResolveModel", pb.ResolveModelRequest(alias=f"{QUIET}/aliases/prod{NUL}"), "alias"),
    (
        "ResolveModel",
        pb.ResolveModelRequest(constraints=pb.ModelConstraints(provider=NUL)),
        "constraints.provider",
    ),
    (
        "ResolveModel",
        pb.ResolveModelRequest(constraints=pb.ModelConstraints(labels={"team": NUL})),
        "constraints.labels['team']",
    ),
]


@pytest.mark.parametrize(
    ("method_name", "request_", "path"), NUL_CASES, ids=[f"{case[0]}-{case[2]}" for case in NUL_CASES]
)
def test_a_nul_character_is_refused_by_field_path(
    live: LiveServer, method_name: str, request_: Message, path: str
) -> None:
    method = SERVICE.methods_by_name[method_name]
    error = live.run(live.call(method, request_))
    check_outcome(method, request_, error)
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert path in error.field_paths
