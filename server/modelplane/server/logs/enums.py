"""The log collector's enums three ways: proto numbers, domain values and their stored SQL forms, one
table each, read by the conversions (convert.py) and the ingestion rows (columns.py)."""

from __future__ import annotations

from modelplane.server.deployments.convert import SLOT_FROM_PROTO
from modelplane.server.guardrails.convert import (
    DECISION_FROM_PROTO,
    SEVERITY_FROM_PROTO,
)
from modelplane.server.logs.domain import (
    EventKind,
    GroupBy,
    InferenceStatus,
    LogLevel,
    RoutingOutcome,
)
from modelplane.v1 import guardrails_pb2
from modelplane.v1 import logs_pb2 as pb

LEVEL_TO_PROTO = {
    LogLevel.DEBUG: pb.LOG_LEVEL_DEBUG,
    LogLevel.INFO: pb.LOG_LEVEL_INFO,
    LogLevel.WARNING: pb.LOG_LEVEL_WARNING,
    LogLevel.ERROR: pb.LOG_LEVEL_ERROR,
    LogLevel.FATAL: pb.LOG_LEVEL_FATAL,
}
LEVEL_FROM_PROTO = {number: level for level, number in LEVEL_TO_PROTO.items()}
KIND_TO_PROTO = {
    EventKind.MESSAGE: pb.LOG_EVENT_KIND_MESSAGE,
    EventKind.INFERENCE: pb.LOG_EVENT_KIND_INFERENCE,
    EventKind.ROUTING: pb.LOG_EVENT_KIND_ROUTING,
    EventKind.GUARDRAIL: pb.LOG_EVENT_KIND_GUARDRAIL,
    EventKind.CONTROL_PLANE_CHANGE: pb.LOG_EVENT_KIND_CONTROL_PLANE_CHANGE,
}
STATUS_TO_PROTO = {
    InferenceStatus.OK: pb.INFERENCE_STATUS_OK,
    InferenceStatus.ERROR: pb.INFERENCE_STATUS_ERROR,
    InferenceStatus.TIMEOUT: pb.INFERENCE_STATUS_TIMEOUT,
    InferenceStatus.CANCELLED: pb.INFERENCE_STATUS_CANCELLED,
}
STATUS_FROM_PROTO = {number: s for s, number in STATUS_TO_PROTO.items()}
OUTCOME_TO_PROTO = {
    RoutingOutcome.OK: pb.ROUTING_OUTCOME_OK,
    RoutingOutcome.ERROR: pb.ROUTING_OUTCOME_ERROR,
    RoutingOutcome.TIMEOUT: pb.ROUTING_OUTCOME_TIMEOUT,
    RoutingOutcome.NO_ENDPOINT: pb.ROUTING_OUTCOME_NO_ENDPOINT,
    RoutingOutcome.FALLBACK: pb.ROUTING_OUTCOME_FALLBACK,
}
OUTCOME_FROM_PROTO = {number: o for o, number in OUTCOME_TO_PROTO.items()}
GROUP_TO_PROTO = {
    GroupBy.SERVICE: pb.LOG_GROUP_BY_SERVICE,
    GroupBy.MODEL_VERSION: pb.LOG_GROUP_BY_MODEL_VERSION,
    GroupBy.DEPLOYMENT: pb.LOG_GROUP_BY_DEPLOYMENT,
    GroupBy.TRAFFIC_SLOT: pb.LOG_GROUP_BY_TRAFFIC_SLOT,
    GroupBy.POLICY: pb.LOG_GROUP_BY_POLICY,
    GroupBy.KIND: pb.LOG_GROUP_BY_KIND,
    GroupBy.TIME_BUCKET: pb.LOG_GROUP_BY_TIME_BUCKET,
}
GROUP_FROM_PROTO = {number: g for g, number in GROUP_TO_PROTO.items()}

# The stored forms of the proto numbers a client may send (UNSPECIFIED and unknown numbers are absent,
# except the severity's: a check without violations has none).
LEVEL_STORED = {number: level.value for number, level in LEVEL_FROM_PROTO.items()}
ERROR_LEVEL_NUMBERS = frozenset({pb.LOG_LEVEL_ERROR, pb.LOG_LEVEL_FATAL})
SLOT_STORED = {number: slot.value for number, slot in SLOT_FROM_PROTO.items()}
STATUS_STORED = {number: status.value for number, status in STATUS_FROM_PROTO.items()}
OUTCOME_STORED = {number: outcome.value for number, outcome in OUTCOME_FROM_PROTO.items()}
DECISION_STORED = {number: decision.name.lower() for number, decision in DECISION_FROM_PROTO.items()}
SEVERITY_STORED = {number: severity.name.lower() for number, severity in SEVERITY_FROM_PROTO.items()}
SEVERITY_STORED[guardrails_pb2.SEVERITY_UNSPECIFIED] = ""
