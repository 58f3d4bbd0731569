"""OTLP's LogsService over gRPC, on modelplane's port: log records of services instrumented with
OpenTelemetry are mapped to log events (otlp_records) and stored by the log collector's service, the same
way as WriteLogEvents stores a batch (checks, pricing, idempotency, acknowledgement after COMMIT)."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from modelplane.server.context import caller
from modelplane.server.errors import InvalidArgument
from modelplane.server.logs.domain import MAX_BATCH_EVENTS, LogBatch
from modelplane.server.logs.otlp_records import OTLP_CLIENT_ID, Unmappable, map_request
from modelplane.server.logs.service import LogService
from modelplane.v1 import common_pb2
from modelplane.v1.error_reason_pb2 import ErrorReason

Context = grpc.aio.ServicerContext[object, object]

# The full method name, for auth's table and the interceptor.
EXPORT_METHOD = f"/{logs_service_pb2.DESCRIPTOR.services_by_name['LogsService'].full_name}/Export"
# Problems named in a partial success's error_message, at most: the count says how many there were.
MAX_NAMED_REJECTIONS = 5


def _error_message(rejected: list[tuple[str, str]]) -> str:
    named = "; ".join(f"{path}: {why}" for path, why in rejected[:MAX_NAMED_REJECTIONS])
    more = len(rejected) - MAX_NAMED_REJECTIONS
    return f"{len(rejected)} log records rejected: {named}" + (f"; and {more} more" if more > 0 else "")


class OtlpLogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    # Mapping reads every text it keeps and refuses a record whose text holds the NUL character, so the
    # interceptor's walk (which would refuse the whole request) is spared.
    TEXT_CHECKED_METHODS = frozenset({EXPORT_METHOD})

    def __init__(self, service: LogService) -> None:
        self._service = service

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: Context
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        try:
            mapped = map_request(request, MAX_BATCH_EVENTS)
        except Unmappable as exc:
            raise InvalidArgument.field(
                "resource_logs",
                f"{exc}; export smaller batches (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE)",
                reason=ErrorReason.ERROR_REASON_BATCH_TOO_LARGE,
            ) from None
        scope = caller().scope
        if scope is not None:
            # The generic scope check reads the request's fields; here the resources are in attributes, so
            # the events they became are checked: a scoped token names nothing outside its scope.
            for event in mapped.events:
                scope.check(
                    common_pb2.EventLinks(
                        model_version=event.links.model_version, deployment=event.links.deployment
                    )
                )
        rejected = list(mapped.rejected)
        if mapped.events:
            batch = LogBatch(client_id=OTLP_CLIENT_ID, sequence=0, dropped_since_last=0, events=mapped.events)
            _, left_out = await self._service.write_each(batch)
            rejected.extend((mapped.paths[i], f"{v.field}: {v.description}") for i, v in left_out)
        if not rejected:
            return logs_service_pb2.ExportLogsServiceResponse()
        return logs_service_pb2.ExportLogsServiceResponse(
            partial_success=logs_service_pb2.ExportLogsPartialSuccess(
                rejected_log_records=len(rejected), error_message=_error_message(rejected)
            )
        )
