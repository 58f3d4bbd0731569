"""The client's error mapping: rich statuses, built as the server builds them, become the right classes."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.client import errors
from modelplane.client.errors import (
    AliasConflict,
    EtagMismatch,
    FieldViolation,
    InvalidArgument,
    InvalidField,
    ModelNotFound,
    ModelplaneError,
    NoMatchingModel,
    NotFound,
    StorageUnavailable,
    Unavailable,
    Unknown,
    error_class_for,
    from_rpc_error,
)
from modelplane.v1 import registry_pb2


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _error_info(reason: str, metadata: dict[str, str] | None = None, domain: str = "modelplane") -> Message:
    info: Message = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
    return info


def rpc_error(
    code: grpc.StatusCode,
    message: str,
    details: Sequence[Message] = (),
    *,
    trailing: Sequence[tuple[str, str]] = (),
    initial: Sequence[tuple[str, str]] = (),
) -> grpc.aio.AioRpcError:
    """The error a grpc.aio call raises when the server aborts with this rich status."""
    proto = status_pb2.Status(code=code.value[0], message=message, details=[_packed(d) for d in details])
    status = rpc_status.to_status(proto)
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*status.trailing_metadata, *trailing),
        details=status.details,
        debug_error_string="",
    )


# Every documented reason with the code the server sends it with.
DOCUMENTED = [
    (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", errors.ModelNotFound),
    (grpc.StatusCode.NOT_FOUND, "MODEL_VERSION_NOT_FOUND", errors.ModelVersionNotFound),
    (grpc.StatusCode.NOT_FOUND, "ALIAS_NOT_FOUND", errors.AliasNotFound),
    (grpc.StatusCode.NOT_FOUND, "NO_MATCHING_MODEL", errors.NoMatchingModel),
    (grpc.StatusCode.ALREADY_EXISTS, "MODEL_ALREADY_EXISTS", errors.ModelAlreadyExists),
    (grpc.StatusCode.ABORTED, "ETAG_MISMATCH", errors.EtagMismatch),
    (grpc.StatusCode.ABORTED, "ALIAS_CONFLICT", errors.AliasConflict),
    (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_HAS_VERSIONS", errors.ModelHasVersions),
    (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_HAS_ALIASES", errors.VersionHasAliases),
    (grpc.StatusCode.FAILED_PRECONDITION, "VERSION_ARCHIVED", errors.VersionArchived),
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", errors.InvalidField),
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILTER", errors.InvalidFilter),
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", errors.InvalidPageToken),
    (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED", errors.RequestIdReused),
    (grpc.StatusCode.OUT_OF_RANGE, "REVISION_COMPACTED", errors.RevisionCompacted),
    (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE", errors.StorageUnavailable),
    (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", errors.ShuttingDown),
    (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING", errors.TokenMissing),
    (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID", errors.TokenInvalid),
    (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED", errors.RoleNotAllowed),
    (grpc.StatusCode.INTERNAL, "INTERNAL", errors.Internal),
]


@pytest.mark.parametrize(("code", "reason", "cls"), DOCUMENTED)
def test_every_documented_reason_maps_to_its_class(
    code: grpc.StatusCode, reason: str, cls: type[ModelplaneError]
) -> None:
    error = from_rpc_error(rpc_error(code, "it failed", [_error_info(reason, {"name": "models/x"})]))

    assert type(error) is cls
    assert isinstance(error, errors.CLASS_BY_CODE[code])
    assert error.code == code
    assert error.reason == reason
    assert error.message == "it failed"
    assert error.metadata == {"name": "models/x"}
    assert error.domain == "modelplane"


def test_every_status_code_but_ok_has_a_class() -> None:
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        cls = error_class_for(code)
        assert cls.code == code
        assert cls.default_reason == ""


def test_reason_classes_are_caught_by_their_code_class() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "no model", [_error_info("MODEL_NOT_FOUND")]))

    with pytest.raises(NotFound) as caught:
        raise error
    assert isinstance(caught.value, ModelNotFound)


def test_bad_request_gives_field_violations() -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="model_version.pricing.currency_code", description="must be 3 upper-case letters"
            ),
            error_details_pb2.BadRequest.FieldViolation(field="model_id", description="must not be empty"),
        ]
    )
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad", [_error_info("INVALID_FIELD"), bad_request])
    )

    assert isinstance(error, InvalidField)
    assert isinstance(error, InvalidArgument)
    assert error.field_violations == (
        FieldViolation("model_version.pricing.currency_code", "must be 3 upper-case letters"),
        FieldViolation("model_id", "must not be empty"),
    )


def test_retry_info_gives_retry_after() -> None:
    retry_info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.UNAVAILABLE, "database away", [_error_info("STORAGE_UNAVAILABLE"), retry_info]
        )
    )

    assert isinstance(error, StorageUnavailable)
    assert error.retry_after == 1.5


def test_no_matching_model_carries_the_rejections() -> None:
    failure = registry_pb2.ResolveModelFailure(
        rejections=[
            registry_pb2.CandidateRejection(
                model_version="models/small/versions/1",
                constraint="constraints.min_context_window",
                reason="context_window 8192 < 32000",
            ),
            registry_pb2.CandidateRejection(
                model_version="models/vision/versions/2",
                constraint="constraints.max_output_price",
                reason="output price 15000000 USD > 10000000 USD",
            ),
        ],
        candidate_count=7,
    )
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.NOT_FOUND, "no version matches", [_error_info("NO_MATCHING_MODEL"), failure]
        )
    )

    assert isinstance(error, NoMatchingModel)
    assert error.candidate_count == 7
    assert [(r.model_version, r.constraint) for r in error.rejections] == [
        ("models/small/versions/1", "constraints.min_context_window"),
        ("models/vision/versions/2", "constraints.max_output_price"),
    ]


def test_no_matching_model_without_the_detail_has_no_rejections() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "none", [_error_info("NO_MATCHING_MODEL")]))

    assert isinstance(error, NoMatchingModel)
    assert error.rejections == ()
    assert error.candidate_count == 0


def test_no_matching_model_count_from_error_info_metadata() -> None:
    info = _error_info("NO_MATCHING_MODEL", {"candidate_count": "4"})
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "none", [info]))

    assert isinstance(error, NoMatchingModel)
    assert error.candidate_count == 4


def test_unknown_reason_falls_back_to_the_code_class() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "gone", [_error_info("SOME_FUTURE_REASON")]))

    assert type(error) is NotFound
    assert error.reason == "SOME_FUTURE_REASON"


def test_reason_sent_with_another_code_does_not_hide_the_code() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "odd", [_error_info("ETAG_MISMATCH")]))

    assert type(error) is NotFound
    assert not isinstance(error, EtagMismatch)


def test_reason_of_another_domain_is_not_taken_for_ours() -> None:
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.ABORTED, "proxy", [_error_info("ALIAS_CONFLICT", domain="proxy.example.com")]
        )
    )

    assert type(error) is errors.Aborted
    assert not isinstance(error, AliasConflict)
    assert error.domain == "proxy.example.com"


def test_plain_status_without_details() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))

    assert type(error) is Unavailable
    assert error.reason == ""
    assert error.retry_after is None
    assert error.details == ()
    assert error.message == "connection refused"


def test_undecodable_details_leave_the_code_class() -> None:
    raw = grpc.aio.AioRpcError(
        grpc.StatusCode.ABORTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\xff\xff")),
        details="garbled",
        debug_error_string="",
    )
    error = from_rpc_error(raw)

    assert type(error) is errors.Aborted
    assert error.message == "garbled"


def test_request_id_from_trailing_then_initial_metadata() -> None:
    trailing = from_rpc_error(
        rpc_error(
            grpc.StatusCode.INTERNAL,
            "internal error",
            [_error_info("INTERNAL")],
            trailing=[("x-request-id", "req-trailing")],
            initial=[("x-request-id", "req-initial")],
        )
    )
    initial = from_rpc_error(
        rpc_error(grpc.StatusCode.INTERNAL, "internal error", initial=[("x-request-id", "req-initial")])
    )

    assert trailing.request_id == "req-trailing"
    assert initial.request_id == "req-initial"
    assert "req-trailing" in str(trailing)


def test_request_id_from_request_info() -> None:
    info = error_details_pb2.RequestInfo(request_id="req-detail")
    error = from_rpc_error(rpc_error(grpc.StatusCode.INTERNAL, "internal error", [info]))

    assert error.request_id == "req-detail"


def test_unknown_detail_types_are_kept_packed() -> None:
    foreign = registry_pb2.Model(name="models/odd")
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.NOT_FOUND, "x", [_error_info("MODEL_NOT_FOUND"), foreign])
    )

    packed = [d for d in error.details if isinstance(d, any_pb2.Any)]
    assert len(packed) == 1
    assert packed[0].Is(registry_pb2.Model.DESCRIPTOR)


def test_bare_rpc_error_is_unknown() -> None:
    error = from_rpc_error(grpc.RpcError())

    assert type(error) is Unknown
    assert error.code == grpc.StatusCode.UNKNOWN


def test_str_names_code_reason_and_message() -> None:
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.NOT_FOUND, "model models/x not found", [_error_info("MODEL_NOT_FOUND")])
    )

    assert str(error) == "NOT_FOUND MODEL_NOT_FOUND: model models/x not found"


def test_errors_can_be_raised_by_hand() -> None:
    # Fakes of the registry in consumers' tests raise these directly.
    error = ModelNotFound("model models/x not found")

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "MODEL_NOT_FOUND"
    assert error.field_violations == ()
