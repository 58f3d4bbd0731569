"""The registry client over real gRPC: against a scripted server on loopback for what the real server cannot
be made to do on demand (UNAVAILABLE, a broken watch), and against the modelplane server itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, cast

import asyncpg
import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.client import NO_RETRY, ModelRegistryClient, RetryPolicy, connect, errors
from modelplane.client.errors import ShuttingDown, TokenMissing
from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from modelplane.v1 import registry_pb2, registry_pb2_grpc

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)


def _rich_abort_metadata(code: grpc.StatusCode, message: str, details: list[Message]) -> tuple[Any, ...]:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=packed))
    return tuple(status.trailing_metadata)


def _shutting_down() -> tuple[Any, ...]:
    return _rich_abort_metadata(
        grpc.StatusCode.UNAVAILABLE,
        "server shutting down",
        [
            error_details_pb2.ErrorInfo(reason="SHUTTING_DOWN", domain="modelplane"),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=10_000_000)),
        ],
    )


class ScriptedRegistry(registry_pb2_grpc.ModelRegistryServiceServicer):
    """A registry that fails on demand and records what the client sent."""

    def __init__(self) -> None:
        self.unavailable_before_success = 0
        self.calls = 0
        self.request_ids: list[str] = []
        self.authorization: list[str | None] = []
        self.deadlines: list[float | None] = []
        self.watch_starts: list[int] = []

    async def _maybe_fail(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls += 1
        metadata = dict(context.invocation_metadata() or ())
        value = metadata.get("authorization")
        self.authorization.append(value if isinstance(value, str) else None)
        self.deadlines.append(context.time_remaining())
        if self.unavailable_before_success > 0:
            self.unavailable_before_success -= 1
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "server shutting down", trailing_metadata=_shutting_down()
            )

    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.GetModelResponse:
        await self._maybe_fail(context)
        if request.name != "models/chat":
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no token",
                trailing_metadata=_rich_abort_metadata(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "no token",
                    [error_details_pb2.ErrorInfo(reason="TOKEN_MISSING", domain="modelplane")],
                ),
            )
        return registry_pb2.GetModelResponse(model=registry_pb2.Model(name=request.name, provider="openai"))

    async def CreateModel(
        self, request: registry_pb2.CreateModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.CreateModelResponse:
        self.request_ids.append(request.request_id)
        await self._maybe_fail(context)
        model = registry_pb2.Model(name=f"models/{request.model_id}", provider=request.model.provider)
        return registry_pb2.CreateModelResponse(model=model)

    async def WatchModels(
        self, request: registry_pb2.WatchModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[registry_pb2.WatchModelsResponse]:
        self.watch_starts.append(request.start_revision)
        first_stream = len(self.watch_starts) == 1
        # start_revision is inclusive; 0 (from now) stands for revision 1 here.
        first = max(request.start_revision, 1)
        for revision in range(first, first + 2):
            yield registry_pb2.WatchModelsResponse(
                change=registry_pb2.ModelChange(
                    revision=revision, kind=registry_pb2.CHANGE_KIND_CREATED, resource=f"models/m{revision}"
                )
            )
        if first_stream:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "server shutting down", trailing_metadata=_shutting_down()
            )


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedRegistry, str]]:
    # Methods it leaves out answer UNIMPLEMENTED, as the generated base class does.
    servicer = ScriptedRegistry()  # type: ignore[abstract]
    server = grpc.aio.server()
    registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_read_is_retried_on_unavailable(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    servicer.unavailable_before_success = 2
    async with connect(target, retry=FAST_RETRY) as connection:
        model = await connection.registry.get_model(name="models/chat")

    assert model.name == "models/chat"
    assert servicer.calls == 3


async def test_retries_stop_at_max_attempts(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    servicer.unavailable_before_success = 10
    async with connect(target, retry=FAST_RETRY) as connection:
        with pytest.raises(ShuttingDown) as caught:
            await connection.registry.get_model(name="models/chat")

    assert servicer.calls == FAST_RETRY.max_attempts
    assert caught.value.retry_after == pytest.approx(0.01)


async def test_no_retry_policy_makes_one_attempt(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    servicer.unavailable_before_success = 1
    async with connect(target, retry=NO_RETRY) as connection:
        with pytest.raises(ShuttingDown):
            await connection.registry.get_model(name="models/chat")

    assert servicer.calls == 1


async def test_mutation_retries_carry_one_generated_request_id(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    servicer, target = scripted
    servicer.unavailable_before_success = 2
    async with connect(target, retry=FAST_RETRY) as connection:
        model = await connection.registry.create_model(
            model_id="chat", model=registry_pb2.Model(provider="openai")
        )

    assert model.name == "models/chat"
    assert len(servicer.request_ids) == 3
    assert len(set(servicer.request_ids)) == 1
    assert uuid.UUID(servicer.request_ids[0]).version == 4


async def test_caller_request_id_is_sent_as_given(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    async with connect(target) as connection:
        await connection.registry.create_model(
            model_id="chat", model=registry_pb2.Model(provider="openai"), request_id="deploy-42"
        )
        await connection.registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))

    assert servicer.request_ids[0] == "deploy-42"
    assert servicer.request_ids[1] not in ("", "deploy-42")


async def test_token_travels_as_bearer_metadata(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    async with connect(target, token="s3cret") as connection:
        await connection.registry.get_model(name="models/chat")
    async with connect(target) as connection:
        await connection.registry.get_model(name="models/chat")

    assert servicer.authorization == ["Bearer s3cret", None]


async def test_every_call_has_a_deadline(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    async with connect(target, timeout=60.0) as connection:
        await connection.registry.get_model(name="models/chat")
        await connection.registry.get_model(name="models/chat", timeout=2.0)

    # Only which deadline was sent is checked (60 s from the connection, 2 s from the call), not its slack.
    default, overridden = servicer.deadlines
    assert default is not None
    assert overridden is not None
    assert default > 30.0
    assert overridden < 30.0


async def test_errors_arrive_as_reason_classes(scripted: tuple[ScriptedRegistry, str]) -> None:
    _, target = scripted
    async with connect(target) as connection:
        with pytest.raises(TokenMissing) as caught:
            await connection.registry.get_model(name="models/other")

    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.message == "no token"


async def test_client_from_a_bare_channel(scripted: tuple[ScriptedRegistry, str]) -> None:
    _, target = scripted
    channel = grpc.aio.insecure_channel(target)
    async with ModelRegistryClient(channel, metadata=[("authorization", "Bearer t")]) as client:
        model = await client.get_model(name="models/chat")

    assert model.provider == "openai"
    assert client.timeout == 10.0


async def test_watch_resumes_after_unavailable_without_gap_or_repeat(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    servicer, target = scripted
    async with connect(target, retry=FAST_RETRY) as connection:
        revisions = [
            response.change.revision async for response in connection.registry.watch_models(start_revision=10)
        ]

    # The first stream ended after change 11, which may not have been all of revision 11: the watch
    # reopens at 11 and drops the one change of it already delivered.
    assert servicer.watch_starts == [10, 11]
    assert revisions == [10, 11, 12]


async def test_watch_without_resume_raises(scripted: tuple[ScriptedRegistry, str]) -> None:
    _, target = scripted
    seen: list[int] = []

    async def watch(client: ModelRegistryClient) -> None:
        async with aclosing(client.watch_models(start_revision=0, resume=False)) as stream:
            async for response in stream:
                seen.append(response.change.revision)

    async with connect(target) as connection:
        with pytest.raises(ShuttingDown):
            await watch(connection.registry)

    assert seen == [1, 2]


async def test_closing_a_watch_early_cancels_the_stream(scripted: tuple[ScriptedRegistry, str]) -> None:
    servicer, target = scripted
    async with connect(target) as connection:
        async with aclosing(connection.registry.watch_models(start_revision=5)) as stream:
            first = await anext(stream)
        # The channel still serves calls after the stream was dropped.
        model = await asyncio.wait_for(connection.registry.get_model(name="models/chat"), 10)

    assert first.change.revision == 5
    assert model.name == "models/chat"
    assert servicer.watch_starts == [5]


# Against the modelplane server itself (auth off, on loopback), through the client.


@pytest.fixture
async def registry(server: ModelplaneServer) -> AsyncIterator[ModelRegistryClient]:
    async with connect(server.target, retry=FAST_RETRY) as connection:
        yield connection.registry


def _version(
    *, context_window: int = 128_000, output_price: int = 10_000_000, source: str = "openai:gpt-4o"
) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        source_uri=source,
        capabilities=[registry_pb2.CAPABILITY_CHAT, registry_pb2.CAPABILITY_TOOL_USE],
        context_window=context_window,
        max_output_tokens=4096,
        pricing=registry_pb2.TokenPricing(
            currency_code="USD", input_micros_per_million=2_500_000, output_micros_per_million=output_price
        ),
    )


async def _model_with_version(
    registry: ModelRegistryClient, model_id: str, **version: Any
) -> registry_pb2.ModelVersion:
    await registry.create_model(model_id=model_id, model=registry_pb2.Model(provider="openai"))
    return await registry.create_model_version(parent=f"models/{model_id}", model_version=_version(**version))


async def test_models_versions_and_aliases_round_trip(registry: ModelRegistryClient) -> None:
    created = await registry.create_model(
        model_id="chat",
        model=registry_pb2.Model(provider="openai", display_name="Chat", labels={"team": "a"}),
    )
    version = await registry.create_model_version(parent=created.name, model_version=_version())
    alias = await registry.set_alias(
        name="models/chat/aliases/prod", version=version.name, expected_version="", reason="first release"
    )

    assert created.name == "models/chat"
    assert created.etag
    assert await registry.get_model(name="models/chat") == await registry.get_model(name=created.name)
    assert version.name == "models/chat/versions/1"
    assert (await registry.get_model_version(name=version.name)).context_window == 128_000
    assert alias.version == version.name
    assert (await registry.get_alias(name="models/chat/aliases/prod")).version == version.name
    assert [a.name async for a in registry.list_aliases(parent="models/chat")] == ["models/chat/aliases/prod"]
    moves = [m async for m in registry.list_alias_history(parent="models/chat")]
    assert [(m.from_version, m.to_version, m.reason) for m in moves] == [("", version.name, "first release")]
    resolved = await registry.resolve_model(alias="models/chat/aliases/prod")
    assert resolved.model_version.name == version.name
    assert resolved.revision > 0


async def test_update_and_delete(registry: ModelRegistryClient) -> None:
    created = await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))

    updated = await registry.update_model(
        model=registry_pb2.Model(name=created.name, description="the chat model", etag=created.etag),
        update_mask=["description"],
    )
    await registry.delete_model(name=created.name, etag=updated.etag)

    assert updated.description == "the chat model"
    assert updated.etag != created.etag
    with pytest.raises(errors.ModelNotFound):
        await registry.get_model(name=created.name)


async def test_list_models_iterates_every_page(registry: ModelRegistryClient) -> None:
    names = [f"models/m{n:02d}" for n in range(7)]
    for name in names:
        await registry.create_model(
            model_id=name.removeprefix("models/"), model=registry_pb2.Model(provider="local")
        )

    first_page = await registry.list_models_page(page_size=3)
    listed = [m.name async for m in registry.list_models(page_size=3)]
    filtered = [m.name async for m in registry.list_models(filter='name = "models/m03"', page_size=3)]

    assert [m.name for m in first_page.models] == names[:3]
    assert first_page.next_page_token
    assert listed == names
    assert filtered == ["models/m03"]


async def test_list_model_versions_iterates_every_page(registry: ModelRegistryClient) -> None:
    await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
    for _ in range(5):
        await registry.create_model_version(parent="models/chat", model_version=_version())

    listed = [v.version_id async for v in registry.list_model_versions(parent="models/chat", page_size=2)]
    everywhere = [v.name async for v in registry.list_model_versions(page_size=2)]

    assert listed == [1, 2, 3, 4, 5]
    assert len(everywhere) == 5


async def test_missing_model_is_model_not_found(registry: ModelRegistryClient) -> None:
    with pytest.raises(errors.ModelNotFound) as caught:
        await registry.get_model(name="models/absent")

    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.request_id


async def test_bad_input_names_the_field(registry: ModelRegistryClient) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await registry.create_model(model_id="chat", model=registry_pb2.Model(provider=""))

    assert "model.provider" in [v.field for v in caught.value.field_violations]


async def test_stale_etag_is_etag_mismatch(registry: ModelRegistryClient) -> None:
    created = await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
    await registry.update_model(
        model=registry_pb2.Model(name=created.name, description="first"), update_mask=["description"]
    )

    with pytest.raises(errors.EtagMismatch):
        await registry.update_model(
            model=registry_pb2.Model(name=created.name, description="second", etag=created.etag),
            update_mask=["description"],
        )
    assert (await registry.get_model(name=created.name)).description == "first"


async def test_alias_compare_and_set_conflict(registry: ModelRegistryClient) -> None:
    first = await _model_with_version(registry, "chat")
    second = await registry.create_model_version(parent="models/chat", model_version=_version())
    await registry.set_alias(name="models/chat/aliases/prod", version=first.name, expected_version="")

    with pytest.raises(errors.AliasConflict):
        await registry.set_alias(name="models/chat/aliases/prod", version=second.name, expected_version="")
    with pytest.raises(errors.AliasConflict):
        await registry.delete_alias(name="models/chat/aliases/prod", expected_version=second.name)
    moved = await registry.set_alias(
        name="models/chat/aliases/prod", version=second.name, expected_version=first.name
    )
    assert moved.version == second.name


async def test_no_matching_model_lists_the_rejections(registry: ModelRegistryClient) -> None:
    small = await _model_with_version(registry, "small", context_window=8192)

    with pytest.raises(errors.NoMatchingModel) as caught:
        await registry.resolve_model(constraints=registry_pb2.ModelConstraints(min_context_window=32_000))

    assert caught.value.candidate_count >= 1
    assert [(r.model_version, r.constraint) for r in caught.value.rejections] == [
        (small.name, "constraints.min_context_window")
    ]


async def test_resolve_by_constraints_picks_the_cheapest(registry: ModelRegistryClient) -> None:
    await _model_with_version(registry, "pricey", output_price=60_000_000)
    cheap = await _model_with_version(registry, "cheap", output_price=600_000)

    resolved = await registry.resolve_model(
        constraints=registry_pb2.ModelConstraints(required_capabilities=[registry_pb2.CAPABILITY_TOOL_USE])
    )

    assert resolved.model_version.name == cheap.name


class LoseFirstResponse(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Lets the first call of `method` reach the server and commit, then reports UNAVAILABLE to the client,
    as when a connection breaks after the server answered."""

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


async def test_retried_create_returns_the_first_result(server: ModelplaneServer) -> None:
    lose = LoseFirstResponse("/CreateModel")
    # grpc-stubs leaves the interceptor type open and asks for a cast.
    channel = grpc.aio.insecure_channel(server.target, interceptors=[cast(Any, lose)])
    async with ModelRegistryClient(channel, retry=FAST_RETRY) as client:
        # No request id given: the client's own keeps the retry from failing with ALREADY_EXISTS.
        model = await client.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
        stored = await client.get_model(name="models/chat")

    assert lose.lost == 1
    assert model == stored


async def test_same_request_id_runs_once(registry: ModelRegistryClient) -> None:
    first = await registry.create_model(
        model_id="chat", model=registry_pb2.Model(provider="openai"), request_id="create-chat-1"
    )
    again = await registry.create_model(
        model_id="chat", model=registry_pb2.Model(provider="openai"), request_id="create-chat-1"
    )

    assert again == first
    with pytest.raises(errors.ModelAlreadyExists):
        await registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))


async def test_watch_models_sees_a_change(registry: ModelRegistryClient) -> None:
    async with aclosing(registry.watch_models()) as stream:
        first = await asyncio.wait_for(anext(stream), 10)
        await registry.create_model(model_id="watched", model=registry_pb2.Model(provider="openai"))
        change = None
        while change is None:
            response = await asyncio.wait_for(anext(stream), 10)
            if response.HasField("change"):
                change = response.change

    assert first.HasField("progress")
    assert change.resource == "models/watched"
    assert change.kind == registry_pb2.CHANGE_KIND_CREATED
    assert change.revision > first.progress.revision
    assert change.model.provider == "openai"


async def test_bearer_token_against_a_server_with_auth(
    start_server: Callable[..., Awaitable[ModelplaneServer]], database_url: str
) -> None:
    server = await start_server(auth=True)
    conn = await asyncpg.connect(database_url)
    try:
        _, reader_secret = await create_token(conn, "client-reader", "reader")
    finally:
        await conn.close()

    async with connect(server.target) as anonymous:
        with pytest.raises(errors.TokenMissing):
            await anonymous.registry.get_model(name="models/chat")
    async with connect(server.target, token="not-a-token") as forged:
        with pytest.raises(errors.TokenInvalid):
            await forged.registry.get_model(name="models/chat")
    async with connect(server.target, token=reader_secret) as reader:
        # Past authentication: the registry itself answers.
        with pytest.raises(errors.ModelNotFound):
            await reader.registry.get_model(name="models/chat")
        with pytest.raises(errors.RoleNotAllowed):
            await reader.registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
