"""The guardrails monitor's use cases: policies with immutable revisions, checks, and reads of their records.

Compiling and caching revisions is compiled.py's job, running checks within their budget budget.py's,
turning results into verdicts verdicts.py's, writing records records.py's and counting clean checks
counts.py's; this module ties them to the requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from modelplane.server import field_rules, pagination
from modelplane.server.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from modelplane.server.filters import (
    FilterSchema,
    enum_field,
    integer_field,
    resource_name_field,
    text_field,
    timestamp_field,
)
from modelplane.server.guardrails import store, validation
from modelplane.server.guardrails.budget import CheckThreads
from modelplane.server.guardrails.compiled import MAX_COMPILED, CompiledCache, compile_fields
from modelplane.server.guardrails.counts import COUNT_FLUSH_INTERVAL, CleanCounts
from modelplane.server.guardrails.domain import (
    POLICY_PREFIX,
    AggregateQuery,
    Links,
    Page,
    Policy,
    PolicyFields,
    ShadowQuery,
    ShadowReport,
    ShadowTarget,
    StreamEnd,
    StreamEvent,
    StreamProgress,
    StreamStart,
    Verdict,
    ViolationGroup,
    ViolationRecord,
    policy_from_json,
    policy_name,
    policy_to_json,
)
from modelplane.server.guardrails.engine import (
    CheckResult,
    CheckTimeout,
    CompiledPolicy,
    Decision,
    Severity,
    StreamCheck,
)
from modelplane.server.guardrails.records import CheckRecorder
from modelplane.server.guardrails.shadow import ShadowChecks, ShadowJob
from modelplane.server.guardrails.verdicts import early_block, found, unchecked_verdict, verdict_of
from modelplane.server.pagination import OrderField, OrderSchema, plan_list
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.server.store.watch import ChangeFeed
from modelplane.server.store.writes import etag_mismatch, new_etag, write_once
from modelplane.v1.error_reason_pb2 import ErrorReason

T = TypeVar("T")
log = logging.getLogger(__name__)

_UPDATE_ATTEMPTS = 5
# What one shadow report lists at most.
MAX_RULE_DIFFERENCES = 100
MAX_SHADOW_SAMPLES = 20

_SEVERITIES = {s.name: s.name.lower() for s in Severity}
_DECISIONS = {d.name: d.name.lower() for d in Decision}

POLICY_FILTER = FilterSchema(
    [
        resource_name_field("name", "p.id", prefix=POLICY_PREFIX),
        text_field("display_name", "p.display_name"),
        text_field("description", "p.description"),
        timestamp_field("create_time", "p.create_time"),
        timestamp_field("update_time", "p.update_time"),
    ]
)
POLICY_ORDER = OrderSchema(
    fields={"name": OrderField("p.id", str)}, default="name", tiebreak=OrderField("p.id", str)
)

VIOLATION_FILTER = FilterSchema(
    [
        resource_name_field("policy", "v.policy_id", prefix=POLICY_PREFIX),
        integer_field("policy_revision", "v.policy_revision"),
        text_field("rule_id", "v.rule_id", operators={"=", "!="}),
        enum_field("severity", "v.severity", _SEVERITIES, prefix="SEVERITY_"),
        enum_field("decision", "v.decision", _DECISIONS, prefix="DECISION_"),
        text_field("category", "v.category", operators={"=", "!="}),
        text_field("model_version", "v.model_version", operators={"=", "!=", ":"}),
        text_field("deployment", "v.deployment", operators={"=", "!=", ":"}),
        enum_field(
            "traffic_slot", "v.traffic_slot", {"STABLE": "stable", "CANARY": "canary"}, prefix="TRAFFIC_SLOT_"
        ),
        text_field("trace_id", "v.trace_id", operators={"=", "!="}),
        timestamp_field("create_time", "v.create_time"),
    ]
)
VIOLATION_ORDER = OrderSchema(
    fields={"create_time": OrderField("v.create_time", datetime)},
    default="create_time",
    tiebreak=OrderField("v.id", str),
)


def _policy_not_found(policy_id: str) -> NotFound:
    name = policy_name(policy_id)
    return NotFound.resource("policy", name, ErrorReason.ERROR_REASON_POLICY_NOT_FOUND)


def _revision_not_found(policy_id: str, revision: int) -> NotFound:
    name = policy_name(policy_id)
    return NotFound(
        f"policy {name} has no revision {revision}",
        reason=ErrorReason.ERROR_REASON_POLICY_REVISION_NOT_FOUND,
        metadata={"resource": name, "revision": str(revision)},
    )


def _shadow_not_set(policy_id: str) -> FailedPrecondition:
    name = policy_name(policy_id)
    return FailedPrecondition(
        f"policy {name} has no shadow revision; set one with SetShadowRevision",
        reason=ErrorReason.ERROR_REASON_SHADOW_NOT_SET,
        metadata={"resource": name},
    )


def merge_fields(current: PolicyFields, given: PolicyFields, paths: frozenset[str]) -> PolicyFields:
    """The fields of the next revision: `given` for each masked path, `current` for the rest."""
    changes: dict[str, object] = {}
    for path in paths:
        if path == "rules":
            changes["rules"] = given.rules
            changes["rule_descriptions"] = given.rule_descriptions
        elif path == "time_budget":
            changes["time_budget_ms"] = given.time_budget_ms
        else:
            changes[path] = getattr(given, path)
    return replace(current, **changes)  # type: ignore[arg-type]


class GuardrailService:
    """The guardrails monitor's use cases, independent of gRPC and of SQL."""

    def __init__(
        self,
        database: Database,
        feed: ChangeFeed,
        *,
        max_compiled: int = MAX_COMPILED,
        count_flush_interval: float = COUNT_FLUSH_INTERVAL,
    ) -> None:
        self._db = database
        self._threads = CheckThreads()
        self._heads: ReadCache[store.PolicyHead] = ReadCache(feed)
        self._compiled = CompiledCache(max_compiled)
        self._records = CheckRecorder(database)
        self._counts = CleanCounts(database, count_flush_interval)
        self._shadows = ShadowChecks(
            database, self._policy_for_check, self._records.policy_key, flush_interval=count_flush_interval
        )

    # ---- writes

    async def _write(
        self, write: WriteRequest, body: Callable[[Mutation], Awaitable[Policy | None]]
    ) -> Policy | None:
        return await write_once(
            self._db,
            write,
            body,
            result_type=None,
            encode=policy_to_json,
            decode=policy_from_json,
            committed=self._heads.written,
        )

    @staticmethod
    def _record_change(m: Mutation, kind: str, name: str, policy: Policy | None) -> None:
        # A policy's rows never name the revision, so it is taken as the write ends (see Mutation).
        m.change(
            resource_type="policy",
            resource=name,
            kind=kind,
            snapshot=None if policy is None else policy_to_json(policy),
        )

    async def create_policy(self, policy_id: str, fields: PolicyFields, write: WriteRequest) -> Policy:
        v = field_rules.Violations()
        v.collect(lambda: validation.check_policy_id(policy_id, "policy_id"), "")
        validation.check_policy_fields(v, fields, "policy")
        field_rules.check_request_id(write.request_id, v)
        compiled = await _compiled_into(v, fields)
        v.raise_if_any()
        assert compiled is not None, "raise_if_any raised when the policy did not compile"

        async def body(m: Mutation) -> Policy:
            created = await store.insert_policy(m.conn, policy_id, fields, new_etag())
            if created is None:
                name = policy_name(policy_id)
                raise AlreadyExists(
                    f"policy {name} already exists; choose another policy_id",
                    reason=ErrorReason.ERROR_REASON_POLICY_ALREADY_EXISTS,
                    metadata={"resource": name},
                )
            self._record_change(m, "created", created.name, created)
            return created

        policy = await self._write(write, body)
        assert policy is not None
        self._compiled.keep(policy, compiled)
        return policy

    async def get_policy(self, name: str, revision: int) -> Policy:
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(name, "name"), "")
        v.collect(lambda: validation.check_revision(revision, "revision"), None)
        v.raise_if_any()
        async with self._db.connection() as conn:
            found = await store.get_policy(conn, policy_id, revision)
            if found is None:
                if revision and await store.get_head(conn, policy_id) is not None:
                    raise _revision_not_found(policy_id, revision)
                raise _policy_not_found(policy_id)
        return found

    async def list_policies(self, *, page_size: int, page_token: str, filter_text: str) -> Page[Policy]:
        plan = plan_list(
            filter_text=filter_text,
            filter_schema=POLICY_FILTER,
            order_by="",
            order_schema=POLICY_ORDER,
            page_size=page_size,
            page_token=page_token,
            scope_parts=("ListPolicies",),
        )
        async with self._db.connection() as conn:
            rows = await store.list_policies(
                conn, where=plan.where, params=plan.params, order_sql=plan.order_sql, limit=plan.limit
            )
        kept, token = plan.page(rows)
        return Page(tuple(k.value for k in kept), token)

    async def update_policy(
        self, name: str, given: PolicyFields, paths: frozenset[str], etag: str, write: WriteRequest
    ) -> Policy:
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(name, "policy.name"), "")
        paths = v.collect(
            lambda: field_rules.check_mask(paths, validation.POLICY_MASK), paths & validation.POLICY_MASK
        )
        validation.check_policy_fields(v, given, "policy", paths)
        field_rules.check_request_id(write.request_id, v)
        if v.items and "rules" in paths:
            # Bad rules named beside the other bad fields; with nothing else bad, the compile of the merged
            # policy below names them (and fallbacks the rules would block, which need the current policy).
            await _compiled_into(v, given, check_fallbacks=False)
        v.raise_if_any()
        for _ in range(_UPDATE_ATTEMPTS):
            async with self._db.connection() as conn:
                current = await store.get_policy(conn, policy_id)
            if current is None:
                raise _policy_not_found(policy_id)
            if etag and etag != current.etag:
                raise etag_mismatch(current.name, current.etag)
            fields = merge_fields(current.fields, given, paths)
            compiled = await asyncio.to_thread(compile_fields, fields, "policy")
            # The merge read `current`: the write must land on exactly that revision, or be redone.
            base_etag = current.etag

            async def body(
                m: Mutation, fields: PolicyFields = fields, base_etag: str = base_etag
            ) -> Policy | None:
                updated = await store.update_policy(
                    m.conn, policy_id, fields, expected_etag=base_etag, new_etag=new_etag()
                )
                if updated is None:
                    return None
                self._record_change(m, "updated", updated.name, updated)
                return updated

            policy = await self._write(write, body)
            if policy is not None:
                if self._compiled.get(policy.id, policy.revision) is None and policy.fields == fields:
                    self._compiled.keep(policy, compiled)
                return policy
            if etag:
                async with self._db.connection() as conn:
                    now = await store.get_policy(conn, policy_id)
                if now is None:
                    raise _policy_not_found(policy_id)
                raise etag_mismatch(now.name, now.etag)
        raise Aborted(
            f"{policy_name(policy_id)} kept changing while it was being updated; retry",
            reason=ErrorReason.ERROR_REASON_ETAG_MISMATCH,
            metadata={"resource": policy_name(policy_id)},
        )

    async def delete_policy(self, name: str, etag: str, write: WriteRequest) -> None:
        policy_id = _policy_with_request_id(name, write)

        async def body(m: Mutation) -> None:
            current = await store.get_policy(m.conn, policy_id)
            head = await store.get_head(m.conn, policy_id, for_update=True)
            if current is None or head is None:
                raise _policy_not_found(policy_id)
            if etag and current.etag != etag:
                raise etag_mismatch(current.name, current.etag)
            await store.delete_policy(m.conn, policy_id)
            self._record_change(m, "deleted", current.name, None)

        await self._write(write, body)

    # ---- shadow revisions

    async def _locked_current(
        self, m: Mutation, policy_id: str, etag: str
    ) -> tuple[store.PolicyHead, Policy]:
        """The policy's head, locked for the rest of the write, and its active revision; the etag checked."""
        head = await store.get_head(m.conn, policy_id, for_update=True)
        current = await store.get_policy(m.conn, policy_id)
        if head is None or current is None:
            raise _policy_not_found(policy_id)
        if etag and etag != current.etag:
            raise etag_mismatch(current.name, current.etag)
        return head, current

    async def _changed(self, m: Mutation, policy_id: str) -> Policy:
        changed = await store.get_policy(m.conn, policy_id)
        assert changed is not None, "the policy's row is locked by this transaction"
        self._record_change(m, "updated", changed.name, changed)
        return changed

    async def set_shadow_revision(
        self,
        name: str,
        shadow: int | PolicyFields | None,
        target: ShadowTarget,
        etag: str,
        write: WriteRequest,
    ) -> Policy:
        """Shadows an existing revision (an int) or a new candidate revision (fields) next to the active."""
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(name, "name"), "")
        if shadow is None:
            v.add("revision", "set revision (an existing revision) or policy (a new candidate revision)")
        elif isinstance(shadow, PolicyFields):
            validation.check_policy_fields(v, shadow, "policy")
        elif shadow <= 0:
            v.add("revision", "must be a revision number, 1 or more")
        validation.check_shadow_target(v, target)
        field_rules.check_request_id(write.request_id, v)
        if isinstance(shadow, PolicyFields):
            await _compiled_into(v, shadow)
        v.raise_if_any()
        assert shadow is not None, "raise_if_any raised when neither revision nor policy was given"

        async def body(m: Mutation) -> Policy:
            head, current = await self._locked_current(m, policy_id, etag)
            if isinstance(shadow, PolicyFields):
                await store.insert_candidate(
                    m.conn, policy_id, shadow, target, expected_etag="", new_etag=new_etag()
                )
                return await self._changed(m, policy_id)
            if not head.first_revision <= shadow <= head.highest:
                raise _revision_not_found(policy_id, shadow)
            if shadow == head.revision:
                raise InvalidArgument.field(
                    "revision",
                    f"{shadow} is the active revision of {current.name}; shadow another revision, or give"
                    " policy to write a candidate",
                )
            await store.set_shadow(m.conn, policy_id, shadow, target, expected_etag="", new_etag=new_etag())
            return await self._changed(m, policy_id)

        policy = await self._write(write, body)
        assert policy is not None
        return policy

    async def clear_shadow_revision(self, name: str, etag: str, write: WriteRequest) -> Policy:
        policy_id = _policy_with_request_id(name, write)

        async def body(m: Mutation) -> Policy:
            head, current = await self._locked_current(m, policy_id, etag)
            if not head.shadow_revision:
                return current
            await store.set_shadow(
                m.conn, policy_id, 0, ShadowTarget(), expected_etag="", new_etag=new_etag()
            )
            return await self._changed(m, policy_id)

        policy = await self._write(write, body)
        assert policy is not None
        return policy

    async def promote_shadow_revision(self, name: str, etag: str, write: WriteRequest) -> Policy:
        """Writes the shadow's fields as the next, active revision and clears the shadow."""
        policy_id = _policy_with_request_id(name, write)

        async def body(m: Mutation) -> Policy:
            head, _ = await self._locked_current(m, policy_id, etag)
            if not head.shadow_revision:
                raise _shadow_not_set(policy_id)
            shadow = await store.get_policy(m.conn, policy_id, head.shadow_revision)
            assert shadow is not None, "a shadow revision is one of the policy's revisions"
            tag = new_etag()
            await store.update_policy(m.conn, policy_id, shadow.fields, expected_etag="", new_etag=tag)
            await store.set_shadow(m.conn, policy_id, 0, ShadowTarget(), expected_etag="", new_etag=tag)
            return await self._changed(m, policy_id)

        policy = await self._write(write, body)
        assert policy is not None
        return policy

    async def shadow_report(self, name: str, query: ShadowQuery) -> ShadowReport:
        """What a shadow revision would have decided next to the active one over a window."""
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(name, "name"), "")
        v.extend(query.refused)
        if query.shadow_revision < 0:
            v.add("shadow_revision", "must be 0 (the current shadow) or a revision number")
        if query.start_time and query.end_time and query.end_time <= query.start_time:
            v.add("end_time", "must be after start_time")
        v.raise_if_any()
        async with self._db.connection() as conn:
            head = await store.get_head(conn, policy_id)
        if head is None:
            raise _policy_not_found(policy_id)
        revision = query.shadow_revision or head.shadow_revision
        if not revision:
            raise _shadow_not_set(policy_id)
        if not head.first_revision <= revision <= head.highest:
            raise _revision_not_found(policy_id, revision)
        # This process's shadow checks count at once; other replicas' within a flush interval.
        await self._shadows.drain()
        async with self._db.connection() as conn:
            return await store.shadow_report(
                conn,
                replace(query, policy_id=policy_id, shadow_revision=revision),
                max_rules=MAX_RULE_DIFFERENCES,
                max_samples=MAX_SHADOW_SAMPLES,
            )

    async def list_revisions(self, name: str, *, page_size: int, page_token: str) -> Page[Policy]:
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(name, "name"), "")
        fingerprint = pagination.query_fingerprint("ListPolicyRevisions", name)
        size, last = pagination.check_page(v, page_size, page_token, fingerprint, (int,))
        v.raise_if_any()
        before = None if last is None else int(last[0])  # type: ignore[arg-type]
        async with self._db.connection() as conn:
            if await store.get_head(conn, policy_id) is None:
                raise _policy_not_found(policy_id)
            rows = await store.list_revisions(conn, policy_id, before=before, limit=size + 1)
        items = [k.value for k in rows]
        token = ""
        if len(items) > size:
            items = items[:size]
            token = pagination.encode_page_token(fingerprint, [items[-1].revision])
        return Page(tuple(items), token)

    # ---- checks

    async def _head(self, policy_id: str) -> store.PolicyHead:
        """Where a policy stands, from this process's read cache when it is current."""

        async def load_head() -> tuple[store.PolicyHead, int] | None:
            async with self._db.connection() as conn:
                head, read_revision = await store.get_head_at(conn, policy_id)
            return None if head is None else (head, read_revision)

        head = await self._heads.read(policy_id, load_head)
        if head is None:
            raise _policy_not_found(policy_id)
        return head

    async def _policy_for_check(self, policy_id: str, revision: int) -> tuple[Policy, CompiledPolicy]:
        """The compiled policy at `revision` (0: the active one), from this process's cache if it is there."""
        head = await self._head(policy_id)
        wanted = revision or head.revision
        if not head.first_revision <= wanted <= head.highest:
            raise _revision_not_found(policy_id, wanted)
        cached = self._compiled.get(policy_id, wanted)
        if cached is not None:
            return cached
        async with self._db.connection() as conn:
            policy = await store.get_policy(conn, policy_id, wanted)
        if policy is None:
            raise _revision_not_found(policy_id, wanted)
        # A stored revision compiled when it was written; this only rebuilds it in this process.
        compiled = await asyncio.to_thread(
            functools.partial(compile_fields, policy.fields, "policy", check_fallbacks=False)
        )
        self._compiled.keep(policy, compiled)
        return policy, compiled

    async def _in_budget(self, policy: Policy, work: Callable[[float], T], budget: float | None = None) -> T:
        """work(deadline) on a check thread within the policy's time budget (or `budget` seconds)."""
        return await self._threads.run(
            work, policy.fields.effective_time_budget_ms / 1000 if budget is None else budget
        )

    async def _run_check(
        self, policy: Policy, compiled: CompiledPolicy, text: str
    ) -> tuple[Verdict, CheckResult | None]:
        """Checks a text on a check thread, within the policy's time budget whatever the text's size."""
        try:
            result = await self._in_budget(policy, functools.partial(compiled.check, text))
        except CheckTimeout:
            log.warning(
                "a check of %d characters against %s revision %d ran out of its %d ms budget",
                len(text),
                policy.name,
                policy.revision,
                policy.fields.effective_time_budget_ms,
            )
            return unchecked_verdict(policy), None
        return verdict_of(policy, result), result

    async def check_content(
        self, policy: str, revision: int, text: str, links: Links, request_id: str
    ) -> Verdict:
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(policy, "policy"), "")
        v.collect(lambda: validation.check_revision(revision, "policy_revision"), None)
        v.collect(lambda: validation.check_text_size(len(text), "text"), None)
        validation.check_links(v, links, "links")
        field_rules.check_request_id(request_id, v)
        v.raise_if_any()
        chosen, compiled = await self._policy_for_check(policy_id, revision)
        verdict, result = await self._run_check(chosen, compiled, text)
        kept = await self._keep_record(chosen, verdict, result, links, request_id)
        await self._shadow(chosen, verdict, result, text, links)
        return kept

    async def _shadow(
        self, active: Policy, verdict: Verdict, result: CheckResult | None, text: str, links: Links
    ) -> None:
        """Starts the check of `text` against the policy's shadow, if it has one that this check falls under;
        called after the active verdict is made and recorded, and never waited for."""
        try:
            head = await self._head(active.id)
        except Exception as exc:
            # Deleted meanwhile, or Postgres away on a cache miss: the verdict is answered all the same.
            log.warning("%s: no shadow check (%s: %s)", active.name, type(exc).__name__, exc)
            return
        if head.shadow_revision and active.revision == head.revision and head.shadow_target.matches(links):
            self._shadows.submit(
                ShadowJob(active, verdict, result, head.shadow_revision, text, links, datetime.now(UTC))
            )

    async def check_stream(
        self, events: AsyncIterator[StreamEvent]
    ) -> AsyncIterator[StreamProgress | Verdict]:
        """Checks text arriving in chunks: progress as violations become certain, an early verdict as soon
        as a BLOCK is certain, and always the final verdict, equal to a one-shot check of the whole text."""
        first = await anext(events, None)
        if not isinstance(first, StreamStart):
            raise InvalidArgument.field("start", "the first message must be a start naming the policy")
        v = field_rules.Violations()
        policy_id = v.collect(lambda: validation.parse_policy_name(first.policy, "start.policy"), "")
        v.collect(lambda: validation.check_revision(first.policy_revision, "start.policy_revision"), None)
        validation.check_links(v, first.links, "start.links")
        field_rules.check_request_id(first.request_id, v, path="start.request_id")
        v.raise_if_any()
        chosen, compiled = await self._policy_for_check(policy_id, first.policy_revision)
        stream = StreamCheck(compiled)
        # Early scanning of all the chunks together gets the policy's budget once; then chunks are only kept.
        scan_left = chosen.fields.effective_time_budget_ms / 1000
        received = 0
        sent: set[tuple[str, int, int]] = set()
        early_sent = False
        async for event in events:
            if isinstance(event, StreamStart):
                raise InvalidArgument.field("start", "only the first message may be a start")
            if isinstance(event, StreamEnd):
                verdict, result = await self._finish_stream(chosen, stream)
                kept = await self._keep_record(chosen, verdict, result, first.links, first.request_id)
                await self._shadow(chosen, verdict, result, stream.text, first.links)
                yield kept
                return
            received += len(event.text)
            validation.check_text_size(received, "chunk")
            region = stream.append(event.text)
            if region is None:
                progress = stream.progress()
            else:
                started = time.perf_counter()
                try:
                    progress = await self._in_budget(
                        chosen, functools.partial(stream.scan, *region), budget=scan_left
                    )
                except CheckTimeout:
                    progress = stream.progress()
                scan_left -= time.perf_counter() - started
                if scan_left <= 0:
                    # The final verdict still checks the whole text, within a budget of its own.
                    stream.stop_scanning()
            new = [v for v in progress.violations_so_far if (v.rule_id, v.start, v.end) not in sent]
            if new:
                sent.update((v.rule_id, v.start, v.end) for v in new)
                yield StreamProgress(tuple(found(v) for v in new), received)
            if progress.certain_decision is Decision.BLOCK and not early_sent:
                early_sent = True
                yield early_block(chosen, tuple(found(v) for v in progress.violations_so_far))
        raise InvalidArgument.field("end", "the stream closed without an end message; no verdict was made")

    async def _finish_stream(self, policy: Policy, stream: StreamCheck) -> tuple[Verdict, CheckResult | None]:
        try:
            result = await self._in_budget(policy, stream.finish)
        except CheckTimeout:
            return unchecked_verdict(policy), None
        return verdict_of(policy, result), result

    # ---- records

    async def _keep_record(
        self, policy: Policy, verdict: Verdict, result: CheckResult | None, links: Links, request_id: str
    ) -> Verdict:
        """Stores the records of a check that found something (once per request id); counts a clean one."""
        now = datetime.now(UTC)
        if not verdict.violations and not verdict.unchecked:
            self._counts.count(policy, links, now)
            return verdict
        return await self._records.keep(policy, verdict, result, links, request_id, now)

    async def flush_counts(self) -> None:
        """Writes the counts of clean checks made in this process so far."""
        await self._counts.flush()

    async def close(self) -> None:
        """Stops the check threads and the periodic flush, and writes the counts left."""
        self._threads.close()
        await self._shadows.close()
        await self._counts.close()

    async def list_violations(
        self, *, page_size: int, page_token: str, filter_text: str
    ) -> Page[ViolationRecord]:
        plan = plan_list(
            filter_text=filter_text,
            filter_schema=VIOLATION_FILTER,
            order_by="create_time desc",
            order_schema=VIOLATION_ORDER,
            page_size=page_size,
            page_token=page_token,
            scope_parts=("ListViolations",),
        )
        async with self._db.connection() as conn:
            rows = await store.list_violations(
                conn, where=plan.where, params=plan.params, order_sql=plan.order_sql, limit=plan.limit
            )
        kept, token = plan.page(rows)
        return Page(tuple(k.value for k in kept), token)

    async def aggregate_violations(self, query: AggregateQuery) -> tuple[ViolationGroup, ...]:
        v = field_rules.Violations()
        v.extend(query.refused)
        if query.policy_id:
            v.collect(lambda: validation.check_policy_id(query.policy_id, "policy"), "")
        _check_aggregate(v, query)
        v.raise_if_any()
        # This process's own clean checks count at once; other replicas' within a flush interval.
        await self.flush_counts()
        async with self._db.connection() as conn:
            return tuple(await store.aggregate(conn, query))


MAX_BUCKET_SECONDS = 31 * 24 * 3600


def _check_aggregate(v: field_rules.Violations, query: AggregateQuery) -> None:
    seen: set[str] = set()
    for i, group in enumerate(query.group_by):
        if group in seen:
            v.add(f"group_by[{i}]", f"{group.value} is listed twice")
        seen.add(group)
    if "time_bucket" in seen and not 1 <= query.bucket_seconds <= MAX_BUCKET_SECONDS:
        v.add("bucket_width", "is required with TIME_BUCKET: a whole number of seconds from 1 s to 31 days")
    if query.start_time and query.end_time and query.end_time <= query.start_time:
        v.add("end_time", "must be after start_time")


def _policy_with_request_id(name: str, write: WriteRequest) -> str:
    """The policy id of a write naming one policy, its violations and the request id's named together."""
    return field_rules.parse_with_request_id(
        lambda: validation.parse_policy_name(name, "name"), write.request_id
    )


async def _compiled_into(
    v: field_rules.Violations, fields: PolicyFields, *, check_fallbacks: bool = True
) -> CompiledPolicy | None:
    """The policy compiled on a thread (compiling is CPU work), or None with its violations added to `v`."""
    return await asyncio.to_thread(
        v.collect,
        functools.partial(compile_fields, fields, "policy", check_fallbacks=check_fallbacks),
        None,
    )
