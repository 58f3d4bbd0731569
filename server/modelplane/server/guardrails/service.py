"""The guardrails monitor's rules: compiling policies, immutable revisions, checks and their records.

A policy is compiled by the engine before it is stored, so a stored revision always compiles; compiled
policies are kept per (policy, revision) in this process, and revisions never change, so a check never
recompiles one that is in the cache. Checks that find something are recorded in one transaction (spans,
masked excerpts, keyed hashes, never the text); checks that find nothing are only counted, in batches.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from modelplane.server import field_rules, pagination
from modelplane.server.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from modelplane.server.filters import (
    FilterSchema,
    enum_field,
    integer_field,
    resource_name_field,
    text_field,
    timestamp_field,
)
from modelplane.server.guardrails import store, validation
from modelplane.server.guardrails.domain import (
    POLICY_PREFIX,
    AggregateQuery,
    FailMode,
    FoundViolation,
    Links,
    Page,
    Policy,
    PolicyFields,
    StreamProgress,
    Verdict,
    ViolationGroup,
    ViolationRecord,
    policy_from_json,
    policy_name,
    policy_to_json,
    stored,
)
from modelplane.server.guardrails.engine import (
    CheckResult,
    CheckTimeout,
    CompiledPolicy,
    Decision,
    Severity,
    StreamCheck,
    compile_policy,
)
from modelplane.server.guardrails.engine import Violation as EngineViolation
from modelplane.server.pagination import OrderField, OrderSchema, plan_list
from modelplane.server.store.mutations import Mutation, WriteRequest, mutation
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.server.store.watch import ChangeFeed
from modelplane.server.tasks import cancel_and_wait

T = TypeVar("T")
log = logging.getLogger(__name__)

# Threads that run checks: every check runs on one, within its policy's time budget, so the event loop
# never runs a rule. A check still waiting for a thread when its budget runs out is not started.
CHECK_THREADS = 4
# Compiled policies kept in this process, least recently used first out.
MAX_COMPILED = 256
# Seconds between writes of the clean-check counts.
COUNT_FLUSH_INTERVAL = 1.0
INVALID_RULE = "INVALID_RULE"
FALLBACK_BREAKS_POLICY = "FALLBACK_BREAKS_POLICY"
_UPDATE_ATTEMPTS = 5

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


def new_etag() -> str:
    return uuid.uuid4().hex[:16]


def _policy_not_found(policy_id: str) -> NotFound:
    name = policy_name(policy_id)
    return NotFound(f"policy {name} does not exist", reason="POLICY_NOT_FOUND", metadata={"resource": name})


def _revision_not_found(policy_id: str, revision: int) -> NotFound:
    name = policy_name(policy_id)
    return NotFound(
        f"policy {name} has no revision {revision}",
        reason="POLICY_REVISION_NOT_FOUND",
        metadata={"resource": name, "revision": str(revision)},
    )


def _etag_mismatch(resource: str, current: str) -> Aborted:
    return Aborted(
        f"{resource} was changed by someone else (its etag is now {current!r}); read it again and retry",
        reason="ETAG_MISMATCH",
        metadata={"resource": resource, "current_etag": current},
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


def compile_fields(fields: PolicyFields, prefix: str) -> CompiledPolicy:
    """Compiles a policy's rules, and refuses fallback content that would itself be redacted or blocked
    (or that the policy cannot check within its time budget)."""
    try:
        compiled = compile_policy(
            fields.rules,
            fields.decisions,
            path=f"{prefix}.rules",
            excerpt_context=fields.excerpt_context_chars,
        )
    except InvalidArgument as exc:
        raise InvalidArgument(exc.violations, reason=INVALID_RULE) from None
    broken: list[tuple[str, str]] = []
    contents = [(f"{prefix}.fallback_content[{k!r}]", v) for k, v in sorted(fields.fallback_content.items())]
    if fields.default_fallback:
        contents.append((f"{prefix}.default_fallback", fields.default_fallback))
    for path, content in contents:
        try:
            result = compiled.check(content, time.perf_counter() + fields.effective_time_budget_ms / 1000)
        except CheckTimeout:
            broken.append((path, "could not be checked within the policy's time_budget; simplify the rules"))
            continue
        if result.decision is not Decision.ALLOW:
            rules = ", ".join(
                sorted({v.rule_id for v in result.violations if v.decision is not Decision.ALLOW})
            )
            broken.append(
                (path, f"would itself be {result.decision.name} by rule(s) {rules}; change the text")
            )
    if broken:
        raise InvalidArgument(
            [FieldViolation(path, message) for path, message in broken],
            reason=FALLBACK_BREAKS_POLICY,
        )
    return compiled


def _found(v: EngineViolation) -> FoundViolation:
    return FoundViolation(
        rule_id=v.rule_id,
        severity=v.severity,
        category=v.category,
        decision=v.decision,
        start=v.start,
        end=v.end,
        excerpt=v.excerpt,
    )


def fallback_for(fields: PolicyFields, violations: tuple[FoundViolation, ...]) -> str:
    """The fallback of the category of the highest-severity blocking violation (the first on a tie)."""
    blocking = [v for v in violations if v.decision is Decision.BLOCK]
    if not blocking:
        return fields.default_fallback
    strictest = max(blocking, key=lambda v: v.severity)
    return fields.fallback_content.get(strictest.category, fields.default_fallback)


def verdict_of(policy: Policy, result: CheckResult) -> Verdict:
    violations = tuple(_found(v) for v in result.violations)
    return Verdict(
        policy_id=policy.id,
        policy_revision=policy.revision,
        decision=result.decision,
        violations=violations,
        highest_severity=result.highest_severity,
        fail_mode=policy.fields.fail_mode,
        redacted_text=(result.redacted_text or "") if result.decision is Decision.REDACT else "",
        fallback_content=fallback_for(policy.fields, violations) if result.decision is Decision.BLOCK else "",
        omitted=result.omitted,
        redaction_too_large=result.redaction_too_large,
    )


def unchecked_verdict(policy: Policy) -> Verdict:
    """What the fail mode answers when a check ran out of its time budget."""
    closed = policy.fields.fail_mode is FailMode.CLOSED
    return Verdict(
        policy_id=policy.id,
        policy_revision=policy.revision,
        decision=Decision.BLOCK if closed else Decision.ALLOW,
        violations=(),
        highest_severity=None,
        fail_mode=policy.fields.fail_mode,
        fallback_content=policy.fields.default_fallback if closed else "",
        unchecked=True,
    )


@dataclass(frozen=True)
class StreamStart:
    policy: str
    policy_revision: int
    links: Links
    # The stream's own request id: a repeat of the stream stores no second record.
    request_id: str = ""


@dataclass(frozen=True)
class StreamChunk:
    text: str


@dataclass(frozen=True)
class StreamEnd:
    pass


StreamEvent = StreamStart | StreamChunk | StreamEnd


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
        self._check_threads = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="modelplane-check")
        self._max_compiled = max_compiled
        self._count_flush_interval = count_flush_interval
        self._heads: ReadCache[store.PolicyHead] = ReadCache(feed)
        self._compiled: OrderedDict[tuple[str, int], tuple[Policy, CompiledPolicy]] = OrderedDict()
        self._hash_key: bytes | None = None
        self._clean_counts: dict[store.CountKey, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    # ---- writes

    async def _write(
        self, write: WriteRequest, body: Callable[[Mutation], Awaitable[Policy | None]]
    ) -> Policy | None:
        """Runs body in one write transaction, at most once per request id."""
        field_rules.check_request_id(write.request_id)
        async with mutation(self._db, write) as m:
            replayed = await m.replay()
            if replayed is not None:
                return None if replayed.result is None else policy_from_json(replayed.result)
            result = await body(m)
            await m.remember(None if result is None else policy_to_json(result))
        if m.taken_revision is not None:
            self._heads.written(m.taken_revision)
        return result

    @staticmethod
    async def _record_change(m: Mutation, kind: str, name: str, policy: Policy | None) -> None:
        await m.record(
            resource_type="policy",
            resource=name,
            kind=kind,
            snapshot=None if policy is None else policy_to_json(policy),
        )

    def _keep_compiled(self, policy: Policy, compiled: CompiledPolicy) -> None:
        key = (policy.id, policy.revision)
        self._compiled[key] = (policy, compiled)
        self._compiled.move_to_end(key)
        while len(self._compiled) > self._max_compiled:
            self._compiled.popitem(last=False)

    async def create_policy(self, policy_id: str, fields: PolicyFields, write: WriteRequest) -> Policy:
        validation.check_policy_id(policy_id, "policy_id")
        validation.check_policy_fields(fields, "policy")
        compiled = await asyncio.to_thread(compile_fields, fields, "policy")

        async def body(m: Mutation) -> Policy:
            created = await store.insert_policy(m.conn, policy_id, fields, new_etag())
            if created is None:
                name = policy_name(policy_id)
                raise AlreadyExists(
                    f"policy {name} already exists; choose another policy_id",
                    reason="POLICY_ALREADY_EXISTS",
                    metadata={"resource": name},
                )
            await self._record_change(m, "created", created.name, created)
            return created

        policy = await self._write(write, body)
        assert policy is not None
        self._keep_compiled(policy, compiled)
        return policy

    async def get_policy(self, name: str, revision: int) -> Policy:
        policy_id = validation.parse_policy_name(name, "name")
        validation.check_revision(revision, "revision")
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
        policy_id = validation.parse_policy_name(name, "policy.name")
        paths = field_rules.check_mask(paths, validation.POLICY_MASK)
        validation.check_policy_fields(given, "policy", paths)
        for _ in range(_UPDATE_ATTEMPTS):
            async with self._db.connection() as conn:
                current = await store.get_policy(conn, policy_id)
            if current is None:
                raise _policy_not_found(policy_id)
            if etag and etag != current.etag:
                raise _etag_mismatch(current.name, current.etag)
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
                await self._record_change(m, "updated", updated.name, updated)
                return updated

            policy = await self._write(write, body)
            if policy is not None:
                if (policy.id, policy.revision) not in self._compiled and policy.fields == fields:
                    self._keep_compiled(policy, compiled)
                return policy
            if etag:
                async with self._db.connection() as conn:
                    now = await store.get_policy(conn, policy_id)
                if now is None:
                    raise _policy_not_found(policy_id)
                raise _etag_mismatch(now.name, now.etag)
        raise Aborted(
            f"{policy_name(policy_id)} kept changing while it was being updated; retry",
            reason="ETAG_MISMATCH",
            metadata={"resource": policy_name(policy_id)},
        )

    async def delete_policy(self, name: str, etag: str, write: WriteRequest) -> None:
        policy_id = validation.parse_policy_name(name, "name")

        async def body(m: Mutation) -> None:
            current = await store.get_policy(m.conn, policy_id)
            head = await store.get_head(m.conn, policy_id, for_update=True)
            if current is None or head is None:
                raise _policy_not_found(policy_id)
            if etag and current.etag != etag:
                raise _etag_mismatch(current.name, current.etag)
            await store.delete_policy(m.conn, policy_id)
            await self._record_change(m, "deleted", current.name, None)

        await self._write(write, body)

    async def list_revisions(self, name: str, *, page_size: int, page_token: str) -> Page[Policy]:
        policy_id = validation.parse_policy_name(name, "name")
        size = pagination.resolve_page_size(page_size)
        fingerprint = pagination.query_fingerprint("ListPolicyRevisions", name)
        last = pagination.decode_page_token(page_token, fingerprint, (int,))
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

    async def _policy_for_check(self, policy_id: str, revision: int) -> tuple[Policy, CompiledPolicy]:
        """The compiled policy at `revision` (0: the latest), from this process's cache when it is there."""

        async def load_head() -> tuple[store.PolicyHead, int] | None:
            async with self._db.connection() as conn:
                head, read_revision = await store.get_head_at(conn, policy_id)
            return None if head is None else (head, read_revision)

        head = await self._heads.read(policy_id, load_head)
        if head is None:
            raise _policy_not_found(policy_id)
        wanted = revision or head.revision
        if not head.first_revision <= wanted <= head.revision:
            raise _revision_not_found(policy_id, wanted)
        key = (policy_id, wanted)
        cached = self._compiled.get(key)
        if cached is not None:
            self._compiled.move_to_end(key)
            return cached
        async with self._db.connection() as conn:
            policy = await store.get_policy(conn, policy_id, wanted)
        if policy is None:
            raise _revision_not_found(policy_id, wanted)
        # A stored revision compiled when it was written; this only rebuilds it in this process.
        compiled = await asyncio.to_thread(compile_fields, policy.fields, "policy")
        self._keep_compiled(policy, compiled)
        return policy, compiled

    async def _in_budget(self, policy: Policy, work: Callable[[float], T], budget: float | None = None) -> T:
        """work(deadline) on a check thread; CheckTimeout when the policy's time budget (or `budget`
        seconds) runs out first.

        The engine looks at the deadline as it goes, so a thread whose caller gave up soon stops too."""
        if budget is None:
            budget = policy.fields.effective_time_budget_ms / 1000
        deadline = time.perf_counter() + budget
        future = asyncio.get_running_loop().run_in_executor(self._check_threads, work, deadline)
        try:
            return await asyncio.wait_for(future, budget)
        except TimeoutError:
            raise CheckTimeout from None

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
        policy_id = validation.parse_policy_name(policy, "policy")
        validation.check_revision(revision, "policy_revision")
        validation.check_text_size(len(text), "text")
        validation.check_links(links, "links")
        field_rules.check_request_id(request_id)
        chosen, compiled = await self._policy_for_check(policy_id, revision)
        verdict, result = await self._run_check(chosen, compiled, text)
        return await self._keep_record(chosen, verdict, result, links, request_id)

    async def check_stream(
        self, events: AsyncIterator[StreamEvent]
    ) -> AsyncIterator[StreamProgress | Verdict]:
        """Checks text arriving in chunks: progress as violations become certain, an early verdict as soon
        as a BLOCK is certain, and always the final verdict, equal to a one-shot check of the whole text."""
        first = await anext(events, None)
        if not isinstance(first, StreamStart):
            raise InvalidArgument.field("start", "the first message must be a start naming the policy")
        policy_id = validation.parse_policy_name(first.policy, "start.policy")
        validation.check_revision(first.policy_revision, "start.policy_revision")
        validation.check_links(first.links, "start.links")
        field_rules.check_request_id(first.request_id)
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
                yield await self._keep_record(chosen, verdict, result, first.links, first.request_id)
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
                yield StreamProgress(tuple(_found(v) for v in new), received)
            if progress.certain_decision is Decision.BLOCK and not early_sent:
                early_sent = True
                violations = tuple(_found(v) for v in progress.violations_so_far)
                yield Verdict(
                    policy_id=chosen.id,
                    policy_revision=chosen.revision,
                    decision=Decision.BLOCK,
                    violations=violations,
                    highest_severity=max((v.severity for v in violations), default=None),
                    fail_mode=chosen.fields.fail_mode,
                    fallback_content=fallback_for(chosen.fields, violations),
                    final=False,
                )
        raise InvalidArgument.field("end", "the stream closed without an end message; no verdict was made")

    async def _finish_stream(self, policy: Policy, stream: StreamCheck) -> tuple[Verdict, CheckResult | None]:
        try:
            result = await self._in_budget(policy, stream.finish)
        except CheckTimeout:
            return unchecked_verdict(policy), None
        return verdict_of(policy, result), result

    # ---- records

    async def _key(self) -> bytes:
        if self._hash_key is None:
            async with self._db.connection() as conn:
                self._hash_key = await store.hash_key(conn)
        return self._hash_key

    async def _keep_record(
        self, policy: Policy, verdict: Verdict, result: CheckResult | None, links: Links, request_id: str
    ) -> Verdict:
        """Stores the records of a check that found something (once per request id); counts a clean one."""
        now = datetime.now(UTC)
        if not verdict.violations and not verdict.unchecked:
            self._count_clean(policy, links, now)
            return verdict
        # One key per policy: hashes of one policy's records compare, across policies they do not.
        key = hmac.new(await self._key(), f"policy:{policy.id}".encode(), hashlib.sha256).digest()
        check_id = uuid.uuid4().hex
        engine_violations = result.violations if result is not None else ()
        rows = [
            store.ViolationRow(
                id=uuid.uuid4().hex,
                rule_id=v.rule_id,
                severity=stored(v.severity),
                category=v.category,
                decision=stored(v.decision),
                start=v.start,
                end=v.end,
                excerpt=v.excerpt,
                matched_hash=hmac.new(key, v.matched_text.encode(), hashlib.sha256).digest(),
            )
            for v in engine_violations
        ]
        check = store.CheckRow(
            id=check_id,
            policy_id=policy.id,
            policy_revision=policy.revision,
            decision=stored(verdict.decision),
            highest_severity="" if verdict.highest_severity is None else stored(verdict.highest_severity),
            violation_count=verdict.violation_count,
            unchecked=verdict.unchecked,
            links=links,
            check_request_id=request_id,
            create_time=now,
        )
        async with self._db.transaction() as conn:
            kept = await store.insert_check(conn, check, rows)
        return replace(verdict, check_id=check_id if kept else "")

    def _count_clean(self, policy: Policy, links: Links, now: datetime) -> None:
        key = store.CountKey(
            bucket_time=now.replace(microsecond=0),
            policy_id=policy.id,
            policy_revision=policy.revision,
            model_version=links.model_version,
            deployment=links.deployment,
            traffic_slot=links.traffic_slot.value,
        )
        self._clean_counts[key] = self._clean_counts.get(key, 0) + 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_periodically(), name="modelplane-check-counts")

    async def _flush_periodically(self) -> None:
        while self._clean_counts:
            await asyncio.sleep(self._count_flush_interval)
            try:
                await self.flush_counts()
            except Exception as exc:
                # Postgres away: the counts stay in memory and go with the next flush.
                log.warning("could not store check counts (%s: %s); retrying", type(exc).__name__, exc)

    async def flush_counts(self) -> None:
        """Writes the counts of clean checks made in this process so far."""
        async with self._flush_lock:
            if not self._clean_counts:
                return
            counts, self._clean_counts = self._clean_counts, {}
            try:
                async with self._db.transaction() as conn:
                    await store.add_check_counts(conn, counts)
            except BaseException:
                for key, n in counts.items():
                    self._clean_counts[key] = self._clean_counts.get(key, 0) + n
                raise

    async def close(self) -> None:
        """Stops the periodic flush and writes what is left, if Postgres is there to take it."""
        await cancel_and_wait(self._flusher)
        # Running checks stop at their deadlines; nothing waits for them.
        self._check_threads.shutdown(wait=False, cancel_futures=True)
        try:
            await self.flush_counts()
        except Exception as exc:
            log.warning("dropped the counts of %d clean checks (%s)", sum(self._clean_counts.values()), exc)

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
        if query.policy_id:
            validation.check_policy_id(query.policy_id, "policy")
        _check_aggregate(query)
        # This process's own clean checks count at once; other replicas' within a flush interval.
        await self.flush_counts()
        async with self._db.connection() as conn:
            return tuple(await store.aggregate(conn, query))


MAX_BUCKET_SECONDS = 31 * 24 * 3600


def _check_aggregate(query: AggregateQuery) -> None:
    v = field_rules.Violations()
    seen: set[str] = set()
    for i, group in enumerate(query.group_by):
        if group in seen:
            v.add(f"group_by[{i}]", f"{group.value} is listed twice")
        seen.add(group)
    if "time_bucket" in seen and not 1 <= query.bucket_seconds <= MAX_BUCKET_SECONDS:
        v.add("bucket_width", "is required with TIME_BUCKET: a whole number of seconds from 1 s to 31 days")
    if query.start_time and query.end_time and query.end_time <= query.start_time:
        v.add("end_time", "must be after start_time")
    v.raise_if_any()
