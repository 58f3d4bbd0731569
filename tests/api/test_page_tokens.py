"""Edited page tokens are INVALID_ARGUMENT / INVALID_PAGE_TOKEN on every list keyed by a time, never INTERNAL.

Each test takes a real next_page_token, puts an edge timestamp in place of its time key, and sends it back
with a valid checksum: what a caller who read the token's (unsigned, documented) format could forge.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import timestamp_pb2

from modelplane.server.pagination import encode_page_token
from modelplane.v1 import guardrails_pb2 as gpb
from modelplane.v1 import guardrails_pb2_grpc, logs_pb2_grpc, registry_pb2_grpc
from modelplane.v1 import logs_pb2 as lpb
from modelplane.v1 import registry_pb2 as pb
from tests.support import error_info, field_violations

CALL_TIMEOUT = 10.0
# Year 1 at +14:00 is 31 December of year 0 in UTC: no datetime holds it, and Postgres is asked in UTC.
EDGE_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00",
    "not a time",
]
# The checksum is 8 bytes after the JSON body (pagination._CHECKSUM_SIZE).
CHECKSUM_SIZE = 8


def _forged(token: str, time_key: str) -> str:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    body = json.loads(raw[:-CHECKSUM_SIZE])
    keys = body["k"]
    assert isinstance(keys[0], str), keys
    datetime.fromisoformat(keys[0])  # the first key is a time
    return encode_page_token(body["q"], [time_key, *keys[1:]])


def _assert_invalid_page_token(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error_info(error).reason == "INVALID_PAGE_TOKEN"
    assert field_violations(error) == ["page_token"]


@pytest.mark.parametrize("time_key", EDGE_TIMES)
@pytest.mark.parametrize("order_by", ["create_time", "create_time desc", "update_time"])
async def test_list_models_refuses_a_forged_time_key(
    channel: grpc.aio.Channel, order_by: str, time_key: str
) -> None:
    stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    for i in range(2):
        await stub.CreateModel(
            pb.CreateModelRequest(model_id=f"paged-{i}", model=pb.Model(provider="openai")),
            timeout=CALL_TIMEOUT,
        )
    first = await stub.ListModels(pb.ListModelsRequest(page_size=1, order_by=order_by), timeout=CALL_TIMEOUT)
    assert first.next_page_token
    # The real token works; only the edited one is refused.
    second = await stub.ListModels(
        pb.ListModelsRequest(page_size=1, order_by=order_by, page_token=first.next_page_token),
        timeout=CALL_TIMEOUT,
    )
    assert len(second.models) == 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListModels(
            pb.ListModelsRequest(
                page_size=1, order_by=order_by, page_token=_forged(first.next_page_token, time_key)
            ),
            timeout=CALL_TIMEOUT,
        )
    _assert_invalid_page_token(raised.value)


@pytest.mark.parametrize("time_key", EDGE_TIMES)
async def test_list_violations_refuses_a_forged_time_key(channel: grpc.aio.Channel, time_key: str) -> None:
    stub = guardrails_pb2_grpc.GuardrailServiceStub(channel)
    policy = gpb.Policy(
        rules=[
            gpb.Rule(
                id="words",
                severity=gpb.SEVERITY_WARNING,
                category="language",
                banned_terms=gpb.BannedTermsRule(terms=["darn"]),
            )
        ],
        fail_mode=gpb.FAIL_MODE_OPEN,
    )
    await stub.CreatePolicy(gpb.CreatePolicyRequest(policy_id="paged", policy=policy), timeout=CALL_TIMEOUT)
    for _ in range(2):
        await stub.CheckContent(
            gpb.CheckContentRequest(policy="policies/paged", text="darn"), timeout=CALL_TIMEOUT
        )
    first = await stub.ListViolations(gpb.ListViolationsRequest(page_size=1), timeout=CALL_TIMEOUT)
    assert first.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListViolations(
            gpb.ListViolationsRequest(page_size=1, page_token=_forged(first.next_page_token, time_key)),
            timeout=CALL_TIMEOUT,
        )
    _assert_invalid_page_token(raised.value)


@pytest.mark.parametrize("time_key", EDGE_TIMES)
async def test_query_log_events_refuses_a_forged_time_key(channel: grpc.aio.Channel, time_key: str) -> None:
    stub = logs_pb2_grpc.LogServiceStub(channel)
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    events = [
        lpb.LogEvent(event_id=str(uuid.uuid4()), event_time=now, service="paged", level=lpb.LOG_LEVEL_INFO)
        for _ in range(2)
    ]
    await stub.WriteLogEvents(
        lpb.WriteLogEventsRequest(batch=lpb.LogBatch(events=events)), timeout=CALL_TIMEOUT
    )
    query = lpb.QueryLogEventsRequest(page_size=1, filter='service = "paged"')
    first = await stub.QueryLogEvents(query, timeout=CALL_TIMEOUT)
    assert first.next_page_token
    query.page_token = _forged(first.next_page_token, time_key)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.QueryLogEvents(query, timeout=CALL_TIMEOUT)
    _assert_invalid_page_token(raised.value)
