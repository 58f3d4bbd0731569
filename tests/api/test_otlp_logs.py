"""The OTLP logs receiver: LogsService/Export on modelplane's port maps GenAI log records to inference
events, stores them like WriteLogEvents (registry pricing, idempotency by log.record.uid), and answers the
records it cannot map with OTLP's partial success instead of failing the export."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from modelplane.client import connect
from modelplane.server.app import ModelplaneServer
from modelplane.v1 import logs_pb2 as mp_logs
from modelplane.v1 import registry_pb2
from tests.support.rich_errors import rich

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")
# 1 USD per million input tokens, 4 USD per million output tokens.
PRICING = registry_pb2.TokenPricing(
    currency_code="USD", input_micros_per_million=1_000_000, output_micros_per_million=4_000_000
)


def _value(value: Any) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    return common_pb2.AnyValue(string_value=value)


def record(body: str = "chat done", *, trace: bool = True, **attributes: Any) -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(
        time_unix_nano=time.time_ns(),
        severity_number=logs_pb2.SEVERITY_NUMBER_INFO,
        body=common_pb2.AnyValue(string_value=body),
        trace_id=TRACE_ID if trace else b"",
        span_id=SPAN_ID if trace else b"",
        attributes=[
            common_pb2.KeyValue(key=k.replace("__", "."), value=_value(v)) for k, v in attributes.items()
        ],
    )


def export(
    *records: logs_pb2.LogRecord, service: str | None = "Chat-API"
) -> logs_service_pb2.ExportLogsServiceRequest:
    resource = resource_pb2.Resource(
        attributes=[] if service is None else [common_pb2.KeyValue(key="service.name", value=_value(service))]
    )
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(resource=resource, scope_logs=[logs_pb2.ScopeLogs(log_records=records)])
        ]
    )


GENAI: dict[str, Any] = {
    "gen_ai__provider__name": "openai",
    "gen_ai__request__model": "models/story/versions/1",
    "gen_ai__response__model": "gpt-4o-2024-08-06",
    "gen_ai__usage__input_tokens": 1000,
    "gen_ai__usage__output_tokens": 250,
    "gen_ai__client__operation__duration": 0.75,
    "gen_ai__operation__name": "chat",
}


@pytest.fixture
async def stub(server: ModelplaneServer, channel: grpc.aio.Channel) -> logs_service_pb2_grpc.LogsServiceStub:
    async with connect(server.target) as connection:
        await connection.registry.create_model(model_id="story", model=registry_pb2.Model(provider="openai"))
        await connection.registry.create_model_version(
            parent="models/story",
            model_version=registry_pb2.ModelVersion(
                source_uri="openai:gpt-4o",
                capabilities=[registry_pb2.CAPABILITY_CHAT],
                context_window=8_000,
                max_output_tokens=1_000,
                pricing=PRICING,
            ),
        )
    return logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]


async def _events(server: ModelplaneServer, filter: str = "") -> list[mp_logs.LogEvent]:
    async with connect(server.target) as connection:
        return [e async for e in connection.logs.query_log_events(filter=filter)]


async def test_a_genai_record_is_a_priced_inference_event_linked_to_its_trace(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub
) -> None:
    response = await stub.Export(export(record(**GENAI, log__record__uid="01JD3X8Z6Q7R9S0T1V2W3X4Y5Z")))
    assert not response.HasField("partial_success")
    (event,) = await _events(server, 'service = "chat-api"')
    assert event.event_id == "01JD3X8Z6Q7R9S0T1V2W3X4Y5Z"
    assert event.level == mp_logs.LOG_LEVEL_INFO
    assert event.message == "chat done"
    assert (event.links.trace_id, event.links.span_id) == (TRACE_ID.hex(), SPAN_ID.hex())
    assert event.links.model_version == "models/story/versions/1"
    inference = event.inference
    assert (inference.provider, inference.input_tokens, inference.output_tokens) == ("openai", 1000, 250)
    assert inference.latency.ToMicroseconds() == 750_000
    assert inference.status == mp_logs.INFERENCE_STATUS_OK
    # Priced from the registry version, as an event sent without a cost is: 1000 + 1000 micro-USD.
    assert (inference.cost.currency_code, inference.cost.micros, inference.cost_from_registry) == (
        "USD",
        2000,
        True,
    )
    assert event.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"


async def test_an_export_sent_again_is_stored_once(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub
) -> None:
    # One record with a uid, one without: the second is known again by a hash of what it says.
    request = export(record(**GENAI, log__record__uid="uid-1"), record("no uid", **GENAI))
    await stub.Export(request)
    await stub.Export(request)
    assert len(await _events(server, 'service = "chat-api"')) == 2
    async with connect(server.target) as connection:
        (stats,) = (await connection.logs.get_ingestion_stats(client_id="otlp")).clients
    assert (stats.received, stats.accepted, stats.duplicates) == (4, 2, 2)


async def test_an_error_type_makes_a_failed_inference(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub
) -> None:
    await stub.Export(
        export(
            record(**{**GENAI, "error__type": "timeout"}),
            record(**{**GENAI, "error__type": "RateLimitError"}),
        )
    )
    statuses = sorted(e.inference.status for e in await _events(server, 'service = "chat-api"'))
    assert statuses == [mp_logs.INFERENCE_STATUS_ERROR, mp_logs.INFERENCE_STATUS_TIMEOUT]


async def test_records_that_cannot_map_are_rejected_and_the_rest_stored(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub
) -> None:
    no_time = record(**GENAI)
    no_time.time_unix_nano = 0
    bad_trace = record(**GENAI)
    bad_trace.trace_id = b"\x01\x02"
    request = export(
        record("fine", trace=False),
        no_time,
        record(**{**GENAI, "gen_ai__usage__input_tokens": -1}),
        bad_trace,
        record(**GENAI, log__record__uid="not a valid id"),
        record("a NUL \x00 here"),
    )
    request.resource_logs.append(export(record("whose service?"), service=None).resource_logs[0])
    response = await stub.Export(request)
    assert response.partial_success.rejected_log_records == 6
    message = response.partial_success.error_message
    assert message.startswith(
        "6 log records rejected: resource_logs[0].scope_logs[0].log_records[1]: time_unix_nano"
    )
    assert "log_records[2]: attribute gen_ai.usage.input_tokens must not be negative" in message
    assert "and 1 more" in message
    (stored,) = await _events(server, 'service = "chat-api"')
    assert stored.message == "fine"


async def test_an_event_time_outside_the_window_is_rejected_after_mapping(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub
) -> None:
    old = record("long ago", **GENAI)
    old.time_unix_nano = 1_000_000_000 * 86400 * 365  # 1971
    response = await stub.Export(export(old, record("now")))
    assert response.partial_success.rejected_log_records == 1
    assert "log_records[0]: batch.events[0].event_time: is older than the retention window" in (
        response.partial_success.error_message
    )
    assert [e.message for e in await _events(server, 'service = "chat-api"')] == ["now"]


async def test_an_export_of_too_many_records_is_refused_whole(
    server: ModelplaneServer, stub: logs_service_pb2_grpc.LogsServiceStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Export(export(*(record(f"r{i}") for i in range(1001))))
    error = rich(raised.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "BATCH_TOO_LARGE"
    assert error.field_paths == ["resource_logs"]
    assert await _events(server, 'service = "chat-api"') == []
