"""ModelRegistryService through a real server on loopback: every RPC, its rules and its error codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from modelplane.v1 import common_pb2
from modelplane.v1 import registry_pb2 as pb
from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceStub
from tests.support.rich_errors import RichError, rich

if TYPE_CHECKING:  # the async stub type exists only in the generated .pyi
    from modelplane.v1.registry_pb2_grpc import ModelRegistryServiceAsyncStub

USD = "USD"


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> ModelRegistryServiceAsyncStub:
    return ModelRegistryServiceStub(channel)


async def fails(call: Awaitable[Any]) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = rich(info.value)
    assert error.domain == "modelplane"
    return error


def version_spec(
    *,
    uri: str = "openai:gpt-4o",
    window: int = 128_000,
    output: int = 10_000_000,
    capabilities: tuple[pb.Capability.ValueType, ...] = (pb.CAPABILITY_CHAT,),
    **kwargs: Any,
) -> pb.ModelVersion:
    return pb.ModelVersion(
        source_uri=uri,
        context_window=window,
        max_output_tokens=min(4096, window),
        capabilities=capabilities,
        pricing=pb.TokenPricing(
            currency_code=USD, input_micros_per_million=2_500_000, output_micros_per_million=output
        ),
        **kwargs,
    )


async def new_model(stub: ModelRegistryServiceAsyncStub, model_id: str = "chat", **kwargs: Any) -> pb.Model:
    response = await stub.CreateModel(
        pb.CreateModelRequest(model_id=model_id, model=pb.Model(provider="openai", **kwargs))
    )
    return response.model


async def new_version(
    stub: ModelRegistryServiceAsyncStub, model: str = "models/chat", **kwargs: Any
) -> pb.ModelVersion:
    response = await stub.CreateModelVersion(
        pb.CreateModelVersionRequest(parent=model, model_version=version_spec(**kwargs))
    )
    return response.model_version


# ---- models


async def test_create_and_get_model(stub: ModelRegistryServiceAsyncStub) -> None:
    created = await new_model(stub, display_name="Chat", labels={"team": "search"})
    assert created.name == "models/chat"
    assert created.etag
    assert created.create_time.seconds > 0
    got = (await stub.GetModel(pb.GetModelRequest(name="models/chat"))).model
    assert got == created

    error = await fails(new_model(stub))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "MODEL_ALREADY_EXISTS")

    error = await fails(stub.GetModel(pb.GetModelRequest(name="models/nope")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")


async def test_refused_writes_log_no_error(
    stub: ModelRegistryServiceAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    # A refusal is the caller's answer, not the server's trouble: nothing at ERROR in the server's log (the
    # pool's reset of a connection left in a transaction once said one for every refused write).
    model = await new_model(stub)
    with caplog.at_level(logging.WARNING):
        exists = await fails(new_model(stub))
        stale = await fails(
            stub.DeleteModel(pb.DeleteModelRequest(name=model.name, etag=f"{model.etag}-stale"))
        )
    assert (exists.code, stale.code) == (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


async def test_create_model_names_every_bad_field(stub: ModelRegistryServiceAsyncStub) -> None:
    error = await fails(
        stub.CreateModel(pb.CreateModelRequest(model_id="Bad_Id", model=pb.Model(provider="x")))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_paths == ["model_id"]

    error = await fails(
        stub.CreateModel(
            pb.CreateModelRequest(
                model_id="ok", model=pb.Model(provider="", display_name="x" * 201, labels={"Bad Key": "v"})
            )
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_paths) == {"model.provider", "model.display_name", "model.labels['Bad Key']"}
    # Nothing was written.
    error = await fails(stub.GetModel(pb.GetModelRequest(name="models/ok")))
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_update_model_with_mask_and_etag(stub: ModelRegistryServiceAsyncStub) -> None:
    created = await new_model(stub, description="old")
    change = pb.Model(name=created.name, description="new", display_name="ignored", etag=created.etag)
    updated = (
        await stub.UpdateModel(
            pb.UpdateModelRequest(model=change, update_mask=field_mask_pb2.FieldMask(paths=["description"]))
        )
    ).model
    assert updated.description == "new"
    assert updated.display_name == ""
    assert updated.etag != created.etag

    # The first etag is stale now: ABORTED, and nothing changes.
    stale = pb.Model(name=created.name, description="lost", etag=created.etag)
    error = await fails(
        stub.UpdateModel(
            pb.UpdateModelRequest(model=stale, update_mask=field_mask_pb2.FieldMask(paths=["description"]))
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert error.metadata["current_etag"] == updated.etag
    assert (await stub.GetModel(pb.GetModelRequest(name=created.name))).model.description == "new"

    error = await fails(
        stub.UpdateModel(
            pb.UpdateModelRequest(model=change, update_mask=field_mask_pb2.FieldMask(paths=["etag"]))
        )
    )
    assert error.field_paths == ["update_mask.paths"]
    error = await fails(stub.UpdateModel(pb.UpdateModelRequest(model=change)))
    assert error.field_paths == ["update_mask"]


async def test_delete_model_needs_force_when_it_has_versions(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    await new_version(stub)
    error = await fails(stub.DeleteModel(pb.DeleteModelRequest(name="models/chat")))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_HAS_VERSIONS")
    await stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version="models/chat/versions/1"))
    await stub.DeleteModel(pb.DeleteModelRequest(name="models/chat", force=True))
    error = await fails(stub.GetModelVersion(pb.GetModelVersionRequest(name="models/chat/versions/1")))
    assert error.reason == "MODEL_VERSION_NOT_FOUND"
    error = await fails(stub.DeleteModel(pb.DeleteModelRequest(name="models/chat")))
    assert error.reason == "MODEL_NOT_FOUND"


# ---- versions


async def test_versions_number_up_and_are_never_reused(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    first = await new_version(stub)
    second = await new_version(stub)
    assert (first.version_id, second.version_id) == (1, 2)
    assert second.name == "models/chat/versions/2"
    assert second.provider == "openai"
    await stub.DeleteModelVersion(pb.DeleteModelVersionRequest(name=second.name))
    third = await new_version(stub)
    assert third.version_id == 3
    model = (await stub.GetModel(pb.GetModelRequest(name="models/chat"))).model
    assert model.latest_version == third.name


async def test_create_version_reports_every_bad_field(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    bad = pb.ModelVersion(
        source_uri="",
        source_sha256="XYZ",
        capabilities=[pb.CAPABILITY_CHAT, pb.CAPABILITY_CHAT, pb.CAPABILITY_UNSPECIFIED],
        context_window=100,
        max_output_tokens=200,
        pricing=pb.TokenPricing(currency_code="usd", input_micros_per_million=-1),
    )
    error = await fails(
        stub.CreateModelVersion(pb.CreateModelVersionRequest(parent="models/chat", model_version=bad))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_version.capabilities[2]" in error.field_paths

    bad.ClearField("capabilities")
    bad.capabilities.extend([pb.CAPABILITY_CHAT, pb.CAPABILITY_CHAT])
    error = await fails(
        stub.CreateModelVersion(pb.CreateModelVersionRequest(parent="models/chat", model_version=bad))
    )
    assert set(error.field_paths) == {
        "model_version.source_uri",
        "model_version.source_sha256",
        "model_version.capabilities[1]",
        "model_version.max_output_tokens",
        "model_version.pricing.currency_code",
        "model_version.pricing.input_micros_per_million",
    }

    no_price = version_spec()
    no_price.ClearField("pricing")
    error = await fails(
        stub.CreateModelVersion(pb.CreateModelVersionRequest(parent="models/chat", model_version=no_price))
    )
    assert error.field_paths == ["model_version.pricing"]

    error = await fails(new_version(stub, lineage=pb.Lineage(parent_version="models/chat/versions/9")))
    assert error.field_paths == ["model_version.lineage.parent_version"]
    error = await fails(new_version(stub, model="models/missing"))
    assert error.reason == "MODEL_NOT_FOUND"


async def test_update_version_state_and_archiving_rules(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    version = await new_version(stub)
    await stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version=version.name))

    archive = pb.ModelVersion(name=version.name, state=pb.MODEL_VERSION_STATE_ARCHIVED)
    mask = field_mask_pb2.FieldMask(paths=["state"])
    error = await fails(
        stub.UpdateModelVersion(pb.UpdateModelVersionRequest(model_version=archive, update_mask=mask))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_HAS_ALIASES")
    error = await fails(stub.DeleteModelVersion(pb.DeleteModelVersionRequest(name=version.name)))
    assert error.reason == "VERSION_HAS_ALIASES"

    unspecified = pb.ModelVersion(name=version.name)
    error = await fails(
        stub.UpdateModelVersion(pb.UpdateModelVersionRequest(model_version=unspecified, update_mask=mask))
    )
    assert error.field_paths == ["model_version.state"]

    await stub.DeleteAlias(pb.DeleteAliasRequest(name="models/chat/aliases/prod"))
    archived = (
        await stub.UpdateModelVersion(pb.UpdateModelVersionRequest(model_version=archive, update_mask=mask))
    ).model_version
    assert archived.state == pb.MODEL_VERSION_STATE_ARCHIVED
    error = await fails(
        stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version=version.name))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_ARCHIVED")

    source_change = pb.ModelVersion(name=version.name, source_uri="elsewhere")
    error = await fails(
        stub.UpdateModelVersion(
            pb.UpdateModelVersionRequest(
                model_version=source_change, update_mask=field_mask_pb2.FieldMask(paths=["source_uri"])
            )
        )
    )
    assert error.field_paths == ["update_mask.paths"]


# ---- aliases


async def test_alias_compare_and_set_and_history(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    v1, v2 = await new_version(stub), await new_version(stub)
    name = "models/chat/aliases/prod"
    created = (await stub.SetAlias(pb.SetAliasRequest(name=name, version=v1.name, expected_version=""))).alias
    assert created.version == v1.name
    error = await fails(stub.SetAlias(pb.SetAliasRequest(name=name, version=v2.name, expected_version="")))
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "ALIAS_CONFLICT")
    assert error.metadata["current_version"] == v1.name
    error = await fails(
        stub.SetAlias(pb.SetAliasRequest(name=name, version=v2.name, expected_version=v2.name))
    )
    assert error.reason == "ALIAS_CONFLICT"
    moved = (
        await stub.SetAlias(
            pb.SetAliasRequest(name=name, version=v2.name, expected_version=v1.name, reason="rollout")
        )
    ).alias
    assert moved.version == v2.name
    assert moved.updated_by == "anonymous"

    # Aliases are always filled, in Get, List and Resolve alike.
    assert list(
        (await stub.GetModelVersion(pb.GetModelVersionRequest(name=v2.name))).model_version.aliases
    ) == ["prod"]
    assert (
        list((await stub.GetModelVersion(pb.GetModelVersionRequest(name=v1.name))).model_version.aliases)
        == []
    )
    listed = (await stub.ListModelVersions(pb.ListModelVersionsRequest(parent="models/chat"))).model_versions
    assert {v.name: list(v.aliases) for v in listed} == {v1.name: [], v2.name: ["prod"]}
    resolved = await stub.ResolveModel(pb.ResolveModelRequest(alias=name))
    assert resolved.model_version.name == v2.name
    assert list(resolved.model_version.aliases) == ["prod"]

    await stub.DeleteAlias(pb.DeleteAliasRequest(name=name, expected_version=v2.name, reason="retire"))
    error = await fails(stub.GetAlias(pb.GetAliasRequest(name=name)))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "ALIAS_NOT_FOUND")
    error = await fails(stub.ResolveModel(pb.ResolveModelRequest(alias=name)))
    assert error.reason == "ALIAS_NOT_FOUND"

    history = (await stub.ListAliasHistory(pb.ListAliasHistoryRequest(parent="models/chat"))).moves
    assert [(m.from_version, m.to_version, m.reason) for m in history] == [
        (v2.name, "", "retire"),
        (v1.name, v2.name, "rollout"),
        ("", v1.name, ""),
    ]
    assert all(m.actor == "anonymous" and m.revision > 0 for m in history)
    assert history[0].revision > history[1].revision > history[2].revision


async def test_alias_must_point_into_its_model(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    await new_model(stub, "other")
    await new_version(stub, model="models/other")
    error = await fails(
        stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version="models/other/versions/1"))
    )
    assert error.field_paths == ["version"]
    error = await fails(
        stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version="models/chat/versions/7"))
    )
    assert error.reason == "MODEL_VERSION_NOT_FOUND"


async def test_twenty_concurrent_moves_with_one_expectation_one_wins(
    stub: ModelRegistryServiceAsyncStub,
) -> None:
    await new_model(stub)
    versions = [await new_version(stub) for _ in range(21)]
    name = "models/chat/aliases/prod"
    await stub.SetAlias(pb.SetAliasRequest(name=name, version=versions[0].name))
    calls = [
        stub.SetAlias(pb.SetAliasRequest(name=name, version=v.name, expected_version=versions[0].name))
        for v in versions[1:]
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [r for r in results if isinstance(r, pb.SetAliasResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(rich(e).reason == "ALIAS_CONFLICT" for e in losers)
    now = (await stub.GetAlias(pb.GetAliasRequest(name=name))).alias
    assert now.version == winners[0].alias.version
    history = (await stub.ListAliasHistory(pb.ListAliasHistoryRequest(parent="models/chat"))).moves
    assert len(history) == 2


# ---- request ids


async def test_request_id_repeats_return_the_first_response(stub: ModelRegistryServiceAsyncStub) -> None:
    request = pb.CreateModelRequest(model_id="chat", model=pb.Model(provider="openai"), request_id="req-1")
    first = await stub.CreateModel(request)
    again = await stub.CreateModel(request)
    assert again == first

    other = pb.CreateModelRequest(model_id="chat2", model=pb.Model(provider="openai"), request_id="req-1")
    error = await fails(stub.CreateModel(other))
    assert (error.code, error.reason, error.field_paths) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
        ["request_id"],
    )
    await fails(stub.GetModel(pb.GetModelRequest(name="models/chat2")))

    delete = pb.DeleteModelRequest(name="models/chat", request_id="req-2")
    await stub.DeleteModel(delete)
    await stub.DeleteModel(delete)  # a repeat of a delete succeeds without running twice


async def test_five_concurrent_creates_with_one_request_id(
    stub: ModelRegistryServiceAsyncStub, database_url: str
) -> None:
    await new_model(stub)
    request = pb.CreateModelVersionRequest(
        parent="models/chat", model_version=version_spec(), request_id="same"
    )
    responses = await asyncio.gather(*(stub.CreateModelVersion(request) for _ in range(5)))
    assert all(r == responses[0] for r in responses)
    listed = (await stub.ListModelVersions(pb.ListModelVersionsRequest(parent="models/chat"))).model_versions
    assert [v.version_id for v in listed] == [1]


# ---- resolution


async def test_resolve_by_constraints_tie_break_and_rejections(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    await new_model(stub, "small", labels={"tier": "cheap"})
    cheap_old = await new_version(stub, model="models/small", window=8_000, output=1_000_000)
    cheap_new = await new_version(stub, model="models/small", window=8_000, output=1_000_000)
    big = await new_version(
        stub, window=200_000, output=9_000_000, capabilities=(pb.CAPABILITY_CHAT, pb.CAPABILITY_TOOL_USE)
    )

    any_chat = pb.ModelConstraints(required_capabilities=[pb.CAPABILITY_CHAT])
    chosen = (await stub.ResolveModel(pb.ResolveModelRequest(constraints=any_chat))).model_version
    assert chosen.name == cheap_new.name != cheap_old.name  # cheapest output price, then newest

    labelled = pb.ModelConstraints(labels={"tier": "cheap"})
    assert (
        await stub.ResolveModel(pb.ResolveModelRequest(constraints=labelled))
    ).model_version.name == cheap_new.name

    long_ctx = pb.ModelConstraints(min_context_window=32_000, required_capabilities=[pb.CAPABILITY_TOOL_USE])
    assert (
        await stub.ResolveModel(pb.ResolveModelRequest(constraints=long_ctx))
    ).model_version.name == big.name

    impossible = pb.ModelConstraints(
        min_context_window=32_000, max_output_price=common_pb2.Money(currency_code=USD, micros=5_000_000)
    )
    error = await fails(stub.ResolveModel(pb.ResolveModelRequest(constraints=impossible)))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "NO_MATCHING_MODEL")
    failure = error.detail(pb.ResolveModelFailure)
    assert isinstance(failure, pb.ResolveModelFailure)
    assert failure.candidate_count == 3
    reasons = {r.model_version: r.constraint for r in failure.rejections}
    assert reasons == {
        cheap_old.name: "constraints.min_context_window",
        cheap_new.name: "constraints.min_context_window",
        big.name: "constraints.max_output_price",
    }

    error = await fails(stub.ResolveModel(pb.ResolveModelRequest()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    error = await fails(
        stub.ResolveModel(
            pb.ResolveModelRequest(
                constraints=pb.ModelConstraints(required_capabilities=[pb.CAPABILITY_UNSPECIFIED])
            )
        )
    )
    assert error.field_paths == ["constraints.required_capabilities[0]"]


async def test_deprecated_versions_are_not_chosen_by_constraints(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    version = await new_version(stub)
    await stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version=version.name))
    await stub.UpdateModelVersion(
        pb.UpdateModelVersionRequest(
            model_version=pb.ModelVersion(name=version.name, state=pb.MODEL_VERSION_STATE_DEPRECATED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        )
    )
    # Still served through its alias...
    resolved = await stub.ResolveModel(pb.ResolveModelRequest(alias="models/chat/aliases/prod"))
    assert resolved.model_version.state == pb.MODEL_VERSION_STATE_DEPRECATED
    # ...but no longer a candidate.
    error = await fails(stub.ResolveModel(pb.ResolveModelRequest(constraints=pb.ModelConstraints())))
    assert error.reason == "NO_MATCHING_MODEL"


# ---- search


async def test_list_models_pages_filters_and_orders(stub: ModelRegistryServiceAsyncStub) -> None:
    for i in range(7):
        await new_model(stub, f"m{i}", labels={"team": "a" if i % 2 else "b"})
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListModels(
            pb.ListModelsRequest(page_size=3, page_token=token, order_by="name desc")
        )
        assert len(page.models) <= 3
        seen.extend(m.name for m in page.models)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"models/m{i}" for i in reversed(range(7))]

    team_a = await stub.ListModels(pb.ListModelsRequest(filter='labels.team = "a"'))
    assert [m.name for m in team_a.models] == ["models/m1", "models/m3", "models/m5"]

    first = await stub.ListModels(pb.ListModelsRequest(page_size=2))
    error = await fails(
        stub.ListModels(pb.ListModelsRequest(page_size=2, page_token=first.next_page_token, filter="x"))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    error = await fails(
        stub.ListModels(
            pb.ListModelsRequest(page_size=2, page_token=first.next_page_token, order_by="create_time")
        )
    )
    assert error.reason == "INVALID_PAGE_TOKEN"
    error = await fails(stub.ListModels(pb.ListModelsRequest(filter='labels.team = "a" AND (')))
    assert (error.reason, error.field_paths) == ("INVALID_FILTER", ["filter"])
    assert "position" in error.message


async def test_list_versions_across_models_with_filters(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    await new_model(stub, "embed")
    await new_version(stub, capabilities=(pb.CAPABILITY_CHAT, pb.CAPABILITY_TOOL_USE))
    await new_version(stub, model="models/embed", capabilities=(pb.CAPABILITY_EMBEDDING,), window=8192)
    await stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version="models/chat/versions/1"))

    def names(response: pb.ListModelVersionsResponse) -> list[str]:
        return [v.name for v in response.model_versions]

    everything = await stub.ListModelVersions(pb.ListModelVersionsRequest(parent="models/-"))
    assert len(everything.model_versions) == 2
    tools = await stub.ListModelVersions(
        pb.ListModelVersionsRequest(parent="models/-", filter="capabilities:tool_use")
    )
    assert names(tools) == ["models/chat/versions/1"]
    aliased = await stub.ListModelVersions(
        pb.ListModelVersionsRequest(parent="models/-", filter="alias:prod")
    )
    assert names(aliased) == ["models/chat/versions/1"]
    small = await stub.ListModelVersions(
        pb.ListModelVersionsRequest(parent="models/-", filter="context_window < 10000 OR state = DEPRECATED")
    )
    assert names(small) == ["models/embed/versions/1"]
    error = await fails(stub.ListModelVersions(pb.ListModelVersionsRequest(parent="models/nope")))
    assert error.reason == "MODEL_NOT_FOUND"


async def test_list_aliases_pages(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    version = await new_version(stub)
    for alias in ("a", "b", "c"):
        await stub.SetAlias(pb.SetAliasRequest(name=f"models/chat/aliases/{alias}", version=version.name))
    first = await stub.ListAliases(pb.ListAliasesRequest(parent="models/chat", page_size=2))
    second = await stub.ListAliases(
        pb.ListAliasesRequest(parent="models/chat", page_size=2, page_token=first.next_page_token)
    )
    assert [a.name.rsplit("/", 1)[1] for a in [*first.aliases, *second.aliases]] == ["a", "b", "c"]
    assert second.next_page_token == ""


# ---- watch


async def next_event(stream: Any) -> pb.WatchModelsResponse:
    event: pb.WatchModelsResponse = await asyncio.wait_for(stream.read(), timeout=10)
    return event


async def test_watch_streams_changes_in_order_and_resumes(stub: ModelRegistryServiceAsyncStub) -> None:
    stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=0))
    first = await next_event(stream)
    assert first.HasField("progress")
    start = first.progress.revision

    await new_model(stub)
    version = await new_version(stub)
    await stub.SetAlias(pb.SetAliasRequest(name="models/chat/aliases/prod", version=version.name))

    changes: list[pb.ModelChange] = []
    while len(changes) < 4:
        event = await next_event(stream)
        if event.HasField("change"):
            changes.append(event.change)
    stream.cancel()
    assert [c.resource for c in changes] == [
        "models/chat",
        version.name,
        "models/chat/aliases/prod",
        version.name,
    ]
    assert changes[0].kind == pb.CHANGE_KIND_CREATED
    assert changes[0].model.provider == "openai"
    assert changes[2].alias.version == version.name
    assert list(changes[3].model_version.aliases) == ["prod"]
    revisions = [c.revision for c in changes]
    assert revisions == sorted(revisions)
    assert revisions[0] > start

    # Resuming right after a revision replays exactly what came after it.
    resumed = stub.WatchModels(pb.WatchModelsRequest(start_revision=changes[1].revision + 1))
    replay = [await next_event(resumed) for _ in range(2)]
    resumed.cancel()
    assert [e.change.resource for e in replay] == ["models/chat/aliases/prod", version.name]


async def test_watch_sends_progress_while_idle(stub: ModelRegistryServiceAsyncStub) -> None:
    await new_model(stub)
    # Revision 1 is the model's creation; from 2 on there is nothing yet.
    stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=2))
    event = await next_event(stream)
    assert event.HasField("progress")
    assert event.progress.revision >= 1
    stream.cancel()


async def next_change(stream: Any) -> pb.ModelChange:
    """The next change of a watch, past any progress marks."""
    while True:
        event = await next_event(stream)
        if event.HasField("change"):
            return event.change


async def test_watch_from_revision_1_replays_the_first_change_of_a_fresh_database(
    stub: ModelRegistryServiceAsyncStub,
) -> None:
    await new_model(stub, "first")
    await new_model(stub, "second")
    stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=1))
    replay = [await next_change(stream) for _ in range(2)]
    stream.cancel()
    assert [(c.revision, c.resource) for c in replay] == [(1, "models/first"), (2, "models/second")]


async def test_watch_at_revision_n_starts_with_change_n(stub: ModelRegistryServiceAsyncStub) -> None:
    created = [await new_model(stub, f"m{i}") for i in range(4)]
    stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=3))
    replay = [await next_change(stream) for _ in range(2)]
    stream.cancel()
    assert [(c.revision, c.resource) for c in replay] == [(3, created[2].name), (4, created[3].name)]


async def test_watch_from_0_sends_only_changes_after_the_current_revision(
    stub: ModelRegistryServiceAsyncStub,
) -> None:
    await new_model(stub, "before")
    stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=0))
    first = await next_event(stream)
    assert first.HasField("progress")
    assert first.progress.revision == 1
    await new_model(stub, "after")
    change = await next_change(stream)
    stream.cancel()
    assert (change.revision, change.resource) == (2, "models/after")


async def test_a_negative_start_revision_is_refused(stub: ModelRegistryServiceAsyncStub) -> None:
    error = await fails(stub.WatchModels(pb.WatchModelsRequest(start_revision=-1)).read())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_paths == ["start_revision"]


async def test_watch_from_a_compacted_revision_is_out_of_range(
    stub: ModelRegistryServiceAsyncStub, database_url: str
) -> None:
    await new_model(stub)
    await new_version(stub)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE revision_counter SET compacted_through = 2")
    finally:
        await conn.close()
    # Changes 1 and 2 are gone: a watch starting at either cannot be served.
    for start in (1, 2):
        stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=start))
        error = await fails(stream.read())
        assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "REVISION_COMPACTED")
        assert error.metadata["compacted_through"] == "2"
    # Right after the compaction point, the stream works.
    stream = stub.WatchModels(pb.WatchModelsRequest(start_revision=3))
    assert (await next_event(stream)).HasField("progress")
    stream.cancel()
