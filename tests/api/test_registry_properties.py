"""Random requests to every ModelRegistryService RPC get only documented statuses, with the promised details.

Requests are built from the generated descriptors, so a new RPC or field is fuzzed without a change here:
strings mix resource names, filters, page tokens, unicode and huge text; integers reach the int64 extremes;
enums take unknown numbers. Whatever comes back must be OK or a documented code, never INTERNAL or UNKNOWN;
every error carries ErrorInfo in the "modelplane" domain, and every INVALID_ARGUMENT names its fields.

Hypothesis drives plain (synchronous) tests, so the module owns one event loop and one server on it and runs
each example on that loop; pytest-asyncio's per-test loops never touch the server.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import string
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from modelplane.server.app import ModelplaneServer, build_server
from modelplane.server.auth.roles import method_path
from modelplane.server.config import ServerConfig
from modelplane.server.store.urls import with_database
from modelplane.v1 import registry_pb2 as pb
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub
from tests.support.rich_errors import RichError, rich

T = TypeVar("T")

SERVICE = pb.DESCRIPTOR.services_by_name["ModelRegistryService"]
METHODS: list[MethodDescriptor] = list(SERVICE.methods)

# The codes a registry RPC may answer a well-formed call with when storage is up and the caller may call it.
DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

# Bounds one call so that a hang fails the example instead of the whole run; not a performance bound.
CALL_TIMEOUT = 20.0
# Requests stay below the server's 4 MiB receive limit: RESOURCE_EXHAUSTED from gRPC itself is not the
# registry's answer.
MAX_REQUEST_BYTES = 3_000_000


# ---------------------------------------------------------------------------------------------------------
# Values

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

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

# Everything but lone surrogates, which a protobuf string cannot hold. NUL is in: Postgres text cannot hold
# it, so it must be refused by field path before it gets there.
UNICODE = st.characters(exclude_categories=["Cs"])

small_text = st.text(UNICODE, max_size=40)
ascii_text = st.text(string.printable, max_size=40)
huge_text = st.builds(lambda char, count: char * count, UNICODE, st.integers(1_000, 120_000))
special_text = st.sampled_from(
    ["", " ", "\t", "\x00", "*", "-", "/", "%", "_", "'", '"', "\\", "é", "\U0001d54f", "\u202e"]
)
any_text = st.one_of(small_text, ascii_text, special_text, huge_text)

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
FILTER_OPERATORS = ["=", "!=", "<", "<=", ">", ">=", ":", "==", "~"]
FILTER_VALUES = st.one_of(
    st.sampled_from(
        [
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
    ),
    st.builds(lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"', small_text),
    st.integers(INT64_MIN - 10, INT64_MAX + 10).map(str),
)
comparisons = st.builds(
    "{}{}{}{}{}".format,
    st.sampled_from(FILTER_FIELDS),
    st.sampled_from(["", " "]),
    st.sampled_from(FILTER_OPERATORS),
    st.sampled_from(["", " "]),
    FILTER_VALUES,
)
filter_expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds("({})".format, inner),
        st.builds("{} AND {}".format, inner, inner),
        st.builds("{} OR {}".format, inner, inner),
        st.builds("{} {}".format, inner, inner),
        st.builds("NOT {}".format, inner),
        st.builds("-{}".format, inner),
    ),
    max_leaves=8,
)
filters = st.one_of(
    filter_expressions,
    st.integers(1, 60).map(lambda depth: "(" * depth + 'provider = "openai"' + ")" * depth),
    st.sampled_from(["", "(", ")", "AND", "NOT", "a =", "= b", "labels.", "x" * 2001, "(" * 5000]),
    any_text,
)


def _mutated(token: str, position: int, char: str) -> str:
    if not token:
        return char
    index = position % len(token)
    return token[:index] + char + token[index + 1 :]


# Deferred: the real tokens exist only once the module's server has been seeded.
page_tokens = st.one_of(
    st.deferred(lambda: st.sampled_from(REAL_PAGE_TOKENS or [""])),
    st.builds(
        _mutated,
        st.deferred(lambda: st.sampled_from(REAL_PAGE_TOKENS or ["x"])),
        st.integers(0, 500),
        st.sampled_from(list("AZaz09-_=+/.")),
    ),
    st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),
    st.sampled_from(["e30", "bnVsbA", "W10", "MQ", "eyJ2IjogOTl9"]),  # {}, null, [], 1, {"v": 99}
    any_text,
)
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


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [
        value
        for value in (0, 1, -1, 2, 50, 1000, 1001, 4096, 128_000, low, high, low + 1, high - 1)
        if low <= value <= high
    ]
    return st.one_of(
        st.sampled_from(edges), st.integers(low, high), st.integers(max(low, -10), min(high, 300_000))
    )


INTS: dict[int, st.SearchStrategy[int]] = {
    FieldDescriptor.TYPE_INT64: _ints(INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SINT64: _ints(INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SFIXED64: _ints(INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_INT32: _ints(INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SINT32: _ints(INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SFIXED32: _ints(INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_UINT32: _ints(0, UINT32_MAX),
    FieldDescriptor.TYPE_FIXED32: _ints(0, UINT32_MAX),
    FieldDescriptor.TYPE_UINT64: _ints(0, UINT64_MAX),
    FieldDescriptor.TYPE_FIXED64: _ints(0, UINT64_MAX),
}


def _mask_paths(target: Descriptor | None) -> st.SearchStrategy[list[str]]:
    known = [
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
    ]
    if target is not None:
        known += [field.name for field in target.fields]
    return st.lists(st.one_of(st.sampled_from(known), small_text), max_size=5)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return TEXT_BY_FIELD.get(field.name, any_text)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=100)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None, field.full_name
        known = [value.number for value in field.enum_type.values]
        # Open enums carry any int32 on the wire; a number no version of the contract knows must be refused.
        return st.one_of(st.sampled_from(known), st.integers(INT32_MIN, INT32_MAX))
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    return INTS[field.type]


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and _message_type(field).GetOptions().map_entry


def _field_value(
    field: FieldDescriptor, owner: Descriptor, depth: int, sparse: bool
) -> st.SearchStrategy[Any]:
    if _is_map(field):
        key_field = _message_type(field).fields_by_name["key"]
        value_field = _message_type(field).fields_by_name["value"]
        keys = label_keys if key_field.type == FieldDescriptor.TYPE_STRING else _scalar(key_field)
        return st.dictionaries(keys, _single_value(value_field, owner, depth, sparse), max_size=4)
    if field.is_repeated:
        return st.lists(_single_value(field, owner, depth, sparse), max_size=4)
    return _single_value(field, owner, depth, sparse)


def _single_value(
    field: FieldDescriptor, owner: Descriptor, depth: int, sparse: bool
) -> st.SearchStrategy[Any]:
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar(field)
    if _message_type(field).full_name == field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
        # A mask names fields of the resource it updates: the message-typed field beside it.
        targets = [
            _message_type(f)
            for f in owner.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE and f is not field
        ]
        return _mask_paths(targets[0] if targets else None).map(
            lambda paths: field_mask_pb2.FieldMask(paths=paths)
        )
    return messages(_message_type(field), depth + 1, sparse=sparse)


def _build(descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message_class: type[Message] = _message_class(descriptor)
    message = message_class()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            if _message_type(field).fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    target[key].CopyFrom(item)
            else:
                target.update(value)
        elif field.is_repeated:
            target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            # Setting one member of a oneof clears the others: the last one drawn wins.
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


MAX_DEPTH = 3


def messages(descriptor: Descriptor, depth: int = 0, *, sparse: bool = False) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with random values in any subset of their fields, or in at most two."""
    if depth > MAX_DEPTH:
        return st.just(_message_class(descriptor)())
    if sparse:
        return (
            st.lists(st.sampled_from([field.name for field in descriptor.fields]), unique=True, max_size=2)
            .flatmap(
                lambda names: st.fixed_dictionaries(
                    {
                        name: _field_value(descriptor.fields_by_name[name], descriptor, depth, sparse)
                        for name in names
                    }
                )
            )
            .map(lambda values: _build(descriptor, values))
        )
    fields = {field.name: _field_value(field, descriptor, depth, sparse) for field in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(descriptor, values))


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


def _merged(base: Message, change: Message) -> Message:
    merged = type(base)()
    merged.CopyFrom(base)
    merged.MergeFrom(change)
    return merged


@functools.cache
def requests_of(method: MethodDescriptor) -> st.SearchStrategy[Message]:
    """Fully random requests, and valid ones with a few fields changed to random values."""

    def define() -> st.SearchStrategy[Message]:
        base = VALID_REQUESTS.get(method.name, st.just(_message_class(method.input_type)()))
        near_valid = st.builds(_merged, base, messages(method.input_type, sparse=True))
        return st.one_of(messages(method.input_type), near_valid)

    return st.deferred(define)


# ---------------------------------------------------------------------------------------------------------
# The server


@dataclass
class LiveServer:
    """A server with auth off on the module's own event loop, and a channel to it."""

    loop: asyncio.AbstractEventLoop
    server: ModelplaneServer
    channel: grpc.aio.Channel

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    async def call(self, method: MethodDescriptor, request: Message) -> RichError | None:
        """None when the call succeeds (the first message, for a stream); the rich error otherwise."""
        output_class = _message_class(method.output_type)
        path = method_path(SERVICE, method.name)
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(request, timeout=CALL_TIMEOUT)
                try:
                    await stream.read()
                finally:
                    stream.cancel()
            else:
                await self.channel.unary_unary(
                    path, request_serializer=_serialize, response_deserializer=output_class.FromString
                )(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return rich(error)
        return None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


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


async def _start(admin_url: str, template: str) -> tuple[str, ModelplaneServer, grpc.aio.Channel]:
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    server = build_server(
        ServerConfig(
            address="127.0.0.1:0",
            database_url=with_database(admin_url, name),
            auth=False,
            health_probe_interval=0.1,
            shutdown_grace=1.0,
            watch_progress_interval=0.2,
        )
    )
    await server.start()
    await server.wait_serving(timeout=30)
    return name, server, grpc.aio.insecure_channel(server.target)


async def _stop(admin_url: str, name: str, server: ModelplaneServer, channel: grpc.aio.Channel) -> None:
    await channel.close(grace=None)
    await server.stop(grace=0)
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def live(admin_url: str, template_database: str) -> Iterator[LiveServer]:
    """One seeded server for the module on a loop of its own, so that hypothesis examples can share it."""
    loop = asyncio.new_event_loop()
    try:
        name, server, channel = loop.run_until_complete(_start(admin_url, template_database))
        try:
            REAL_PAGE_TOKENS[:] = loop.run_until_complete(_seed(channel))
            yield LiveServer(loop, server, channel)
        finally:
            loop.run_until_complete(_stop(admin_url, name, server, channel))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---------------------------------------------------------------------------------------------------------
# The property


def check_outcome(method: MethodDescriptor, request: Message, error: RichError | None) -> None:
    if error is None:
        return
    where = f"{method.name}({request!r:.2000})"
    assert error.code in DOCUMENTED, f"{error.code.name} from {where}: {error.message}"
    assert error.domain == "modelplane", (
        f"no ErrorInfo in the modelplane domain on {error.code.name} from {where}"
    )
    assert error.reason, f"an empty ErrorInfo.reason on {error.code.name} from {where}"
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert error.field_paths, f"INVALID_ARGUMENT without field violations from {where}: {error.message}"
        assert all(path.strip() for path in error.field_paths), f"an empty field path from {where}: {error}"


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
        async with grpc.aio.insecure_channel(live.server.target) as channel:
            return await LiveServer(live.loop, live.server, channel).call(method, request_)

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
