"""The sync client against a real server: what only the wire shows (pages, a watch, a deadline, auth).

The server runs on the test's event loop, so each scenario's blocking calls run on a worker thread
(asyncio.to_thread) while the loop serves them.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from modelplane.client import connect as async_connect
from modelplane.client import errors
from modelplane.client.retry import RetryPolicy
from modelplane.client.sync import connect
from modelplane.server.app import ModelplaneServer
from modelplane.server.auth.store import create_token
from modelplane.v1 import guardrails_pb2, registry_pb2
from tests.support import StartServer

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
# Generous enough to outlast a server restart on a busy machine: the watch must not give up meanwhile.
PATIENT = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.5)
# Only a guard against a hang; nothing here measures time.
GUARD = 60


def create_models(target: str, count: int) -> list[str]:
    with connect(target, retry=FAST_RETRY) as connection:
        return [
            connection.registry.create_model(
                model_id=f"chat-{n}", model=registry_pb2.Model(provider="openai")
            ).name
            for n in range(count)
        ]


async def test_list_iterates_every_page_and_page_returns_one(server: ModelplaneServer) -> None:
    created = await asyncio.to_thread(create_models, server.target, 5)

    def read() -> tuple[list[str], registry_pb2.ListModelsResponse]:
        with connect(server.target) as connection:
            every = [model.name for model in connection.registry.list_models(page_size=2)]
            first_page = connection.registry.list_models_page(page_size=2)
            return every, first_page

    every, first_page = await asyncio.to_thread(read)
    assert sorted(every) == sorted(created)
    assert len(first_page.models) == 2
    assert first_page.next_page_token


async def test_a_mutation_with_a_request_id_runs_once(server: ModelplaneServer) -> None:
    def create_twice() -> tuple[registry_pb2.Model, registry_pb2.Model, int]:
        with connect(server.target) as connection:
            model = registry_pb2.Model(provider="openai")
            first = connection.registry.create_model(model_id="once", model=model, request_id="req-once")
            again = connection.registry.create_model(model_id="once", model=model, request_id="req-once")
            return first, again, len(list(connection.registry.list_models()))

    first, again, count = await asyncio.to_thread(create_twice)
    assert first == again
    assert count == 1


async def test_watch_yields_the_progress_mark_then_each_change(server: ModelplaneServer) -> None:
    def watch() -> list[registry_pb2.WatchModelsResponse]:
        with connect(server.target) as connection:
            stream = connection.registry.watch_models(start_revision=0, timeout=30)
            mark = next(stream)
            connection.registry.create_model(model_id="watched", model=registry_pb2.Model(provider="openai"))
            change = next(message for message in stream if message.HasField("change"))
            # Reopened from the change's revision (inclusive), the same change comes first.
            replay = connection.registry.watch_models(start_revision=change.change.revision, timeout=30)
            replayed = next(message for message in replay if message.HasField("change"))
            return [mark, change, replayed]

    mark, change, replayed = await asyncio.to_thread(watch)
    assert mark.HasField("progress")
    assert change.change.resource == "models/watched"
    assert change.change.kind == registry_pb2.CHANGE_KIND_CREATED
    assert change.change.revision > mark.progress.revision
    assert replayed.change == change.change


async def test_a_stream_ends_at_its_deadline(server: ModelplaneServer) -> None:
    def tail() -> list[str]:
        with connect(server.target) as connection:
            return [event.event_id for event in connection.logs.tail_log_events(timeout=0.5)]

    with pytest.raises(errors.DeadlineExceeded):
        await asyncio.to_thread(tail)


async def test_bearer_token_against_a_server_with_auth(
    start_server: Callable[..., Awaitable[ModelplaneServer]], database_url: str
) -> None:
    server = await start_server(auth=True)
    conn = await asyncpg.connect(database_url)
    try:
        _, reader_secret = await create_token(conn, "sync-reader", "reader")
    finally:
        await conn.close()

    def call(token: str | None, mutate: bool = False) -> None:
        with connect(server.target, token=token) as connection:
            if mutate:
                connection.registry.create_model(model_id="chat", model=registry_pb2.Model(provider="openai"))
            else:
                connection.registry.get_model(name="models/chat")

    with pytest.raises(errors.TokenMissing):
        await asyncio.to_thread(call, None)
    with pytest.raises(errors.TokenInvalid):
        await asyncio.to_thread(call, "not-a-token")
    # Past authentication: the registry itself answers.
    with pytest.raises(errors.ModelNotFound):
        await asyncio.to_thread(call, reader_secret)
    with pytest.raises(errors.RoleNotAllowed):
        await asyncio.to_thread(call, reader_secret, True)


async def test_a_watch_resumes_across_a_server_restart_with_no_gap_and_no_repeat(
    start_server: StartServer,
) -> None:
    server = await start_server()
    port = server.target.rsplit(":", 1)[1]
    received: queue.Queue[tuple[int, str]] = queue.Queue()

    def watch() -> None:
        with connect(server.target) as connection:
            stream = connection.registry.watch_models(start_revision=1, retry=PATIENT, timeout=GUARD)
            changes = (message.change for message in stream if message.HasField("change"))
            for _ in range(4):
                change = next(changes)
                received.put((change.revision, change.resource))

    watcher = asyncio.create_task(asyncio.to_thread(watch))
    async with async_connect(server.target) as writer:
        for model_id in ("a", "b"):
            await writer.registry.create_model(model_id=model_id, model=registry_pb2.Model(provider="openai"))
    before = [await asyncio.to_thread(received.get, timeout=GUARD) for _ in range(2)]
    await server.stop()
    server = await start_server(address=f"127.0.0.1:{port}")
    async with async_connect(server.target) as writer:
        for model_id in ("c", "d"):
            await writer.registry.create_model(model_id=model_id, model=registry_pb2.Model(provider="openai"))
    await asyncio.wait_for(watcher, GUARD)
    events = before + [received.get_nowait() for _ in range(2)]

    assert [resource for _, resource in events] == ["models/a", "models/b", "models/c", "models/d"]
    revisions = [revision for revision, _ in events]
    assert revisions == sorted(set(revisions))


async def test_check_stream_blocks_early_and_ends_as_check_content_does(server: ModelplaneServer) -> None:
    policy = guardrails_pb2.Policy(
        rules=[
            guardrails_pb2.Rule(
                id="violence",
                severity=guardrails_pb2.SEVERITY_CRITICAL,
                category="violence",
                banned_terms=guardrails_pb2.BannedTermsRule(terms=["dragonfire"]),
            )
        ],
        default_fallback="A kind story.",
        fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
    )
    text = "Then the drag" + "onfire rose over the hills."

    def check() -> tuple[
        guardrails_pb2.CheckVerdict | None, guardrails_pb2.CheckVerdict, guardrails_pb2.CheckVerdict
    ]:
        with connect(server.target) as connection:
            guardrails = connection.guardrails
            guardrails.create_policy(policy_id="kids", policy=policy)
            with guardrails.check_stream(policy="policies/kids") as stream:
                # The banned term spans the two chunks.
                stream.send(text[:13])
                stream.send(text[13:24])
                early = stream.wait_blocked()
                stream.send(text[24:])
                final = stream.finish()
            return early, final, guardrails.check_content(policy="policies/kids", text=text)

    early, final, one_shot = await asyncio.to_thread(check)
    assert early is not None
    assert (early.decision, early.final) == (guardrails_pb2.DECISION_BLOCK, False)
    assert final.final
    assert (final.decision, list(final.violations)) == (one_shot.decision, list(one_shot.violations))
