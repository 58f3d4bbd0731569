"""Shadow evaluation: a check's text also run against the policy's shadow revision, after the active verdict.

The caller never waits for it: the shadow runs in a task of its own on check threads of its own (so an
active check never queues behind a shadow), within the shadow revision's time budget as every check is; a
shadow that runs out of it is counted `unchecked`, and one that finds the queue full is counted `skipped`.
What it found is kept in this process and written in batches, as the counts of clean checks are: counts per
second and outcome, per rule the checks in which it broke under one revision only, and a few sample
violations (spans, masked excerpts, keyed hashes; never a text) of checks the two revisions decided apart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from modelplane.server.errors import NotFound
from modelplane.server.guardrails import store
from modelplane.server.guardrails.budget import CheckThreads
from modelplane.server.guardrails.counts import flush_periodically
from modelplane.server.guardrails.domain import FailMode, Links, Policy, ShadowSample, Verdict, stored
from modelplane.server.guardrails.engine import CheckResult, CheckTimeout, CompiledPolicy, Decision
from modelplane.server.guardrails.records import matched_hash
from modelplane.server.store.pool import Database
from modelplane.server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Threads that run shadow checks, apart from the active checks' threads.
SHADOW_THREADS = 2
# Shadow checks waiting or running in this process, and the characters of text they hold; a check beyond
# either is not shadowed but counted skipped (so shadows never hold more than about 8 M characters of text).
MAX_PENDING_SHADOWS = 64
MAX_PENDING_CHARS = 8_000_000
# Sample violations kept of one check, and kept in this process between two writes (the rest are dropped).
SAMPLES_PER_CHECK = 5
MAX_PENDING_SAMPLES = 200
# Seconds between writes of what shadows found.
SHADOW_FLUSH_INTERVAL = 1.0
# How long a report waits for the shadow checks still running in this process.
DRAIN_SECONDS = 5.0

LoadRevision = Callable[[str, int], Awaitable[tuple[Policy, CompiledPolicy]]]
PolicyKey = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True)
class ShadowJob:
    """One check to evaluate again under the shadow: the text lives only as long as the job."""

    active: Policy
    active_verdict: Verdict
    active_result: CheckResult | None
    shadow_revision: int
    text: str
    links: Links
    time: datetime


def rule_decisions(policy: Policy, result: CheckResult) -> dict[str, Decision]:
    """Each rule the result broke (listed or only counted) with the decision its severity takes."""
    severities = {rule.id: rule.severity for rule in policy.fields.rules}
    broken = {v.rule_id for v in result.violations} | set(result.omitted)
    return {
        rule_id: policy.fields.decisions[severities[rule_id]] for rule_id in broken if rule_id in severities
    }


def rule_differences(
    active: Mapping[str, Decision], shadow: Mapping[str, Decision]
) -> dict[str, store.ShadowRuleCounts]:
    """The rules that decided differently in one check: broken under one revision only, or under both with
    another decision."""
    found: dict[str, store.ShadowRuleCounts] = {}
    for rule_id in active.keys() | shadow.keys():
        if rule_id not in shadow:
            found[rule_id] = store.ShadowRuleCounts(active_only=1)
        elif rule_id not in active:
            found[rule_id] = store.ShadowRuleCounts(shadow_only=1)
        elif active[rule_id] is not shadow[rule_id]:
            found[rule_id] = store.ShadowRuleCounts(decision_changed=1)
    return found


class ShadowChecks:
    """Runs shadow checks in the background and keeps what they found until it is written."""

    def __init__(
        self,
        database: Database,
        load: LoadRevision,
        policy_key: PolicyKey,
        *,
        threads: int = SHADOW_THREADS,
        max_pending: int = MAX_PENDING_SHADOWS,
        max_pending_chars: int = MAX_PENDING_CHARS,
        flush_interval: float = SHADOW_FLUSH_INTERVAL,
    ) -> None:
        self._db = database
        self._load = load
        self._policy_key = policy_key
        self._threads = CheckThreads(threads)
        self._max_pending = max_pending
        self._max_pending_chars = max_pending_chars
        self._pending_chars = 0
        self._interval = flush_interval
        self._running: set[asyncio.Task[None]] = set()
        self._counts: dict[store.ShadowCountKey, int] = {}
        self._rules: dict[store.ShadowRuleKey, store.ShadowRuleCounts] = {}
        self._samples: list[ShadowSample] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def submit(self, job: ShadowJob) -> None:
        """Starts the shadow check of `job` and returns at once; counts it skipped when too many run."""
        chars = len(job.text)
        if len(self._running) >= self._max_pending or self._pending_chars + chars > self._max_pending_chars:
            self._count(job, Decision.ALLOW, "skipped")
            return
        task = asyncio.create_task(self._evaluate(job), name="modelplane-shadow-check")
        self._running.add(task)
        self._pending_chars += chars

        def done(finished: asyncio.Task[None]) -> None:
            self._running.discard(finished)
            self._pending_chars -= chars

        task.add_done_callback(done)

    async def _evaluate(self, job: ShadowJob) -> None:
        # Nothing a shadow does reaches the caller, whose verdict has been answered already.
        try:
            await self._evaluate_or_raise(job)
        except NotFound:
            pass  # the policy or its shadow went away meanwhile: nothing to compare
        except Exception:
            log.exception("the shadow check of %s revision %d failed", job.active.name, job.shadow_revision)

    async def _evaluate_or_raise(self, job: ShadowJob) -> None:
        shadow, compiled = await self._load(job.active.id, job.shadow_revision)
        budget = shadow.fields.effective_time_budget_ms / 1000
        try:
            result = await self._threads.run(functools.partial(compiled.check, job.text), budget)
        except CheckTimeout:
            closed = shadow.fields.fail_mode is FailMode.CLOSED
            self._count(job, Decision.BLOCK if closed else Decision.ALLOW, "unchecked")
            return
        self._count(job, result.decision, "checked")
        if job.active_result is not None:
            bucket = job.time.replace(microsecond=0)
            active_rules = rule_decisions(job.active, job.active_result)
            for rule_id, counts in rule_differences(active_rules, rule_decisions(shadow, result)).items():
                key = store.ShadowRuleKey(bucket, shadow.id, job.active.revision, shadow.revision, rule_id)
                self._rules[key] = self._rules.get(key, store.ShadowRuleCounts()) + counts
        if result.decision is not job.active_verdict.decision:
            await self._sample(job, shadow, result)

    async def _sample(self, job: ShadowJob, shadow: Policy, result: CheckResult) -> None:
        room = min(SAMPLES_PER_CHECK, MAX_PENDING_SAMPLES - len(self._samples))
        if room <= 0:
            return
        key = await self._policy_key(shadow.id)
        self._samples.extend(
            ShadowSample(
                id=uuid.uuid4().hex,
                policy_id=shadow.id,
                active_revision=job.active.revision,
                shadow_revision=shadow.revision,
                rule_id=v.rule_id,
                severity=v.severity,
                category=v.category,
                decision=v.decision,
                shadow_decision=result.decision,
                active_decision=job.active_verdict.decision,
                links=job.links,
                start=v.start,
                end=v.end,
                excerpt=v.excerpt,
                matched_hash=matched_hash(key, v.matched_text),
                create_time=job.time,
            )
            for v in result.violations[:room]
        )

    def _count(self, job: ShadowJob, shadow_decision: Decision, outcome: str) -> None:
        key = store.ShadowCountKey(
            bucket_time=job.time.replace(microsecond=0),
            policy_id=job.active.id,
            active_revision=job.active.revision,
            shadow_revision=job.shadow_revision,
            active_decision=stored(job.active_verdict.decision),
            active_unchecked=job.active_verdict.unchecked,
            shadow_decision=stored(shadow_decision),
            shadow_outcome=outcome,
        )
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_periodically(), name="modelplane-shadow-counts")

    async def _flush_periodically(self) -> None:
        await flush_periodically(self._pending, self._interval, self.flush, "shadow counts")

    def _pending(self) -> bool:
        return bool(self._running or self._counts or self._rules or self._samples)

    async def drain(self) -> None:
        """Waits (at most DRAIN_SECONDS) for the shadow checks running in this process, then writes all."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=DRAIN_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        """Writes what this process's shadow checks found so far."""
        async with self._flush_lock:
            if not (self._counts or self._rules or self._samples):
                return  # (running checks add theirs when they finish)
            counts, self._counts = self._counts, {}
            rules, self._rules = self._rules, {}
            samples, self._samples = self._samples, []
            try:
                async with self._db.transaction() as conn:
                    await store.add_shadow_counts(conn, counts, rules, samples)
            except BaseException:
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
                for rule_key, c in rules.items():
                    self._rules[rule_key] = self._rules.get(rule_key, store.ShadowRuleCounts()) + c
                self._samples = (samples + self._samples)[:MAX_PENDING_SAMPLES]
                raise

    async def close(self) -> None:
        """Drops the shadow checks not finished, stops their threads, and writes what is left."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._threads.close()
        await cancel_and_wait(self._flusher)
        try:
            await self.flush()
        except Exception as exc:
            log.warning("dropped the shadow counts of %d checks (%s)", sum(self._counts.values()), exc)
