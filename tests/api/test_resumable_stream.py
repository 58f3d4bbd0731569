"""The resumable watch over real gRPC, against a scripted WatchModels server that ends streams on demand.

Each stream the server opens plays the next script: some changes (several may share a revision), then an
end (UNAVAILABLE with RetryInfo, another error, or none). The waits the watch chooses are recorded by the
injected sleep, and a hand-driven clock stands in for time where the deadline is under test.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.client.errors import RevisionCompacted, ShuttingDown, StorageUnavailable
from modelplane.client.resumable_stream import resumable_watch
from modelplane.client.retry import RetryPolicy, backoff_ceilings
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support.manual_clock import ManualClock

RETRY_AFTER = 0.25


def _status(code: grpc.StatusCode, reason: str, retry_after: float | None = None) -> grpc.Status:
    details = [error_details_pb2.ErrorInfo(reason=reason, domain="modelplane")]
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=reason, details=packed))


SHUTTING_DOWN = _status(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", RETRY_AFTER)
COMPACTED = _status(grpc.StatusCode.OUT_OF_RANGE, "REVISION_COMPACTED")

Change = tuple[int, int]  # (revision, sequence within the revision)


@dataclass
class Script:
    """One stream: the changes it sends (from the requested start on), then how it ends (None: OK)."""

    changes: list[Change]
    end: grpc.Status | None = SHUTTING_DOWN


@dataclass
class ScriptedWatch(registry_pb2_grpc.ModelRegistryServiceServicer):
    """Plays one script per stream, in order; the last one is repeated once the others are used."""

    scripts: list[Script]
    starts: list[int] = field(default_factory=list)

    async def WatchModels(
        self, request: registry_pb2.WatchModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[registry_pb2.WatchModelsResponse]:
        self.starts.append(request.start_revision)
        script = self.scripts[min(len(self.starts), len(self.scripts)) - 1]
        for revision, seq in script.changes:
            if revision >= request.start_revision:
                change = registry_pb2.ModelChange(revision=revision, resource=f"models/r{revision}-{seq}")
                yield registry_pb2.WatchModelsResponse(change=change)
        if script.end is not None:
            await context.abort(
                script.end.code, script.end.details, trailing_metadata=script.end.trailing_metadata
            )


@pytest.fixture
async def stub() -> AsyncIterator[
    tuple[list[Script], ScriptedWatch, registry_pb2_grpc.ModelRegistryServiceStub]
]:
    scripts: list[Script] = []
    # Methods it leaves out answer UNIMPLEMENTED, as the generated base class does.
    servicer = ScriptedWatch(scripts)  # type: ignore[abstract]
    server = grpc.aio.server()
    registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield scripts, servicer, registry_pb2_grpc.ModelRegistryServiceStub(channel)
    finally:
        await server.stop(None)


Fixture = tuple[list[Script], ScriptedWatch, registry_pb2_grpc.ModelRegistryServiceStub]


async def _watch(
    stub: registry_pb2_grpc.ModelRegistryServiceStub,
    waits: ManualClock,
    *,
    start_revision: int,
    limit: int,
    seen: list[Change] | None = None,
    **options: Any,
) -> list[Change]:
    """Watches until `limit` changes arrived; `seen` (given or new) collects them as they come."""

    def open_call(revision: int, remaining: float | None) -> Any:
        return stub.WatchModels(registry_pb2.WatchModelsRequest(start_revision=revision), timeout=remaining)

    seen = [] if seen is None else seen
    stream = resumable_watch(
        open_call,
        start_revision=start_revision,
        rng=random.Random(7),
        clock=waits,
        sleep=waits.sleep,
        **options,
    )
    async with aclosing(stream) as responses:
        async for response in responses:
            revision, seq = response.change.resource.removeprefix("models/r").split("-")
            seen.append((int(revision), int(seq)))
            if len(seen) == limit:
                break
    return seen


LOG: list[Change] = [(1, 0), (2, 0), (2, 1), (2, 2), (3, 0), (5, 0), (5, 1)]


async def test_a_stream_broken_inside_a_revision_goes_on_with_no_gap_and_no_repeat(stub: Fixture) -> None:
    scripts, servicer, channel_stub = stub
    scripts += [Script(LOG[:3]), Script(LOG[:5]), Script(LOG, end=None)]
    waits = ManualClock(0.0)

    seen = await _watch(channel_stub, waits, start_revision=1, limit=len(LOG))

    assert seen == LOG
    # Reopened at the revision of the last change received: 2 (its first change dropped as a repeat),
    # then 3 (likewise).
    assert servicer.starts == [1, 2, 3]
    # Each wait honours the server's RetryInfo.
    assert len(waits.sleeps) == 2
    assert all(wait >= RETRY_AFTER for wait in waits.sleeps)


async def test_the_waits_are_the_policy_schedule(stub: Fixture) -> None:
    scripts, servicer, channel_stub = stub
    policy = RetryPolicy(max_attempts=4, initial_backoff=1.0, max_backoff=3.0)
    no_retry_info = _status(grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
    scripts.append(Script([], end=no_retry_info))
    waits = ManualClock(0.0)

    with pytest.raises(StorageUnavailable):
        await _watch(channel_stub, waits, start_revision=1, limit=1, policy=policy)

    # max_attempts openings in all, and before each reopening a wait under that attempt's ceiling.
    assert servicer.starts == [1, 1, 1, 1]
    assert len(waits.sleeps) == 3
    assert all(
        0 <= wait <= ceiling for wait, ceiling in zip(waits.sleeps, backoff_ceilings(policy), strict=True)
    )


async def test_a_message_restores_the_whole_budget(stub: Fixture) -> None:
    scripts, servicer, channel_stub = stub
    # Every stream sends one new change, then breaks: far more breaks than max_attempts allows in a row.
    scripts += [Script([(revision, 0)]) for revision in range(1, 7)]
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)

    seen = await _watch(channel_stub, ManualClock(0.0), start_revision=1, limit=6, policy=policy)

    assert seen == [(revision, 0) for revision in range(1, 7)]
    assert servicer.starts == [1, 1, 2, 3, 4, 5]


async def test_no_reopening_is_started_past_the_deadline(stub: Fixture) -> None:
    scripts, servicer, channel_stub = stub
    scripts.append(Script([]))
    waits = ManualClock(0.0)

    # Jitter under 0.1 s and RetryInfo asking for 0.25 s: every wait is 0.25 s. Reopenings at 0.25, 0.5
    # and 0.75 fit in 0.9 s; one at 1.0 would not, so the watch gives up after its wait is chosen.
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=0.1)
    with pytest.raises(ShuttingDown):
        await _watch(channel_stub, waits, start_revision=1, limit=1, timeout=0.9, policy=policy)

    assert len(servicer.starts) == 4
    assert waits.sleeps == [RETRY_AFTER] * 3


async def test_other_errors_are_raised_at_once(stub: Fixture) -> None:
    scripts, servicer, channel_stub = stub
    scripts.append(Script([], end=COMPACTED))
    waits = ManualClock(0.0)

    with pytest.raises(RevisionCompacted):
        await _watch(channel_stub, waits, start_revision=1, limit=1)

    assert servicer.starts == [1]
    assert waits.sleeps == []


async def test_without_resume_unavailable_is_raised(stub: Fixture) -> None:
    scripts, servicer, channel_stub = stub
    scripts.append(Script(LOG[:2]))
    seen: list[Change] = []
    waits = ManualClock(0.0)

    with pytest.raises(ShuttingDown):
        await _watch(channel_stub, waits, start_revision=1, limit=len(LOG), seen=seen, resume=False)

    assert seen == LOG[:2]
    assert servicer.starts == [1]
    assert waits.sleeps == []
