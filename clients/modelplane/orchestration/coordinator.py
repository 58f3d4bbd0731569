"""ServiceCoordinator: routes each request of a service to a deployment's endpoint, locally, and calls it.

Without a deployment manager it routes by static routes (deployment name -> endpoints and weights). With
one (a `DeploymentClient`), it follows each deployment it routes for with WatchDeployment and keeps a local
copy of its traffic table; routing is then a local decision with the same function as the server's
ResolveRoute (modelplane.client.routing), with no RPC per request. When the control plane is unreachable
it keeps routing with the last table it had and reconnects with capped exponential backoff; a reconnect
asks for the current state first, so it resyncs as soon as the server is back. A static route given for a
deployment that is also watched serves until the first table arrives (a cold start while the control
plane is away).

Health: every call's outcome is counted per endpoint. After `unhealthy_after` consecutive failures the
endpoint is reported not ready (ReportEndpointHealth), and the first success after that reports it ready
again; `report_health` reports explicitly (an endpoint's own probe). Reports run in the background and
never slow or fail a call. An endpoint the deployment manager marks NOT_READY gets no more traffic, so its
return must be reported by whoever probes it.

Events: with an `EventSink`, every routed call (also one that found no endpoint) emits one RoutingEvent;
a sink that raises is counted in `sink_errors` and never breaks the call.
"""

# The `timeout` parameters are per-call limits handed on to the transport and asyncio.wait_for.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from modelplane.client.events import EventSink, GuardedSink, RoutingEvent, RoutingOutcome
from modelplane.client.retry import Backoff, BackoffPolicy
from modelplane.client.routing import random_point
from modelplane.orchestration.traffic import (
    CompiledTable,
    NoEndpointError,
    RouteTarget,
    TrafficTable,
    static_table,
    table_from_deployment,
)
from modelplane.orchestration.transport import (
    InProcessTransport,
    RequestRejected,
    Transport,
    routing_headers,
)
from modelplane.v1 import registry_pb2

if TYPE_CHECKING:
    from modelplane.client.deployments import DeploymentClient

__all__ = ["DEFAULT_RECONNECT", "ServiceCoordinator"]

logger = logging.getLogger(__name__)

StaticRoute = TrafficTable | Sequence[str]


# A broken watch is reopened for as long as the coordinator runs, after at least half the ceiling.
DEFAULT_RECONNECT = BackoffPolicy(initial=0.05, multiplier=2.0, maximum=5.0, jitter=0.5)


class _Followed:
    """What the coordinator knows of one watched deployment."""

    __slots__ = ("first_answer", "revision", "synced", "task")

    def __init__(self) -> None:
        self.first_answer = asyncio.Event()
        self.revision = 0
        self.synced = False
        self.task: asyncio.Task[None] | None = None


class ServiceCoordinator:
    """Routes calls to deployments' endpoints by their traffic tables; use as `async with`, or `aclose()`."""

    def __init__(
        self,
        *,
        deployments: DeploymentClient | None = None,
        static_routes: Mapping[str, StaticRoute] | None = None,
        transport: Transport | None = None,
        events: EventSink | None = None,
        watch: Iterable[str] = (),
        call_timeout: float | None = 30.0,
        first_table_timeout: float = 5.0,
        unhealthy_after: int = 3,
        report_health: bool = True,
        reconnect: BackoffPolicy = DEFAULT_RECONNECT,
    ) -> None:
        if deployments is None and not static_routes:
            raise ValueError("give a deployment manager (deployments=...) or static_routes, or both")
        if unhealthy_after < 1:
            raise ValueError("unhealthy_after must be at least 1")
        self._deployments = deployments
        self._transport: Transport = transport if transport is not None else InProcessTransport()
        self._events = GuardedSink(events, logger)
        self._call_timeout = call_timeout
        self._first_table_timeout = first_table_timeout
        self._unhealthy_after = unhealthy_after
        self._report_health = report_health and deployments is not None
        self._reconnect = reconnect
        self._static: dict[str, CompiledTable] = {}
        for name, route in (static_routes or {}).items():
            table = route if isinstance(route, TrafficTable) else static_table(name, route)
            self._static[name] = CompiledTable(table)
        # The tables routing uses, by deployment: a watched table once one arrived, else the static one.
        self._routes: dict[str, CompiledTable] = dict(self._static)
        self._followed: dict[str, _Followed] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._reported_down: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._initial_watch = tuple(watch)

    # Life cycle.

    async def start(self) -> None:
        """Starts following the deployments named in `watch` and waits (up to first_table_timeout each)
        for their first tables; one that does not arrive in time is followed on in the background."""
        await asyncio.gather(*(self.follow(name) for name in self._initial_watch))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stops every watch and background report and closes the transport (not the DeploymentClient)."""
        self._closed = True
        tasks = [state.task for state in self._followed.values() if state.task is not None]
        tasks.extend(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._transport.aclose()

    # What the coordinator knows.

    @property
    def sink_errors(self) -> int:
        """How many times the event sink raised (each time the event was dropped and the call went on)."""
        return self._events.errors

    def table(self, deployment: str) -> TrafficTable | None:
        """The traffic table routing uses now for `deployment`, None if it has none."""
        compiled = self._routes.get(deployment)
        return compiled.table if compiled is not None else None

    def is_synced(self, deployment: str) -> bool:
        """True while the watch of `deployment` is connected and has delivered the current state."""
        state = self._followed.get(deployment)
        return state is not None and state.synced

    # Following deployments.

    async def follow(self, deployment: str, *, timeout: float | None = None) -> TrafficTable | None:
        """Starts following `deployment` (once) and waits up to `timeout` (default first_table_timeout)
        for the deployment manager's first answer; returns the table routing then uses."""
        if self._deployments is None:
            return self.table(deployment)
        state = self._followed.get(deployment)
        if state is None:
            state = self._followed[deployment] = _Followed()
            state.task = asyncio.create_task(self._follow(deployment, state), name=f"watch {deployment}")
        if not state.first_answer.is_set():
            wait = self._first_table_timeout if timeout is None else timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.first_answer.wait(), wait)
        return self.table(deployment)

    def _install(self, state: _Followed, table: TrafficTable) -> None:
        if table.revision < state.revision:
            return
        state.revision = table.revision
        self._routes[table.deployment] = CompiledTable(table)

    def _forget(self, deployment: str) -> None:
        # A deleted deployment falls back to its static route, if it has one.
        static = self._static.get(deployment)
        if static is not None:
            self._routes[deployment] = static
        else:
            self._routes.pop(deployment, None)

    async def _follow(self, deployment: str, state: _Followed) -> None:
        assert self._deployments is not None
        backoff = Backoff(self._reconnect)
        while not self._closed:
            try:
                # Always from revision 0: each message is a whole table, so the current state is all a
                # reconnect needs, and a compacted change log can never strand the coordinator.
                async for response in self._deployments.watch_deployment(
                    deployment=deployment, start_revision=0, resume=False
                ):
                    backoff.reset()
                    if response.HasField("change"):
                        change = response.change
                        if change.kind == registry_pb2.CHANGE_KIND_DELETED:
                            state.revision = change.revision
                            self._forget(deployment)
                        else:
                            self._install(state, table_from_deployment(change.deployment))
                    state.synced = True
                    state.first_answer.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if backoff.failures == 0:
                    logger.warning(
                        "watch of %s broke (%s); routing on with the last table", deployment, error
                    )
            state.synced = False
            await asyncio.sleep(backoff.next_delay())

    # Routing.

    def route(self, deployment: str, routing_key: str = "") -> RouteTarget:
        """Where a request goes, decided locally: sticky by `routing_key`, random without one. Raises
        NoEndpointError if the deployment has no table or no endpoint that is not NOT_READY."""
        compiled = self._routes.get(deployment)
        if compiled is None:
            raise NoEndpointError(deployment, "no traffic table (not followed yet, or unknown)")
        if routing_key:
            return compiled.route(routing_key)
        return compiled.route_point(random_point())

    async def call(
        self,
        deployment: str,
        payload: Any,
        *,
        routing_key: str = "",
        trace_id: str = "",
        request_id: str = "",
        timeout: float | None = None,
    ) -> Any:
        """Routes one request and calls the chosen endpoint through the transport; returns its answer.

        Raises NoEndpointError when there is nowhere to send it, TimeoutError after `timeout` (default
        call_timeout), and whatever the transport raises (RequestRejected, EndpointFailed, ...)."""
        if self._deployments is not None and deployment not in self._followed:
            await self.follow(deployment)
        try:
            target = self.route(deployment, routing_key)
        except NoEndpointError as error:
            self._emit_no_endpoint(deployment, error, trace_id, request_id)
            raise
        limit = self._call_timeout if timeout is None else timeout
        headers = routing_headers(target, trace_id=trace_id, request_id=request_id)
        started = time.perf_counter()
        outcome: RoutingOutcome = "ok"
        failure: BaseException | None = None
        try:
            call = self._transport.call(target, payload, timeout=limit, headers=headers)
            return await (call if limit is None else asyncio.wait_for(call, limit))
        except TimeoutError as error:
            outcome, failure = "timeout", error
            raise
        except BaseException as error:
            outcome, failure = "error", error
            raise
        finally:
            latency = time.perf_counter() - started
            if not isinstance(failure, asyncio.CancelledError):
                self._count_outcome(target, failure)
            self._events.emit(
                RoutingEvent(
                    deployment=deployment,
                    traffic_slot=target.slot,
                    endpoint=target.endpoint,
                    model_version=target.model_version,
                    outcome=outcome,
                    latency_seconds=latency,
                    rollout=target.rollout,
                    routed_by=target.source,
                    table_revision=target.revision,
                    error_type=type(failure).__name__ if failure is not None else "",
                    error_message=str(failure)[:500] if failure is not None else "",
                    trace_id=trace_id,
                    request_id=request_id,
                )
            )

    # Health.

    def _count_outcome(self, target: RouteTarget, failure: BaseException | None) -> None:
        key = (target.deployment, target.endpoint)
        if failure is None or isinstance(failure, RequestRejected):
            self._failures.pop(key, None)
            if key in self._reported_down:
                self._reported_down.discard(key)
                self._report_later(target.deployment, target.endpoint, ready=True)
            return
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        if count >= self._unhealthy_after and key not in self._reported_down:
            self._reported_down.add(key)
            self._report_later(target.deployment, target.endpoint, ready=False)

    def endpoint_failures(self, deployment: str) -> dict[str, int]:
        """Consecutive failed calls per endpoint of `deployment` (endpoints with none are left out)."""
        return {endpoint: n for (name, endpoint), n in self._failures.items() if name == deployment}

    def _report_later(self, deployment: str, endpoint: str, *, ready: bool) -> None:
        if not self._report_health or self._closed:
            return
        task = asyncio.create_task(self._report(deployment, endpoint, ready=ready))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report(self, deployment: str, endpoint: str, *, ready: bool) -> None:
        try:
            await self.report_health(deployment, endpoint, ready=ready)
        except Exception as error:
            logger.warning("could not report %s of %s as ready=%s: %s", endpoint, deployment, ready, error)

    async def report_health(self, deployment: str, endpoint: str, *, ready: bool) -> bool:
        """Reports an endpoint ready or not to the deployment manager; True if that changed its table.
        Without a deployment manager it only resets the local failure count. Raises what the client does
        (DeploymentNotFound, Unavailable, ...)."""
        key = (deployment, endpoint)
        if ready:
            self._failures.pop(key, None)
            self._reported_down.discard(key)
        else:
            self._reported_down.add(key)
        if self._deployments is None:
            return False
        response = await self._deployments.report_endpoint_health(
            deployment=deployment, address=endpoint, ready=ready
        )
        return response.changed

    # Events.

    def _emit_no_endpoint(
        self, deployment: str, error: NoEndpointError, trace_id: str, request_id: str
    ) -> None:
        compiled = self._routes.get(deployment)
        table = compiled.table if compiled is not None else None
        self._events.emit(
            RoutingEvent(
                deployment=deployment,
                traffic_slot="",
                endpoint="",
                model_version="",
                outcome="no_endpoint",
                latency_seconds=0.0,
                rollout=table.rollout if table is not None else "",
                routed_by=table.source if table is not None else "",
                table_revision=table.revision if table is not None else 0,
                error_type=type(error).__name__,
                error_message=str(error),
                trace_id=trace_id,
                request_id=request_id,
            )
        )
