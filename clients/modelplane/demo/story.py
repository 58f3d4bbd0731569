"""The whole story, end to end: a real server with its embedded Postgres, the three consumer services as
processes of their own, and two canary rollouts decided by their analysis gates.

1. The server starts; the story registers the policy, the model and two versions with prices, and starts
   the services: inference (LLMClient), the story teller's endpoints (NarrativeGenerator) and the front
   door (ServiceCoordinator); each ships every event it makes through its LogShipper.
2. A deployment serves version 1. Run 1 canaries version 2, as well-behaved as stable: readers' requests
   flow through the traffic table, the gates pass at each step, the rollout succeeds, the prod alias moves.
3. Run 2 canaries version 3, whose stories break the policy far more often: the gate on the guardrail block
   rate fails and rolls it back; the history names the gate and its figures.
4. AggregateLogEvents, by model version and slot, shows the traffic; every gate evaluation that decided a
   step is read again through AggregateLogEvents over its own window, and the figures agree.

Every step is asserted: `run_story` raises StoryFailed at the first thing that did not happen as told.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import TextIO

from google.protobuf import duration_pb2

from modelplane.client import Connection, connect
from modelplane.demo.gate_agreement import Agreement, check_agreement, supported
from modelplane.demo.processes import DemoProcessError, ServerProcess, ServiceProcess
from modelplane.demo.story_setting import (
    CANARY_ALIAS,
    DEPLOYMENT,
    DEPLOYMENT_ID,
    ENVIRONMENT,
    GOOD_RELEASE,
    MODEL,
    MODEL_ID,
    POLICY,
    POLICY_ID,
    PROD_ALIAS,
    STABLE_RELEASE,
    WILD_RELEASE,
    Release,
    kids_policy,
)
from modelplane.demo.timeline import Timeline, table
from modelplane.v1 import common_pb2, deployments_pb2, logs_pb2, registry_pb2

# Requests the front door sends per round, between two looks at the rollout.
ROUND = 40
# Canary steps: a share of the readers for a few seconds each; the gates decide before each step moves on.
# The first is long enough for its quarter of the readers to make the gates' samples well before it ends.
STEPS = ((2500, 8.0), (5000, 3.0))
# Gates read the last minute (the whole rollout, here) and need 100 events per slot (the fewest allowed):
# a window as short as a step would let a slow machine's quarter of the readers never fill it.
GATE_WINDOW = timedelta(seconds=60)
MIN_SAMPLES = 100
# How long a due step may wait for enough events before it pauses; the gates are evaluated again every
# tenth of it meanwhile.
MAX_WAIT_FOR_DATA = timedelta(seconds=30)
# The readers stop this many seconds before each evaluation of the gates, and every event is shipped.
QUIET_BEFORE_DUE = 1.0
# A run that has not ended after this long, or a due step not decided after this long, has failed; not
# performance bounds.
RUN_LIMIT = 120.0
DECISION_LIMIT = 30.0
FINAL_STATES = (
    deployments_pb2.ROLLOUT_STATE_SUCCEEDED,
    deployments_pb2.ROLLOUT_STATE_ROLLED_BACK,
    deployments_pb2.ROLLOUT_STATE_ABORTED,
    deployments_pb2.ROLLOUT_STATE_PAUSED,
)
ENDING_TRANSITIONS = (
    deployments_pb2.DEPLOYMENT_TRANSITION_SUCCEEDED,
    deployments_pb2.DEPLOYMENT_TRANSITION_ROLLED_BACK,
    deployments_pb2.DEPLOYMENT_TRANSITION_ABORTED,
    deployments_pb2.DEPLOYMENT_TRANSITION_PAUSED,
)
GATE_NAMES = ("story-blocks", "cost-per-story", "inference-errors", "routing-failures")


class StoryFailed(AssertionError):
    """Something in the story did not happen as told."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise StoryFailed(what)


@dataclass
class RunResult:
    """What one canary run did: its rollout, the history it wrote, and the traffic it saw."""

    title: str
    version: str
    rollout: deployments_pb2.Rollout
    history: list[deployments_pb2.DeploymentHistoryEntry]
    traffic: Counter[str] = field(default_factory=Counter)

    @property
    def deciding(self) -> deployments_pb2.DeploymentHistoryEntry:
        """The history entry that ended the run."""
        return self.history[-1]


@dataclass
class StoryResult:
    runs: list[RunResult]
    agreements: list[Agreement]
    groups: list[logs_pb2.LogGroup]
    shipped: dict[str, dict[str, int]]


def _short(version: str) -> str:
    """ "versions/2" for "models/storyteller/versions/2": the story has one model."""
    _, separator, number = version.partition("/versions/")
    return f"versions/{number}" if separator else version


def _seconds(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def story_gates() -> deployments_pb2.RolloutAnalysis:
    """The canary's gates: each compares the canary's slot with the stable one's over the last minute."""
    window = _seconds(GATE_WINDOW)
    rollback = deployments_pb2.GATE_ACTION_ROLLBACK

    def gate(
        name: str,
        signal: deployments_pb2.AnalysisSignal.ValueType,
        bound: deployments_pb2.GateBound,
        **extra: str,
    ) -> deployments_pb2.AnalysisGate:
        return deployments_pb2.AnalysisGate(
            name=name,
            signal=signal,
            window=window,
            min_samples=MIN_SAMPLES,
            bound=bound,
            on_failure=rollback,
            **extra,
        )

    return deployments_pb2.RolloutAnalysis(
        gates=[
            # At most twice stable's block rate, plus 5 points.
            gate(
                "story-blocks",
                deployments_pb2.ANALYSIS_SIGNAL_GUARDRAIL_BLOCK_RATE,
                deployments_pb2.GateBound(max_ratio=2.0, margin=0.05),
                policy=POLICY,
            ),
            # At most 1.5 times what a story costs on stable.
            gate(
                "cost-per-story",
                deployments_pb2.ANALYSIS_SIGNAL_COST_PER_REQUEST,
                deployments_pb2.GateBound(max_ratio=1.5),
                currency_code="USD",
            ),
            gate(
                "inference-errors",
                deployments_pb2.ANALYSIS_SIGNAL_ERROR_RATE,
                deployments_pb2.GateBound(max_value=0.05),
            ),
            gate(
                "routing-failures",
                deployments_pb2.ANALYSIS_SIGNAL_ROUTING_FAILURE_RATE,
                deployments_pb2.GateBound(max_value=0.05),
            ),
        ],
        max_wait_for_data=_seconds(MAX_WAIT_FOR_DATA),
        on_no_data=deployments_pb2.GATE_ACTION_PAUSE,
    )


def describe_evaluation(evaluation: deployments_pb2.GateEvaluation) -> str:
    verdict = deployments_pb2.GateVerdict.Name(evaluation.verdict).removeprefix("GATE_VERDICT_")
    return (
        f"{evaluation.gate} {verdict}: canary {evaluation.canary_value:.4g} (n={evaluation.canary_samples})"
        f" vs stable {evaluation.stable_value:.4g} (n={evaluation.stable_samples}),"
        f" bound {evaluation.threshold:.4g}, p={evaluation.p_value:.3g}"
    )


def describe_entry(entry: deployments_pb2.DeploymentHistoryEntry) -> str:
    transition = deployments_pb2.DeploymentTransition.Name(entry.transition).removeprefix(
        "DEPLOYMENT_TRANSITION_"
    )
    after = entry.traffic_after
    weights = f"stable {after.stable.weight_bp / 100:g}%"
    if after.HasField("canary") and after.canary.model_version:
        weights += f" / canary {after.canary.weight_bp / 100:g}%"
    return f"history r{entry.revision} {transition} by {entry.actor or '-'}: {entry.reason} [{weights}]"


class HistoryReader:
    """The deployment's history entries not seen yet, oldest first (ListDeploymentHistory is newest first)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._last_revision = 0
        self._seen: set[str] = set()

    async def new_entries(self) -> list[deployments_pb2.DeploymentHistoryEntry]:
        fresh: list[deployments_pb2.DeploymentHistoryEntry] = []
        async for entry in self._connection.deployments.list_deployment_history(parent=DEPLOYMENT):
            if entry.revision < self._last_revision:
                break
            if entry.name not in self._seen:
                fresh.append(entry)
        fresh.reverse()
        for entry in fresh:
            self._seen.add(entry.name)
            self._last_revision = max(self._last_revision, entry.revision)
        return fresh


class Story:
    """The story's state: the timeline, the connection, the service processes, the history read so far."""

    def __init__(
        self,
        timeline: Timeline,
        connection: Connection,
        inference: ServiceProcess,
        storyteller: ServiceProcess,
        orchestration: ServiceProcess,
    ) -> None:
        self.timeline = timeline
        self.connection = connection
        self.storyteller = storyteller
        self.orchestration = orchestration
        # Every service ships events; flushing them all means every event made so far is stored.
        self.services = (orchestration, storyteller, inference)
        self.history = HistoryReader(connection)
        self.round = 0
        # Requests a second the last round made, for sizing the next.
        self.rate = 0.0

    async def show_history(self) -> list[deployments_pb2.DeploymentHistoryEntry]:
        entries = await self.history.new_entries()
        for entry in entries:
            self.timeline.say(describe_entry(entry))
            for evaluation in entry.gate_evaluations:
                self.timeline.say(f"    gate {describe_evaluation(evaluation)}")
        return entries

    async def traffic(self, count: int = ROUND) -> Counter[str]:
        """One round of readers' requests through the front door; how they went."""
        self.round += 1
        started = time.monotonic()
        reply = await self.orchestration.request({"op": "traffic", "round": self.round, "count": count})
        self.rate = count / max(time.monotonic() - started, 1e-3)
        outcomes = Counter({key: int(value) for key, value in reply.items()})
        errors = sum(value for key, value in outcomes.items() if key.startswith("error"))
        expect(errors == 0, f"round {self.round}: requests failed: {dict(outcomes)}")
        return outcomes

    def say_traffic(self, outcomes: Counter[str], rounds: int) -> None:
        parts = []
        for key in sorted(outcomes):
            version, slot, status = key.split(" ")
            parts.append(f"{slot} {_short(version)} {status} {outcomes[key]}")
        total = sum(outcomes.values())
        self.timeline.say(f"traffic: {total} requests in {rounds} rounds: " + ", ".join(parts))

    async def canary_run(self, title: str, version: str, endpoint: str) -> RunResult:
        """Points the canary alias at `version`, brings up its endpoint and starts the canary with its gates
        (`title` is its reason); sends readers' requests until the rollout ends; returns what happened."""
        await self.connection.registry.set_alias(name=CANARY_ALIAS, version=version, reason=title)
        self.timeline.say(f"{CANARY_ALIAS} -> {version}")
        await self.storyteller.request({"op": "report_ready", "addresses": [endpoint]})
        self.timeline.say(f"endpoint {endpoint} reports READY")
        started = await self.connection.deployments.start_rollout(
            parent=DEPLOYMENT,
            rollout=deployments_pb2.Rollout(
                target_version=version,
                endpoints=[deployments_pb2.Endpoint(address=endpoint)],
                strategy=deployments_pb2.ROLLOUT_STRATEGY_CANARY,
                steps=[
                    deployments_pb2.RolloutStep(
                        weight_bp=weight, duration=_seconds(timedelta(seconds=seconds))
                    )
                    for weight, seconds in STEPS
                ],
                analysis=story_gates(),
                reason=title,
            ),
        )
        rollout = started.rollout
        steps = ", then ".join(f"{weight / 100:g}% for {seconds:g} s" for weight, seconds in STEPS)
        self.timeline.say(f"StartRollout {rollout.name}: canary {_short(version)} {steps}, then promoted")
        self.timeline.say(
            "gates: " + ", ".join(GATE_NAMES) + f" (each over the last {GATE_WINDOW.seconds} s,"
            f" at least {MIN_SAMPLES} events per slot; a failure rolls back)"
        )
        run = RunResult(title, version, rollout, history=[])
        pending: Counter[str] = Counter()
        rounds = 0
        give_up = self.timeline.elapsed + RUN_LIMIT
        while rollout.state not in FINAL_STATES:
            expect(self.timeline.elapsed < give_up, f"{rollout.name} did not end within {RUN_LIMIT:g} s")
            size = self.round_size(rollout)
            if size == 0:
                await self.await_decision(rollout)
            else:
                pending += await self.traffic(size)
                rounds += 1
            entries = await self.show_history()
            run.history.extend(entry for entry in entries if entry.rollout == rollout.name)
            rollout = await self.connection.deployments.get_rollout(name=rollout.name)
            if entries or rounds == 10 or rollout.state in FINAL_STATES:
                if pending:
                    self.say_traffic(pending, rounds)
                run.traffic += pending
                pending, rounds = Counter(), 0
        run.rollout = rollout
        return run

    def round_size(self, rollout: deployments_pb2.Rollout) -> int:
        """How many requests the next round may send: as many as end before the quiet time ahead of the
        gates' next evaluation (the step coming due, or the next recheck while it waits for data); 0 when
        it is time to be quiet. A gate reads what is stored when it evaluates, so the story has the services
        ship everything first: then every event a gate counts in its window is stored by then, and the
        figures it decides on are the ones AggregateLogEvents reads over that window later."""
        if not rollout.HasField("next_step_time"):
            return ROUND
        due = rollout.next_step_time.ToDatetime(tzinfo=UTC).timestamp()
        left = due - time.time() - QUIET_BEFORE_DUE
        rate = self.rate or ROUND  # before any round: one full round a second
        return max(0, min(ROUND, int(rate * left * 0.8)))

    async def flush(self) -> None:
        """Returns once every service's events made so far are stored."""
        for service in self.services:
            reply = await service.request({"op": "flush"})
            expect(reply["flushed"], f"{service.name} shipped its events in time")

    async def await_decision(self, rollout: deployments_pb2.Rollout) -> None:
        """Ships every event made so far, then waits (no requests in flight) until the step driver has
        evaluated the gates: the step moved, the rollout ended, or a recheck set the next evaluation."""
        await self.flush()

        def when(rollout: deployments_pb2.Rollout) -> tuple[int, int, int]:
            return (rollout.state, rollout.current_step, rollout.next_step_time.ToNanoseconds())

        give_up = time.monotonic() + DECISION_LIMIT
        while time.monotonic() < give_up:
            now = await self.connection.deployments.get_rollout(name=rollout.name)
            if when(now) != when(rollout):
                return
            await asyncio.sleep(0.1)
        raise StoryFailed(f"the step driver did not evaluate {rollout.name}'s gates in {DECISION_LIMIT:g} s")


async def register(timeline: Timeline, connection: Connection, release: Release) -> str:
    """Registers `release` as the model's next version; its name."""
    version = await connection.registry.create_model_version(
        parent=MODEL,
        model_version=registry_pb2.ModelVersion(
            source_uri=release.source_uri,
            description=release.description,
            capabilities=[registry_pb2.CAPABILITY_CHAT],
            context_window=8_000,
            max_output_tokens=1_000,
            pricing=release.pricing,
        ),
    )
    prices = release.pricing
    timeline.say(
        f"registered {version.name} ({release.source_uri}, {release.description}):"
        f" {prices.input_micros_per_million / 1e6:g} / {prices.output_micros_per_million / 1e6:g}"
        f" {prices.currency_code} per million tokens in / out"
    )
    return version.name


async def _set_up(story_timeline: Timeline, connection: Connection) -> None:
    await connection.guardrails.create_policy(policy_id=POLICY_ID, policy=kids_policy())
    story_timeline.say(
        f'{POLICY}: "dragonfire" is a critical violation; a blocked story gets the fallback story'
    )
    await connection.registry.create_model(
        model_id=MODEL_ID, model=registry_pb2.Model(provider="local", display_name="Bedtime stories")
    )


@contextlib.asynccontextmanager
async def _services(
    timeline: Timeline, directory: Path, targets: Targets
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    """Starts inference and the story teller (the front door needs the deployment, so it comes later)."""
    started: list[ServiceProcess] = []
    try:
        inference = await ServiceProcess.start(
            "inference", directory / "inference.log", "--server", targets.inference
        )
        started.append(inference)
        storyteller = await ServiceProcess.start(
            "storyteller",
            directory / "storyteller.log",
            "--server",
            targets.storyteller,
            "--inference",
            inference.ready["address"],
            "--endpoints",
            "3",
        )
        started.append(storyteller)
        timeline.say(f"inference service (LLMClient) on {inference.ready['address']}")
        timeline.say(
            f"story teller (NarrativeGenerator) endpoints {', '.join(storyteller.ready['endpoints'])}"
        )
        yield inference, storyteller
    except BaseException:
        for service in started:
            service.kill()
        raise


async def run_story(
    timeline: Timeline, *, directory: Path, database_url: str | None = None, replicas: int = 1
) -> StoryResult:
    """The story, start to end; raises StoryFailed (or DemoProcessError) when a step did not happen.

    With several `replicas`, that many servers share the one database (and embedded Postgres); the story
    and the services talk to different ones, and every replica's step driver races for each step."""
    servers = [
        ServerProcess(
            directory / f"server-{index + 1}.log", data_dir=directory / "data", database_url=database_url
        )
        for index in range(replicas)
    ]
    where = "embedded Postgres" if database_url is None else "the Postgres of --database-url"
    try:
        for server in servers:
            timeline.say(f"modelplane serve on {server.target} ({where}; logs in {directory})")
            await server.start()
            timeline.say(f"server {server.target} SERVING")
        async with connect(Targets.of(servers).control, timeout=10.0) as connection:
            return await _story(timeline, directory, Targets.of(servers), connection)
    finally:
        # The last server to stop stops the embedded Postgres they share.
        for server in reversed(servers):
            code = await server.stop()
            if code is not None:
                timeline.say(f"server {server.target} stopped (exit {code})")


@dataclass(frozen=True)
class Targets:
    """Which replica each party talks to: the story and inference the first, the others the last."""

    control: str
    inference: str
    storyteller: str
    orchestration: str

    @classmethod
    def of(cls, servers: Sequence[ServerProcess]) -> Targets:
        first, last = servers[0].target, servers[-1].target
        return cls(control=first, inference=first, storyteller=last, orchestration=last)


async def _story(
    timeline: Timeline, directory: Path, targets: Targets, connection: Connection
) -> StoryResult:
    await _set_up(timeline, connection)
    stable = await register(timeline, connection, STABLE_RELEASE)
    good = await register(timeline, connection, GOOD_RELEASE)
    async with _services(timeline, directory, targets) as (inference, storyteller):
        endpoints: list[str] = storyteller.ready["endpoints"]
        await connection.deployments.create_deployment(
            deployment_id=DEPLOYMENT_ID,
            deployment=deployments_pb2.Deployment(
                environment=ENVIRONMENT,
                model=MODEL,
                traffic=deployments_pb2.TrafficTable(
                    stable=deployments_pb2.SlotTraffic(
                        model_version=stable, endpoints=[deployments_pb2.Endpoint(address=endpoints[0])]
                    )
                ),
            ),
        )
        alias = await connection.registry.get_alias(name=PROD_ALIAS)
        expect(alias.version == stable, f"{PROD_ALIAS} points at {alias.version}, not {stable}")
        timeline.say(
            f"{DEPLOYMENT}: stable {_short(stable)} on {endpoints[0]}; {PROD_ALIAS} -> {_short(stable)}"
        )
        orchestration = await ServiceProcess.start(
            "orchestration", directory / "orchestration.log", "--server", targets.orchestration
        )
        timeline.say("front door (ServiceCoordinator) follows the traffic table")
        story = Story(timeline, connection, inference, storyteller, orchestration)
        await story.show_history()
        warmup = await story.traffic()
        story.say_traffic(warmup, 1)
        expect(
            set(warmup) <= {f"{stable} stable allowed", f"{stable} stable blocked"},
            f"before any rollout every request goes to stable {stable}: {dict(warmup)}",
        )

        title = f"Run 1: canary of {_short(good)}, as well-behaved as stable"
        timeline.heading(title)
        first = await story.canary_run(title, good, endpoints[1])
        check_success(first)
        alias = await connection.registry.get_alias(name=PROD_ALIAS)
        expect(alias.version == good, f"after success {PROD_ALIAS} points at {alias.version}, not {good}")
        timeline.say(f"{PROD_ALIAS} -> {_short(alias.version)}")

        timeline.heading("Run 2: canary of the next version, whose stories break the policy")
        wild = await register(timeline, connection, WILD_RELEASE)
        second = await story.canary_run(f"Run 2: canary of {_short(wild)}", wild, endpoints[2])
        check_rollback(second)
        alias = await connection.registry.get_alias(name=PROD_ALIAS)
        expect(
            alias.version == good, f"after the rollback {PROD_ALIAS} points at {alias.version}, not {good}"
        )
        deployment = await connection.deployments.get_deployment(name=DEPLOYMENT)
        expect(
            deployment.traffic.stable.model_version == good and not deployment.traffic.canary.model_version,
            f"after the rollback the table serves {good} alone: {deployment.traffic}",
        )
        timeline.say(f"{PROD_ALIAS} still -> {_short(alias.version)}; the table serves it alone")
        after = await story.traffic()
        story.say_traffic(after, 1)
        expect(
            set(after) <= {f"{good} stable allowed", f"{good} stable blocked"},
            f"after the rollback every request goes to stable {good}: {dict(after)}",
        )

        timeline.heading("Flush and aggregate")
        await story.flush()
        agreements = await check_gate_figures(story, [first, second])
        groups = await connection.logs.aggregate_log_events(
            filter=f'deployment = "{DEPLOYMENT}"',
            group_by=[
                logs_pb2.LOG_GROUP_BY_MODEL_VERSION,
                logs_pb2.LOG_GROUP_BY_TRAFFIC_SLOT,
                logs_pb2.LOG_GROUP_BY_KIND,
            ],
        )
        shipped: dict[str, dict[str, int]] = {}
        for service in story.services:
            shipped[service.name] = await service.stop()
            counters = shipped[service.name]
            expect(
                counters["dropped"]
                == counters["rejected"]
                == counters["unconvertible"]
                == counters["abandoned"]
                == 0
                and counters["acknowledged"] == counters["accepted"],
                f"{service.name} shipped every event it made once: {counters}",
            )
        timeline.say(
            "services stopped; events shipped and acknowledged: "
            + ", ".join(f"{name} {counters['acknowledged']}" for name, counters in shipped.items())
        )
    return StoryResult([first, second], agreements, groups, shipped)


def check_decided_once(run: RunResult) -> None:
    """Each decision is in the history once, however many replicas' step drivers raced for it: one start,
    each step advanced once, one end, and a gate verdict change written once."""
    transitions = [entry.transition for entry in run.history]
    ends = [transition for transition in transitions if transition in ENDING_TRANSITIONS]
    expect(
        transitions.count(deployments_pb2.DEPLOYMENT_TRANSITION_ROLLOUT_STARTED) == 1
        and len(ends) == 1
        and transitions[-1] == ends[0],
        f"{run.rollout.name} started once and ended once: {[describe_entry(e) for e in run.history]}",
    )
    steps = [
        entry.traffic_after.canary.weight_bp
        for entry in run.history
        if entry.transition == deployments_pb2.DEPLOYMENT_TRANSITION_STEP_ADVANCED
    ]
    expect(steps == sorted(set(steps)), f"{run.rollout.name} advanced each step once: {steps}")
    verdicts = [
        tuple(evaluation.verdict for evaluation in entry.gate_evaluations)
        for entry in run.history
        if entry.transition == deployments_pb2.DEPLOYMENT_TRANSITION_GATE_EVALUATED
    ]
    expect(
        all(before != after for before, after in itertools.pairwise(verdicts)),
        f"{run.rollout.name} wrote each change of the gates' verdicts once: {verdicts}",
    )


def check_success(run: RunResult) -> None:
    check_decided_once(run)
    expect(
        run.rollout.state == deployments_pb2.ROLLOUT_STATE_SUCCEEDED,
        f"{run.rollout.name} ended {deployments_pb2.RolloutState.Name(run.rollout.state)}, not SUCCEEDED",
    )
    deciding = [entry for entry in run.history if entry.gate_evaluations]
    expect(bool(deciding), f"{run.rollout.name}: no history entry carries the gates' evaluations")
    last = run.deciding
    expect(
        last.transition == deployments_pb2.DEPLOYMENT_TRANSITION_SUCCEEDED,
        f"{run.rollout.name}: the last entry is {describe_entry(last)}",
    )
    expect(
        {evaluation.gate for evaluation in last.gate_evaluations} == set(GATE_NAMES)
        and all(e.verdict == deployments_pb2.GATE_VERDICT_PASS for e in last.gate_evaluations),
        f"{run.rollout.name} succeeded with every gate passing: {describe_entry(last)}",
    )
    expect(any(" canary " in key for key in run.traffic), "the canary took traffic")


def check_rollback(run: RunResult) -> None:
    check_decided_once(run)
    expect(
        run.rollout.state == deployments_pb2.ROLLOUT_STATE_ROLLED_BACK,
        f"{run.rollout.name} ended {deployments_pb2.RolloutState.Name(run.rollout.state)}, not ROLLED_BACK",
    )
    last = run.deciding
    expect(
        last.transition == deployments_pb2.DEPLOYMENT_TRANSITION_ROLLED_BACK,
        f"{run.rollout.name}: the last entry is {describe_entry(last)}",
    )
    failed = [e for e in last.gate_evaluations if e.verdict == deployments_pb2.GATE_VERDICT_FAIL]
    expect(
        [e.gate for e in failed] == ["story-blocks"],
        f"{run.rollout.name} was rolled back by story-blocks alone: {describe_entry(last)}",
    )
    expect("story-blocks" in last.reason, f"the rollback's reason names the gate: {last.reason!r}")
    blocks = failed[0]
    expect(
        blocks.canary_value > blocks.threshold and blocks.canary_samples >= MIN_SAMPLES,
        f"the canary's block rate is over its bound: {describe_evaluation(blocks)}",
    )


async def check_gate_figures(story: Story, runs: Sequence[RunResult]) -> list[Agreement]:
    """Every gate evaluation that decided a step, read again through AggregateLogEvents."""
    agreements = []
    for run in runs:
        gates = run.rollout.analysis.gates
        for entry in run.history:
            if entry.transition == deployments_pb2.DEPLOYMENT_TRANSITION_GATE_EVALUATED:
                continue
            for evaluation in entry.gate_evaluations:
                if supported(evaluation.signal):
                    agreements.append(await check_agreement(story.connection, DEPLOYMENT, gates, evaluation))
    expect(bool(agreements), "some gate evaluation decided a step")
    rows = []
    for agreement in agreements:
        evaluation = agreement.evaluation
        rows.append(
            (
                evaluation.gate,
                f"{evaluation.canary_value:.4g} / {agreement.canary.value:.4g}",
                f"{evaluation.canary_samples} / {agreement.canary.samples}",
                f"{evaluation.stable_value:.4g} / {agreement.stable.value:.4g}",
                f"{evaluation.stable_samples} / {agreement.stable.samples}",
                "yes" if agreement.agrees else "NO",
            )
        )
    story.timeline.block(
        "The figures each deciding gate evaluation used (gate / AggregateLogEvents over the same window):\n"
        + table(("gate", "canary value", "canary n", "stable value", "stable n", "equal"), rows)
    )
    for agreement in agreements:
        expect(
            agreement.agrees, f"AggregateLogEvents disagrees with {describe_evaluation(agreement.evaluation)}"
        )
    return agreements


def summary(result: StoryResult) -> str:
    """The runs, the traffic by model version and slot, as two tables."""
    run_rows = []
    for run in result.runs:
        last = run.deciding
        failed = [e.gate for e in last.gate_evaluations if e.verdict == deployments_pb2.GATE_VERDICT_FAIL]
        run_rows.append(
            (
                _short(run.version),
                deployments_pb2.RolloutState.Name(run.rollout.state).removeprefix("ROLLOUT_STATE_"),
                ", ".join(failed) if failed else "every gate passed",
                last.actor,
                sum(run.traffic.values()),
            )
        )
    runs = table(("canary", "outcome", "decided by", "actor", "requests"), run_rows)
    group_rows = []
    for group in result.groups:
        kind = logs_pb2.LogEventKind.Name(group.kind).removeprefix("LOG_EVENT_KIND_").lower()
        slot = common_pb2.TrafficSlot.Name(group.traffic_slot).removeprefix("TRAFFIC_SLOT_").lower()
        cost = f"{group.cost.micros / group.count:.1f}" if kind == "inference" and group.count else "-"
        blocks = f"{group.guardrail_block_rate:.3f}" if kind == "guardrail" else "-"
        group_rows.append(
            (_short(group.model_version), slot, kind, group.count, group.error_count, blocks, cost)
        )
    groups = table(
        ("version", "slot", "kind", "events", "errors", "block rate", "micro-USD/call"), group_rows
    )
    return f"Runs:\n{runs}\n\nAggregateLogEvents of {DEPLOYMENT} by model version, slot and kind:\n{groups}"


async def main_async(
    out: TextIO | None, *, database_url: str | None, directory: Path | None, replicas: int
) -> int:
    timeline = Timeline(out)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelplane-demo-")))
        try:
            result = await run_story(
                timeline, directory=directory, database_url=database_url, replicas=replicas
            )
        except (StoryFailed, DemoProcessError) as failure:
            timeline.block(f"\nFAILED: {failure}")
            return 1
        timeline.block("\n" + summary(result))
        timeline.block(f"\nThe whole story happened as told in {timeline.elapsed:.1f} s.")
    return 0


def main(
    out: TextIO | None = None,
    *,
    database_url: str | None = None,
    directory: Path | None = None,
    replicas: int = 1,
) -> int:
    """Runs the story; 0 when every step happened as told, 1 (after saying what did not) otherwise."""
    return asyncio.run(main_async(out, database_url=database_url, directory=directory, replicas=replicas))
