"""The methods of the guardrails monitor's clients (modelplane.v1.GuardrailService), async and sync alike.

Methods take keyword arguments and return the protobuf messages of modelplane.v1.guardrails_pb2. Mutations
carry a request id (a random UUID unless the caller gives one), so a retried mutation runs once. So does
CheckContent: a check is a pure function of the policy revision and the text, and its request id keeps a
retry from storing its violation records twice. CheckStream, a bidirectional stream, is each client's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from google.protobuf import field_mask_pb2

from modelplane.client.base import ensure_request_id
from modelplane.client.methods import Paged, Unary, duration, page, pages, timestamp, unary
from modelplane.v1 import common_pb2
from modelplane.v1 import guardrails_pb2 as pb

__all__ = ["GuardrailMethods", "check_stream_start"]

# Policies.


def create_policy(
    *, policy_id: str, policy: pb.Policy, request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.CreatePolicyResponse, pb.Policy]:
    """Creates "policies/{policy_id}" at revision 1. Raises PolicyAlreadyExists, InvalidRule (a rule that
    does not compile, with its field path), FallbackBreaksPolicy, InvalidArgument."""
    request = pb.CreatePolicyRequest(
        policy_id=policy_id, policy=policy, request_id=ensure_request_id(request_id)
    )
    return Unary("CreatePolicy", request, lambda response: response.policy, timeout)


def get_policy(
    *, name: str, revision: int = 0, timeout: float | None = None
) -> Unary[pb.GetPolicyResponse, pb.Policy]:
    """Gets a policy at its latest revision, or at `revision`. Raises PolicyNotFound,
    PolicyRevisionNotFound."""
    request = pb.GetPolicyRequest(name=name, revision=revision)
    return Unary("GetPolicy", request, lambda response: response.policy, timeout)


def list_policies(
    *, filter: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListPoliciesResponse, pb.Policy]:
    """Policies matching the filter, by name. Raises InvalidFilter, InvalidPageToken, InvalidArgument."""
    request = pb.ListPoliciesRequest(filter=filter, page_size=page_size, page_token=page_token)
    return Paged("ListPolicies", request, lambda response: response.policies, timeout)


def update_policy(
    *,
    policy: pb.Policy,
    update_mask: Sequence[str],
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.UpdatePolicyResponse, pb.Policy]:
    """Changes the fields of `policy` named in update_mask ("*": all), making a new revision; a set etag
    must be current. Raises PolicyNotFound, EtagMismatch, InvalidRule, FallbackBreaksPolicy,
    InvalidArgument."""
    request = pb.UpdatePolicyRequest(
        policy=policy,
        update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
        request_id=ensure_request_id(request_id),
    )
    return Unary("UpdatePolicy", request, lambda response: response.policy, timeout)


def delete_policy(
    *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
) -> Unary[pb.DeletePolicyResponse, None]:
    """Deletes a policy and its revisions (its violation records are kept). Raises PolicyNotFound,
    EtagMismatch."""
    request = pb.DeletePolicyRequest(name=name, etag=etag, request_id=ensure_request_id(request_id))
    return Unary("DeletePolicy", request, lambda response: None, timeout)


def list_policy_revisions(
    *, name: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListPolicyRevisionsResponse, pb.Policy]:
    """The policy at each of its revisions, newest first. Raises PolicyNotFound, InvalidPageToken."""
    request = pb.ListPolicyRevisionsRequest(name=name, page_size=page_size, page_token=page_token)
    return Paged("ListPolicyRevisions", request, lambda response: response.policies, timeout)


# Checks and records.


def check_content(
    *,
    policy: str,
    text: str,
    policy_revision: int = 0,
    links: common_pb2.EventLinks | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Unary[pb.CheckContentResponse, pb.CheckVerdict]:
    """Checks `text` against `policy` (at `policy_revision`, 0: the latest) and returns the verdict;
    `links` tie any violation records to the event the text belongs to. Raises PolicyNotFound,
    PolicyRevisionNotFound, TextTooLarge (over 1,000,000 characters), InvalidArgument."""
    request = pb.CheckContentRequest(
        policy=policy,
        policy_revision=policy_revision,
        text=text,
        links=links,
        request_id=ensure_request_id(request_id),
    )
    return Unary("CheckContent", request, lambda response: response.verdict, timeout)


def check_stream_start(
    *, policy: str, policy_revision: int, links: common_pb2.EventLinks | None, request_id: str | None
) -> pb.CheckStreamStart:
    """The first message of a CheckStream (each client opens the stream its own way), with a request id."""
    return pb.CheckStreamStart(
        policy=policy, policy_revision=policy_revision, links=links, request_id=ensure_request_id(request_id)
    )


def list_violations(
    *, filter: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
) -> Paged[pb.ListViolationsResponse, pb.ViolationRecord]:
    """Violation records matching the filter, newest first. Raises InvalidFilter, InvalidPageToken,
    InvalidArgument."""
    request = pb.ListViolationsRequest(filter=filter, page_size=page_size, page_token=page_token)
    return Paged("ListViolations", request, lambda response: response.violations, timeout)


def aggregate_violations(
    *,
    group_by: Sequence[pb.ViolationGroupBy.ValueType] = (),
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    bucket_width: timedelta | None = None,
    policy: str = "",
    timeout: float | None = None,
) -> Unary[pb.AggregateViolationsResponse, list[pb.ViolationGroup]]:
    """Counts and rates of checks and violations in [start_time, end_time) (timezone-aware; None: open),
    grouped by `group_by` (empty: one group), ordered by their keys. `bucket_width` goes with
    VIOLATION_GROUP_BY_TIME_BUCKET. Raises InvalidArgument."""
    request = pb.AggregateViolationsRequest(
        group_by=list(group_by),
        start_time=timestamp(start_time),
        end_time=timestamp(end_time),
        bucket_width=duration(bucket_width),
        policy=policy,
    )
    return Unary("AggregateViolations", request, lambda response: list(response.groups), timeout)


class GuardrailMethods:
    """The methods of GuardrailService's clients but CheckStream. The `*_page` methods return one page (the
    whole response); their plain-named twins iterate over every item of every page from `page_token` on."""

    create_policy = unary(create_policy)
    get_policy = unary(get_policy)
    list_policies_page = page(list_policies)
    list_policies = pages(list_policies)
    update_policy = unary(update_policy)
    delete_policy = unary(delete_policy)
    list_policy_revisions_page = page(list_policy_revisions)
    list_policy_revisions = pages(list_policy_revisions)
    check_content = unary(check_content)
    list_violations_page = page(list_violations)
    list_violations = pages(list_violations)
    aggregate_violations = unary(aggregate_violations)
