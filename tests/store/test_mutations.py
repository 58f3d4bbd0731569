"""The write transaction of every mutation: revisions in commit order, change and audit rows, request ids."""

from __future__ import annotations

import asyncio
import logging

import pytest

from modelplane.server.errors import InvalidArgument
from modelplane.server.store.mutations import WriteRequest, mutation
from modelplane.server.store.pool import Database


def writer(request_id: str = "", fingerprint: bytes = b"") -> WriteRequest:
    return WriteRequest(actor="tester", method="Test", request_id=request_id, fingerprint=fingerprint)


async def test_concurrent_writers_commit_in_revision_order(database: Database) -> None:
    async def write(i: int) -> int:
        async with mutation(database, writer()) as m:
            revision = await m.record(
                resource_type="thing", resource=f"things/{i}", kind="created", snapshot={"i": i}
            )
            # Hold the transaction a moment so the other writers pile up behind the counter's row lock.
            await asyncio.sleep(0.01)
            return revision

    revisions = await asyncio.gather(*(write(i) for i in range(20)))
    assert sorted(revisions) == list(range(1, 21))
    async with database.connection() as conn:
        rows = await conn.fetch("SELECT revision, resource FROM changes ORDER BY revision")
    # No revision is missing or repeated, and each belongs to exactly one writer.
    assert [r["revision"] for r in rows] == list(range(1, 21))
    assert len({r["resource"] for r in rows}) == 20


async def test_changes_and_audit_rows_commit_with_the_write_or_not_at_all(database: Database) -> None:
    async with mutation(database, writer("r-1", b"x")) as m:
        first = await m.record(resource_type="thing", resource="things/a", kind="created", snapshot={"a": 1})
        second = await m.record(resource_type="thing", resource="things/b", kind="created", snapshot=None)
    assert first == second  # one transaction, one revision

    async def failing_write() -> None:
        async with mutation(database, writer()) as m:
            await m.record(resource_type="thing", resource="things/c", kind="created", snapshot=None)
            raise RuntimeError("the write fails after recording")

    with pytest.raises(RuntimeError):
        await failing_write()

    async with database.connection() as conn:
        changes = await conn.fetch("SELECT revision, seq, resource FROM changes ORDER BY revision, seq")
        audit = await conn.fetch(
            "SELECT revision, actor, method, resource, request_id FROM audit_log ORDER BY id"
        )
        revision = await conn.fetchval("SELECT revision FROM revision_counter")
    assert [(c["revision"], c["seq"], c["resource"]) for c in changes] == [
        (1, 0, "things/a"),
        (1, 1, "things/b"),
    ]
    assert [tuple(a) for a in audit] == [
        (1, "tester", "Test", "things/a", "r-1"),
        (1, "tester", "Test", "things/b", "r-1"),
    ]
    assert revision == 1  # the failed write took no revision


async def test_request_id_replays_the_first_result_and_refuses_another_body(database: Database) -> None:
    async with mutation(database, writer("same", b"body-1")) as m:
        assert await m.replay() is None
        await m.remember({"answer": 42})
    async with mutation(database, writer("same", b"body-1")) as m:
        replayed = await m.replay()
        assert replayed is not None
        assert replayed.result == {"answer": 42}
    with pytest.raises(InvalidArgument) as info:
        async with mutation(database, writer("same", b"body-2")) as m:
            await m.replay()
    assert info.value.reason == "REQUEST_ID_REUSED"
    assert [v.field for v in info.value.violations] == ["request_id"]


async def test_a_rolled_back_first_call_frees_its_request_id(database: Database) -> None:
    async def failing_first_call() -> None:
        async with mutation(database, writer("retry-me", b"b")) as m:
            assert await m.replay() is None
            raise RuntimeError("fails before commit")

    with pytest.raises(RuntimeError):
        await failing_first_call()
    async with mutation(database, writer("retry-me", b"b")) as m:
        assert await m.replay() is None  # runs again: the failed call left nothing behind


async def test_changes_are_written_at_the_end_in_one_statement_under_the_revision_taken_there(
    database: Database,
) -> None:
    async with mutation(database, writer("r-2", b"y")) as m:
        assert await m.replay() is None
        m.change(resource_type="thing", resource="things/x", kind="created", snapshot={"x": 1})
        m.change(resource_type="thing", resource="things/y", kind="deleted", snapshot=None)
        await m.remember({"done": True})
        # Nothing is written and no revision is taken until the block ends.
        assert m.taken_revision is None
        async with database.connection() as other:
            assert await other.fetchval("SELECT revision FROM revision_counter") == 0
        assert await m.conn.fetchval("SELECT count(*) FROM changes") == 0
    assert m.taken_revision == 1
    async with database.connection() as conn:
        changes = await conn.fetch("SELECT revision, seq, resource, kind, snapshot FROM changes ORDER BY seq")
        audit = await conn.fetch("SELECT revision, resource, request_id FROM audit_log ORDER BY id")
        events = await conn.fetch(
            "SELECT event_id FROM log_events WHERE kind = 'control_plane_change' ORDER BY event_id"
        )
        response = await conn.fetchval("SELECT response FROM request_ids WHERE request_id = 'r-2'")
    assert [(c["revision"], c["seq"], c["resource"], c["kind"]) for c in changes] == [
        (1, 0, "things/x", "created"),
        (1, 1, "things/y", "deleted"),
    ]
    assert changes[0]["snapshot"] == '{"x": 1}'
    assert changes[1]["snapshot"] is None
    assert [tuple(a) for a in audit] == [(1, "things/x", "r-2"), (1, "things/y", "r-2")]
    assert [e["event_id"] for e in events] == ["revision-1-0", "revision-1-1"]
    assert response == '{"done": true}'


async def test_a_revision_taken_early_is_the_one_the_changes_get(database: Database) -> None:
    async with mutation(database, writer()) as m:
        m.change(resource_type="thing", resource="things/a", kind="created", snapshot={})
        early = await m.revision()
        m.change(resource_type="thing", resource="things/b", kind="created", snapshot={})
        assert await m.revision() == early
    async with database.connection() as conn:
        revisions = await conn.fetch("SELECT DISTINCT revision FROM changes")
        counter = await conn.fetchval("SELECT revision FROM revision_counter")
    assert [r["revision"] for r in revisions] == [early]
    assert counter == early == m.taken_revision


async def test_a_write_without_changes_takes_no_revision_but_keeps_its_response(database: Database) -> None:
    async with mutation(database, writer("only-response", b"z")) as m:
        assert await m.replay() is None
        await m.remember(None)
    assert m.taken_revision is None
    async with mutation(database, writer("only-response", b"z")) as m:
        replayed = await m.replay()
    assert replayed is not None
    assert replayed.result is None
    async with database.connection() as conn:
        assert await conn.fetchval("SELECT revision FROM revision_counter") == 0


async def test_concurrent_deferred_writers_get_distinct_revisions_in_commit_order(database: Database) -> None:
    """Each writer's changes are written at its end; the revisions still come out gapless, one per
    transaction, and a watcher reading `revision > N` after each commit never sees an older one appear."""
    seen: list[int] = []

    async def write(i: int) -> None:
        async with mutation(database, writer()) as m:
            m.change(resource_type="thing", resource=f"things/{i}", kind="created", snapshot={"i": i})
            await asyncio.sleep(0.001 * (i % 3))
        assert m.taken_revision is not None
        # After this commit, every revision up to this one is committed already.
        async with database.connection() as conn:
            committed = await conn.fetchval(
                "SELECT count(DISTINCT revision) FROM changes WHERE revision <= $1", m.taken_revision
            )
        assert committed == m.taken_revision
        seen.append(m.taken_revision)

    await asyncio.gather(*(write(i) for i in range(30)))
    assert sorted(seen) == list(range(1, 31))
    async with database.connection() as conn:
        # No revision is left held by a transaction, and every one is published.
        assert await conn.fetchval("SELECT settled_revision()") == 30
        assert await conn.fetchval("SELECT revision FROM revision_counter") == 30


async def _marks(database: Database) -> list[int]:
    async with database.connection() as conn:
        return [r["revision"] for r in await conn.fetch("SELECT revision FROM marks ORDER BY id")]


@pytest.fixture
async def marks(database: Database) -> None:
    """A table with rows that name a write's revision, like the registry's alias history."""
    async with database.connection() as conn:
        await conn.execute("CREATE TABLE marks (id serial PRIMARY KEY, revision bigint NOT NULL)")


@pytest.mark.usefixtures("marks")
async def test_a_row_naming_the_revision_gets_the_one_taken_at_commit(database: Database) -> None:
    async with mutation(database, writer()) as m:
        m.change(resource_type="thing", resource="things/a", kind="created", snapshot={})
        placeholder = m.revision_for("marks")
        assert placeholder < 0
        await m.conn.execute("INSERT INTO marks (revision) VALUES ($1)", placeholder)
    assert await _marks(database) == [1]
    assert m.taken_revision == 1
    async with database.connection() as conn:
        # No revision is left held by a transaction, and the published one is the last taken.
        assert await conn.fetchval("SELECT settled_revision()") == 1
        assert await conn.fetchval("SELECT revision FROM revision_counter") == 1


@pytest.mark.usefixtures("marks")
async def test_a_revision_named_before_it_is_taken_early_still_ends_up_right(database: Database) -> None:
    async with mutation(database, writer()) as m:
        m.change(resource_type="thing", resource="things/a", kind="created", snapshot={})
        await m.conn.execute("INSERT INTO marks (revision) VALUES ($1)", m.revision_for("marks"))
        taken = await m.revision()
        assert m.revision_for("marks") == taken
        await m.conn.execute("INSERT INTO marks (revision) VALUES ($1)", m.revision_for("marks"))
    assert await _marks(database) == [taken, taken]


@pytest.mark.usefixtures("marks")
async def test_a_revision_named_without_changes_is_taken_all_the_same(database: Database) -> None:
    async with mutation(database, writer()) as m:
        await m.conn.execute("INSERT INTO marks (revision) VALUES ($1)", m.revision_for("marks"))
    assert m.taken_revision == 1
    assert await _marks(database) == [1]


@pytest.mark.usefixtures("marks")
async def test_concurrent_writes_naming_their_revisions_each_get_their_own(database: Database) -> None:
    async def write(i: int) -> int | None:
        async with mutation(database, writer()) as m:
            m.change(resource_type="thing", resource=f"things/{i}", kind="created", snapshot={})
            await m.conn.execute("INSERT INTO marks (revision) VALUES ($1)", m.revision_for("marks"))
            await asyncio.sleep(0.001 * (i % 4))
        return m.taken_revision

    taken = await asyncio.gather(*(write(i) for i in range(20)))
    assert sorted(await _marks(database)) == sorted(t for t in taken if t is not None) == list(range(1, 21))


async def test_a_write_that_fails_ends_its_own_transaction_and_leaves_nothing(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # A refusal (ALREADY_EXISTS, a stale etag, ...) is an error raised in the block: the transaction is
    # rolled back before the connection goes back to the pool, whose own reset would say so as an asyncio
    # ERROR ("Resetting connection with an active transaction") for every refused write.
    async def refused() -> None:
        async with mutation(database, writer("r-refused", b"f")) as m:
            await m.record(resource_type="thing", resource="things/r", kind="created", snapshot=None)
            raise RuntimeError("refused after recording")

    with caplog.at_level(logging.DEBUG, logger="asyncio"), pytest.raises(RuntimeError):
        await refused()
    assert [record.getMessage() for record in caplog.records if record.name == "asyncio"] == []
    async with database.connection() as conn:
        assert not conn.is_in_transaction()
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM changes) + (SELECT count(*) FROM audit_log)"
            " + (SELECT count(*) FROM request_ids)"
        )
    assert left == 0
    # The request id was not kept: the same id runs the write when sent again.
    async with mutation(database, writer("r-refused", b"f")) as m:
        assert await m.replay() is None
