"""Every Duration and Timestamp a request carries (outside guardrail policies) is checked against the protobuf
spec before it is read: `{seconds: 1, nanos: 2000000000}` is INVALID_ARGUMENT on its path, never 3 s."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from modelplane.v1 import deployments_pb2 as dpb
from modelplane.v1 import deployments_pb2_grpc, guardrails_pb2_grpc, logs_pb2_grpc
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import logs_pb2 as lpb
from tests.support import error_info, field_violations

TIMEOUT = 10.0
BAD_DURATIONS = [
    pytest.param(duration_pb2.Duration(seconds=1, nanos=2_000_000_000), id="nanos-over-a-second"),
    pytest.param(duration_pb2.Duration(seconds=1, nanos=-1), id="mixed-signs"),
    pytest.param(duration_pb2.Duration(seconds=315_576_000_001), id="seconds-beyond-10000-years"),
]
BAD_TIMESTAMPS = [
    pytest.param(timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=-1), id="negative-nanos"),
    pytest.param(
        timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=2_000_000_000), id="nanos-over-a-second"
    ),
    pytest.param(timestamp_pb2.Timestamp(seconds=253_402_300_800), id="year-10000"),
]

Call = Callable[[grpc.aio.Channel], Awaitable[object]]


def _now() -> timestamp_pb2.Timestamp:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return now


def _event(**fields: object) -> lpb.LogEvent:
    settings: dict[str, object] = {"event_time": _now(), **fields}
    return lpb.LogEvent(event_id=str(uuid.uuid4()), service="timing", level=lpb.LOG_LEVEL_INFO, **settings)  # type: ignore[arg-type]


def _duration_calls(bad: duration_pb2.Duration) -> list[tuple[str, Call]]:
    def plan(channel: grpc.aio.Channel) -> Awaitable[object]:
        step = dpb.RolloutStep(weight_bp=1000, duration=bad)
        rollout = dpb.Rollout(
            target_version="models/chat/versions/2", strategy=dpb.ROLLOUT_STRATEGY_CANARY, steps=[step]
        )
        return deployments_pb2_grpc.DeploymentServiceStub(channel).PlanRollout(
            dpb.PlanRolloutRequest(parent="deployments/web", rollout=rollout), timeout=TIMEOUT
        )

    def rollback(channel: grpc.aio.Channel) -> Awaitable[object]:
        return deployments_pb2_grpc.DeploymentServiceStub(channel).RollbackRollout(
            dpb.RollbackRolloutRequest(
                name="deployments/web/rollouts/1", mode=dpb.ROLLBACK_MODE_STEPPED, step_interval=bad
            ),
            timeout=TIMEOUT,
        )

    def write(channel: grpc.aio.Channel) -> Awaitable[object]:
        event = _event(inference=lpb.InferencePayload(provider="local", latency=bad))
        return logs_pb2_grpc.LogServiceStub(channel).WriteLogEvents(
            lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[event])), timeout=TIMEOUT
        )

    return [
        ("rollout.steps[0].duration", plan),
        ("step_interval", rollback),
        ("batch.events[0].inference.latency", write),
    ]


def _timestamp_calls(bad: timestamp_pb2.Timestamp) -> list[tuple[str, Call]]:
    def write(channel: grpc.aio.Channel) -> Awaitable[object]:
        return logs_pb2_grpc.LogServiceStub(channel).WriteLogEvents(
            lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=[_event(event_time=bad)])), timeout=TIMEOUT
        )

    def aggregate(channel: grpc.aio.Channel) -> Awaitable[object]:
        return guardrails_pb2_grpc.GuardrailServiceStub(channel).AggregateViolations(
            gpb.AggregateViolationsRequest(start_time=bad), timeout=TIMEOUT
        )

    def shadow_report(channel: grpc.aio.Channel) -> Awaitable[object]:
        return guardrails_pb2_grpc.GuardrailServiceStub(channel).GetShadowReport(
            gpb.GetShadowReportRequest(name="policies/missing", end_time=bad), timeout=TIMEOUT
        )

    return [("batch.events[0].event_time", write), ("start_time", aggregate), ("end_time", shadow_report)]


async def _assert_refused(channel: grpc.aio.Channel, path: str, call: Call) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    assert error_info(raised.value).reason == "INVALID_FIELD"
    assert path in field_violations(raised.value)


@pytest.mark.parametrize("bad", BAD_DURATIONS)
async def test_bad_durations_are_refused_on_their_path(
    channel: grpc.aio.Channel, bad: duration_pb2.Duration
) -> None:
    for path, call in _duration_calls(bad):
        await _assert_refused(channel, path, call)


@pytest.mark.parametrize("bad", BAD_TIMESTAMPS)
async def test_bad_timestamps_are_refused_on_their_path(
    channel: grpc.aio.Channel, bad: timestamp_pb2.Timestamp
) -> None:
    for path, call in _timestamp_calls(bad):
        await _assert_refused(channel, path, call)
