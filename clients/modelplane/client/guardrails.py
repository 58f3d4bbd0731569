"""The typed async client of the guardrails monitor (modelplane.v1.GuardrailService).

Methods take keyword arguments and return the protobuf messages of modelplane.v1.guardrails_pb2. Every
unary call has a deadline (the client's `timeout`, 10 s unless changed; each method takes `timeout=` to
override it), and every failure is raised as a `modelplane.client.errors.ModelplaneError` subclass.

Retries: a unary call that fails with UNAVAILABLE is retried with capped exponential backoff and jitter within
its one deadline, as in the registry client. Mutations carry a request id (a random UUID unless the caller
gives one), so a retried mutation runs once. So does CheckContent: a check is a pure function of the policy
revision and the text, and its request id keeps a retry from storing its violation records twice.

CheckStream is not retried (the text already sent cannot be replayed by the client on its own): open it with
`async with client.check_stream(policy=...) as stream`, `await stream.send(chunk)` as text is generated, watch
`stream.blocked` (or `await stream.wait_blocked()`) to stop streaming to the user as soon as a block is
certain, and `await stream.finish()` for the final verdict.
"""

# The `timeout` parameters are gRPC deadlines handed to the channel, not asyncio timeouts.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from modelplane.client.base import ServiceClient, ensure_request_id
from modelplane.client.errors import ModelplaneError, from_rpc_error
from modelplane.client.retry import RetryPolicy
from modelplane.v1 import common_pb2, guardrails_pb2, guardrails_pb2_grpc

if TYPE_CHECKING:
    from modelplane.client.channel import Connection
    from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceAsyncStub

__all__ = ["DEFAULT_STREAM_TIMEOUT", "CheckStreamSession", "GuardrailClient"]

# Seconds a CheckStream may stay open unless the caller says otherwise: long enough for a slow generation,
# short enough that a forgotten stream does not hold a server slot for ever.
DEFAULT_STREAM_TIMEOUT = 300.0


_CallT = grpc.aio.StreamStreamCall[guardrails_pb2.CheckStreamRequest, guardrails_pb2.CheckStreamResponse]


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


class GuardrailClient(ServiceClient):
    """Client of GuardrailService, built from a `Connection` or from a grpc.aio channel.

    Used as `async with`, it closes what it was built from (the connection or the channel) on exit; do not
    do that with a channel other code still uses.
    """

    def __init__(
        self,
        source: Connection | grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(source, metadata=metadata, timeout=timeout, retry=retry)
        self._stub: GuardrailServiceAsyncStub = guardrails_pb2_grpc.GuardrailServiceStub(self._channel)

    # Policies.

    async def create_policy(
        self,
        *,
        policy_id: str,
        policy: guardrails_pb2.Policy,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> guardrails_pb2.Policy:
        """Creates "policies/{policy_id}" at revision 1. Raises PolicyAlreadyExists, InvalidRule (a rule that
        does not compile, with its field path), FallbackBreaksPolicy, InvalidArgument."""
        request = guardrails_pb2.CreatePolicyRequest(
            policy_id=policy_id, policy=policy, request_id=ensure_request_id(request_id)
        )
        response = await self._unary(self._stub.CreatePolicy, request, timeout)
        return response.policy

    async def get_policy(
        self, *, name: str, revision: int = 0, timeout: float | None = None
    ) -> guardrails_pb2.Policy:
        """Gets a policy at its latest revision, or at `revision`. Raises PolicyNotFound,
        PolicyRevisionNotFound."""
        request = guardrails_pb2.GetPolicyRequest(name=name, revision=revision)
        response = await self._unary(self._stub.GetPolicy, request, timeout)
        return response.policy

    async def list_policies_page(
        self, *, filter: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> guardrails_pb2.ListPoliciesResponse:
        """One page of policies, by name. Raises InvalidFilter, InvalidPageToken, InvalidArgument."""
        request = guardrails_pb2.ListPoliciesRequest(
            filter=filter, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListPolicies, request, timeout)

    async def list_policies(
        self, *, filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[guardrails_pb2.Policy, None]:
        """Every policy matching the filter, page after page; `timeout` applies to each page."""
        page_token = ""
        while True:
            page = await self.list_policies_page(
                filter=filter, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for policy in page.policies:
                yield policy
            page_token = page.next_page_token
            if not page_token:
                return

    async def update_policy(
        self,
        *,
        policy: guardrails_pb2.Policy,
        update_mask: Sequence[str],
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> guardrails_pb2.Policy:
        """Changes the fields of `policy` named in update_mask ("*": all), making a new revision; a set etag
        must be current. Raises PolicyNotFound, EtagMismatch, InvalidRule, FallbackBreaksPolicy,
        InvalidArgument."""
        request = guardrails_pb2.UpdatePolicyRequest(
            policy=policy,
            update_mask=field_mask_pb2.FieldMask(paths=list(update_mask)),
            request_id=ensure_request_id(request_id),
        )
        response = await self._unary(self._stub.UpdatePolicy, request, timeout)
        return response.policy

    async def delete_policy(
        self, *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> None:
        """Deletes a policy and its revisions (its violation records are kept). Raises PolicyNotFound,
        EtagMismatch."""
        request = guardrails_pb2.DeletePolicyRequest(
            name=name, etag=etag, request_id=ensure_request_id(request_id)
        )
        await self._unary(self._stub.DeletePolicy, request, timeout)

    async def list_policy_revisions_page(
        self, *, name: str, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> guardrails_pb2.ListPolicyRevisionsResponse:
        """One page of a policy's revisions, newest first. Raises PolicyNotFound, InvalidPageToken."""
        request = guardrails_pb2.ListPolicyRevisionsRequest(
            name=name, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListPolicyRevisions, request, timeout)

    async def list_policy_revisions(
        self, *, name: str, page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[guardrails_pb2.Policy, None]:
        """The policy at each of its revisions, newest first, page after page."""
        page_token = ""
        while True:
            page = await self.list_policy_revisions_page(
                name=name, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for policy in page.policies:
                yield policy
            page_token = page.next_page_token
            if not page_token:
                return

    # Shadow revisions.

    async def set_shadow_revision(
        self,
        *,
        name: str,
        revision: int = 0,
        policy: guardrails_pb2.Policy | None = None,
        deployment: str = "",
        traffic_slot: common_pb2.TrafficSlot.ValueType = common_pb2.TRAFFIC_SLOT_UNSPECIFIED,
        etag: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> guardrails_pb2.Policy:
        """Puts a revision in shadow next to the active one: an existing `revision`, or a new candidate
        revision written from `policy` (give one of them). Checks then also run against it in the background
        (only those linked to `deployment`, and to its `traffic_slot`, when given); callers get the active
        verdict only. Returns the policy with shadow_revision set. Raises
        PolicyNotFound, PolicyRevisionNotFound, EtagMismatch, InvalidRule, InvalidArgument (the active
        revision itself)."""
        if (revision == 0) == (policy is None):
            raise ValueError("give exactly one of revision and policy")
        request = guardrails_pb2.SetShadowRevisionRequest(
            name=name,
            deployment=deployment,
            traffic_slot=traffic_slot,
            etag=etag,
            request_id=ensure_request_id(request_id),
        )
        if policy is not None:
            request.policy.CopyFrom(policy)
        else:
            request.revision = revision
        response = await self._unary(self._stub.SetShadowRevision, request, timeout)
        return response.policy

    async def clear_shadow_revision(
        self, *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> guardrails_pb2.Policy:
        """Stops evaluating the policy's shadow (what it recorded stays). Raises PolicyNotFound,
        EtagMismatch."""
        request = guardrails_pb2.ClearShadowRevisionRequest(
            name=name, etag=etag, request_id=ensure_request_id(request_id)
        )
        response = await self._unary(self._stub.ClearShadowRevision, request, timeout)
        return response.policy

    async def promote_shadow_revision(
        self, *, name: str, etag: str = "", request_id: str | None = None, timeout: float | None = None
    ) -> guardrails_pb2.Policy:
        """Makes the shadow's rules active as a new revision and clears the shadow. Raises PolicyNotFound,
        FailedPrecondition (reason SHADOW_NOT_SET), EtagMismatch."""
        request = guardrails_pb2.PromoteShadowRevisionRequest(
            name=name, etag=etag, request_id=ensure_request_id(request_id)
        )
        response = await self._unary(self._stub.PromoteShadowRevision, request, timeout)
        return response.policy

    async def get_shadow_report(
        self,
        *,
        name: str,
        shadow_revision: int = 0,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        timeout: float | None = None,
    ) -> guardrails_pb2.GetShadowReportResponse:
        """What the shadow (0: the current one) would have decided next to the active revision over
        [start_time, end_time) (timezone-aware; None: open). Raises PolicyNotFound, PolicyRevisionNotFound,
        FailedPrecondition (reason SHADOW_NOT_SET), InvalidArgument."""
        request = guardrails_pb2.GetShadowReportRequest(
            name=name,
            shadow_revision=shadow_revision,
            start_time=_timestamp(start_time),
            end_time=_timestamp(end_time),
        )
        return await self._unary(self._stub.GetShadowReport, request, timeout)

    # Checks.

    async def check_content(
        self,
        *,
        policy: str,
        text: str,
        policy_revision: int = 0,
        links: common_pb2.EventLinks | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> guardrails_pb2.CheckVerdict:
        """Checks `text` against `policy` (at `policy_revision`, 0: the latest) and returns the verdict;
        `links` tie any violation records to the event the text belongs to. Raises PolicyNotFound,
        PolicyRevisionNotFound, TextTooLarge (over 1,000,000 characters), InvalidArgument."""
        request = guardrails_pb2.CheckContentRequest(
            policy=policy,
            policy_revision=policy_revision,
            text=text,
            links=links,
            request_id=ensure_request_id(request_id),
        )
        response = await self._unary(self._stub.CheckContent, request, timeout)
        return response.verdict

    def check_stream(
        self,
        *,
        policy: str,
        policy_revision: int = 0,
        links: common_pb2.EventLinks | None = None,
        request_id: str | None = None,
        timeout: float | None = DEFAULT_STREAM_TIMEOUT,
    ) -> CheckStreamSession:
        """A CheckStream to use as `async with`; `timeout` (None: no deadline) bounds the whole stream.
        Its errors (PolicyNotFound, TextTooLarge, ...) are raised by `send`, `wait_blocked` or `finish`."""
        start = guardrails_pb2.CheckStreamStart(
            policy=policy,
            policy_revision=policy_revision,
            links=links,
            request_id=ensure_request_id(request_id),
        )
        return CheckStreamSession(self._stub, start, metadata=self.metadata, timeout=timeout)

    # Records.

    async def list_violations_page(
        self, *, filter: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> guardrails_pb2.ListViolationsResponse:
        """One page of violation records, newest first. Raises InvalidFilter, InvalidPageToken,
        InvalidArgument."""
        request = guardrails_pb2.ListViolationsRequest(
            filter=filter, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListViolations, request, timeout)

    async def list_violations(
        self, *, filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[guardrails_pb2.ViolationRecord, None]:
        """Every violation record matching the filter, newest first, page after page; `timeout` applies
        to each page."""
        page_token = ""
        while True:
            page = await self.list_violations_page(
                filter=filter, page_size=page_size, page_token=page_token, timeout=timeout
            )
            for record in page.violations:
                yield record
            page_token = page.next_page_token
            if not page_token:
                return

    async def aggregate_violations(
        self,
        *,
        group_by: Sequence[guardrails_pb2.ViolationGroupBy.ValueType] = (),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        bucket_width: timedelta | None = None,
        policy: str = "",
        timeout: float | None = None,
    ) -> list[guardrails_pb2.ViolationGroup]:
        """Counts and rates of checks and violations in [start_time, end_time) (timezone-aware; None: open),
        grouped by `group_by` (empty: one group), ordered by their keys. `bucket_width` goes with
        VIOLATION_GROUP_BY_TIME_BUCKET. Raises InvalidArgument."""
        request = guardrails_pb2.AggregateViolationsRequest(
            group_by=list(group_by),
            start_time=_timestamp(start_time),
            end_time=_timestamp(end_time),
            bucket_width=_duration(bucket_width),
            policy=policy,
        )
        response = await self._unary(self._stub.AggregateViolations, request, timeout)
        return list(response.groups)


class CheckStreamSession:
    """One CheckStream: send text chunks as they are generated, learn of a block as soon as it is certain.

    A background task reads the server's messages while the caller sends, so `blocked`, `early_verdict`
    and `violations` are current without awaiting anything. Use it as `async with`: leaving the block
    before `finish()` cancels the call.
    """

    def __init__(
        self,
        stub: GuardrailServiceAsyncStub,
        start: guardrails_pb2.CheckStreamStart,
        *,
        metadata: tuple[tuple[str, str], ...],
        timeout: float | None,
    ) -> None:
        self._stub = stub
        self._start = start
        self._metadata = metadata
        self._timeout = timeout
        self._call: _CallT | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._violations: list[guardrails_pb2.Violation] = []
        self._received_chars = 0
        self._early: guardrails_pb2.CheckVerdict | None = None
        self._final: guardrails_pb2.CheckVerdict | None = None
        self._error: ModelplaneError | None = None
        self._ended = False

    @property
    def blocked(self) -> bool:
        """Whether the server has said the text is blocked (early, or in the final verdict)."""
        verdict = self._early or self._final
        return verdict is not None and verdict.decision == guardrails_pb2.DECISION_BLOCK

    @property
    def early_verdict(self) -> guardrails_pb2.CheckVerdict | None:
        """The BLOCK verdict the server sent before the end of the text, if it has."""
        return self._early

    @property
    def violations(self) -> tuple[guardrails_pb2.Violation, ...]:
        """The violations reported so far (a violation is reported once it is certain)."""
        return tuple(self._violations)

    @property
    def received_chars(self) -> int:
        """How many characters the server said it had received, at its last progress message."""
        return self._received_chars

    async def open(self) -> None:
        """Starts the call and sends the start message (done by `async with`)."""
        if self._call is not None:
            raise RuntimeError("the stream is already open")
        self._call = self._stub.CheckStream(None, timeout=self._timeout, metadata=self._metadata)
        self._reader = asyncio.create_task(self._read(self._call), name="CheckStream reader")
        await self._write(guardrails_pb2.CheckStreamRequest(start=self._start))

    async def send(self, chunk: str) -> None:
        """Sends the next piece of the text. Raises the call's error if it has failed."""
        if self._ended:
            raise RuntimeError("the stream has ended: no chunk may follow finish()")
        if chunk:
            await self._write(guardrails_pb2.CheckStreamRequest(chunk=chunk))

    async def wait_blocked(self) -> guardrails_pb2.CheckVerdict | None:
        """Waits for the early BLOCK verdict and returns it; None when the stream ended without a block."""
        while True:
            self._raise_error()
            if self._early is not None:
                return self._early
            if self._final is not None or (self._reader is not None and self._reader.done()):
                self._raise_error()
                return self._final if self.blocked else None
            self._changed.clear()
            await self._changed.wait()

    async def finish(self) -> guardrails_pb2.CheckVerdict:
        """Says the text is complete and returns the final verdict, equal to CheckContent's on the whole
        text. Raises the call's error if it failed."""
        if not self._ended:
            self._ended = True
            await self._write(guardrails_pb2.CheckStreamRequest(end=guardrails_pb2.CheckStreamEnd()))
            call = self._require_call()
            with contextlib.suppress(grpc.RpcError):
                # A call that already failed reports why through the reader.
                await call.done_writing()
        if self._reader is not None:
            await asyncio.shield(self._reader)
        self._raise_error()
        if self._final is None:
            raise RuntimeError("CheckStream ended without a final verdict")
        return self._final

    async def cancel(self) -> None:
        """Abandons the stream (the server stores nothing for an unfinished text)."""
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._final is None:
            await self.cancel()

    def _require_call(self) -> _CallT:
        if self._call is None:
            raise RuntimeError("the stream is not open: use `async with` or await open()")
        return self._call

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _write(self, request: guardrails_pb2.CheckStreamRequest) -> None:
        call = self._require_call()
        self._raise_error()
        try:
            await call.write(request)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        except asyncio.InvalidStateError:
            # Writing to a call that has already ended: its status, read by the reader, says why.
            if self._reader is not None:
                await asyncio.shield(self._reader)
            self._raise_error()
            raise RuntimeError("CheckStream has ended") from None

    async def _read(self, call: _CallT) -> None:
        try:
            async for response in call:
                if response.HasField("progress"):
                    self._violations.extend(response.progress.violations)
                    self._received_chars = response.progress.received_chars
                elif response.HasField("verdict"):
                    if response.verdict.final:
                        self._final = response.verdict
                    else:
                        self._early = response.verdict
                self._changed.set()
        except grpc.RpcError as error:
            self._error = from_rpc_error(error)
        finally:
            self._changed.set()
