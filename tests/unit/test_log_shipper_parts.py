"""The log shipper's parts that need no network: the bounded drop-oldest queue, the batch cutter, the
acknowledgement window, the thread-to-loop bridge, the conversion of typed events into LogEvents, and the
checks LogShipper makes on its settings before it starts anything."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest

from modelplane.client.event_queue import EventQueue
from modelplane.client.events import GuardrailEvent, InferenceEvent, RoutingEvent
from modelplane.client.log_batches import MAX_BATCH_SIZE, Batch, BatchCutter
from modelplane.client.log_events import MAX_ATTRIBUTE_VALUE, MAX_MESSAGE, to_log_event
from modelplane.client.log_shipper import LogShipper
from modelplane.client.log_stream import AckWindow
from modelplane.client.sender_loop import SenderLoop
from modelplane.v1 import common_pb2, guardrails_pb2, logs_pb2

# EventQueue.


def test_the_queue_is_bounded_and_drops_the_oldest_counting_each_drop() -> None:
    queue = EventQueue(3)
    lengths = [queue.put(index) for index in range(5)]
    assert lengths == [1, 2, 3, 3, 3]
    assert [queue.pop() for _ in range(len(queue))] == [2, 3, 4]
    assert (queue.accepted, queue.dropped) == (5, 2)
    with pytest.raises(IndexError):
        queue.pop()


def test_drops_are_reported_once() -> None:
    queue = EventQueue(1)
    for index in range(4):
        queue.put(index)
    assert queue.unreported_dropped() == 3
    assert queue.take_dropped() == 3
    assert queue.take_dropped() == 0
    queue.put(9)
    assert queue.take_dropped() == 1


def test_a_closed_queue_refuses_and_counts() -> None:
    queue = EventQueue(10)
    queue.put("kept")
    queue.close()
    assert queue.put("late") == 0
    assert (queue.accepted, queue.refused, len(queue)) == (1, 1, 1)
    assert queue.clear() == 1
    assert len(queue) == 0


def test_puts_from_many_threads_are_counted_exactly() -> None:
    queue = EventQueue(500)
    popped: list[object] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set() or len(queue):
            with contextlib.suppress(IndexError):
                popped.append(queue.pop())

    def produce(base: int) -> None:
        for index in range(5000):
            queue.put(base + index)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(base,)) for base in range(0, 40_000, 5000)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    stop.set()
    consumer.join()
    # Every event put was either taken by the consumer or counted as dropped, never both, never neither.
    assert queue.accepted == 40_000
    assert len(popped) + queue.dropped == 40_000
    assert len(set(popped)) == len(popped)


def test_the_queue_needs_room() -> None:
    with pytest.raises(ValueError, match="capacity"):
        EventQueue(0)


# BatchCutter.


def _cutter(queue: EventQueue, batch_size: int = 3) -> BatchCutter:
    return BatchCutter(queue, client_id="c-1", service="svc", instance="pod-1", batch_size=batch_size)


def _ready(event_id: str) -> logs_pb2.LogEvent:
    return logs_pb2.LogEvent(event_id=event_id, message=event_id)


def test_batches_are_cut_by_size_and_numbered_in_order() -> None:
    queue = EventQueue(100)
    cutter = _cutter(queue)
    for index in range(7):
        queue.put(_ready(f"e-{index}"))

    batches = [cutter.next_batch() for _ in range(4)]

    assert batches[3] is None
    sent = [b for b in batches if b is not None]
    assert [b.sequence for b in sent] == [1, 2, 3]
    assert [b.events for b in sent] == [3, 3, 1]
    assert [[e.event_id for e in b.request.batch.events] for b in sent] == [
        ["e-0", "e-1", "e-2"],
        ["e-3", "e-4", "e-5"],
        ["e-6"],
    ]
    first = sent[0].request.batch
    assert (first.client_id, first.events[0].service, first.events[0].instance) == ("c-1", "svc", "pod-1")


def test_every_loss_is_reported_once_in_the_next_batch() -> None:
    queue = EventQueue(2)
    cutter = _cutter(queue)
    for index in range(5):
        queue.put(_ready(f"e-{index}"))  # three dropped from the full queue
    queue.put(object())  # pushes e-3 out, and cannot be converted
    cutter.reject(4)  # a batch of four the server refused

    assert cutter.unreported_losses() == 4 + 4
    batch = cutter.next_batch()
    assert batch is not None
    assert [e.event_id for e in batch.request.batch.events] == ["e-4"]
    assert batch.request.batch.dropped_since_last == 4 + 1 + 4
    assert (cutter.unconvertible, cutter.rejected) == (1, 4)
    assert cutter.unreported_losses() == 0
    assert cutter.next_batch() is None


def test_a_batch_may_carry_only_losses() -> None:
    queue = EventQueue(10)
    cutter = _cutter(queue)
    queue.put("not an event")

    batch = cutter.next_batch()

    assert batch is not None
    assert (batch.sequence, batch.events, batch.request.batch.dropped_since_last) == (1, 0, 1)
    assert cutter.next_batch() is None


def test_the_cutter_keeps_to_the_servers_batch_limit() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        _cutter(EventQueue(1), batch_size=MAX_BATCH_SIZE + 1)


# AckWindow.


def _batch(sequence: int, events: int) -> Batch:
    return Batch(sequence, logs_pb2.StreamLogEventsRequest(), events)


def test_acknowledgements_release_batches_in_order_and_cumulatively() -> None:
    window = AckWindow(3)
    for sequence, events in ((1, 5), (2, 0), (3, 7)):
        window.add(_batch(sequence, events))
    assert window.full
    assert window.events == 12

    assert [b.sequence for b in window.acknowledge(2)] == [1, 2]
    assert (len(window), window.events, window.full) == (1, 7, False)
    assert window.acknowledge(2) == []
    assert [b.sequence for b in window.acknowledge(9)] == [3]
    assert (len(window), window.events, window.oldest_sent_at()) == (0, 0, None)


def test_a_refused_batch_leaves_the_window_by_its_named_sequence_else_the_oldest() -> None:
    window = AckWindow(4)
    for sequence in (4, 5, 6):
        window.add(_batch(sequence, sequence))

    named = window.refuse("5")
    unnamed = window.refuse("")

    assert (named and named.sequence, unnamed and unnamed.sequence) == (5, 4)
    assert [b.sequence for b in window] == [6]
    assert window.events == 6
    window.acknowledge(6)
    assert window.refuse("6") is None


def test_iterating_the_window_survives_releases_meanwhile() -> None:
    window = AckWindow(2)
    window.add(_batch(1, 1))
    window.add(_batch(2, 1))
    seen = []
    for batch in window:
        window.acknowledge(batch.sequence)
        seen.append(batch.sequence)
    assert seen == [1, 2]


def test_the_window_needs_room() -> None:
    with pytest.raises(ValueError, match="room"):
        AckWindow(0)


# SenderLoop: the thread-to-loop bridge.


def test_a_sender_on_its_own_thread_is_woken_from_many_threads_and_stopped() -> None:
    sender = SenderLoop(name="test-sender", own_thread=True)
    wakeups = 0
    loop_threads: set[int] = set()

    async def main() -> None:
        nonlocal wakeups
        loop_threads.add(threading.get_ident())
        while not sender.stopping.is_set():
            await sender.wakeup.wait()
            sender.wakeup.clear()
            wakeups += 1
            sender.notify()

    sender.wake()  # before the start: nothing to wake, and no error
    sender.start(main)
    assert not sender.on_loop_thread()
    wakers = [threading.Thread(target=sender.wake) for _ in range(8)]
    for thread in wakers:
        thread.start()
    for thread in wakers:
        thread.join()
    # Every wake is seen: at least one wakeup follows the last of them.
    assert sender.wait_for(lambda: wakeups >= 1, timeout=10.0)
    sender.stop(timeout=10.0)

    assert sender.loop.is_closed()
    assert len(loop_threads) == 1
    assert threading.get_ident() not in loop_threads
    sender.wake()  # after the end: nothing to wake, and no error
    sender.stop(timeout=1.0)


def test_a_thread_waits_for_progress_the_loop_makes() -> None:
    sender = SenderLoop(name="test-sender", own_thread=True)
    progress = 0

    async def main() -> None:
        nonlocal progress
        while not sender.stopping.is_set():
            await sender.wakeup.wait()
            sender.wakeup.clear()
            progress += 1
            sender.notify()

    sender.start(main)
    results: list[bool] = []
    waiters = [
        threading.Thread(target=lambda: results.append(sender.wait_for(lambda: progress >= 3, 10.0)))
        for _ in range(4)
    ]
    for thread in waiters:
        thread.start()
    for step in range(1, 4):
        # One wake at a time: wakes that arrive before the loop takes the last one are a single wakeup.
        sender.wake()
        assert sender.wait_for(lambda: progress >= step, 10.0)  # noqa: B023 -- used before the next step
    for thread in waiters:
        thread.join()
    sender.stop(timeout=10.0)
    assert results == [True] * 4
    # Progress that never comes ends the wait at its timeout, with False.
    assert sender.wait_for(lambda: progress >= 100, 0.0) is False


async def test_a_sender_on_the_running_loop_runs_as_a_task_and_is_stopped() -> None:
    sender = SenderLoop(name="test-sender", own_thread=False)
    woken = asyncio.Event()
    ended = False

    async def main() -> None:
        nonlocal ended
        await sender.wakeup.wait()
        woken.set()
        await sender.stopping.wait()
        ended = True

    sender.start(main)
    assert sender.on_loop_thread()
    assert not sender.owns_thread
    # From another thread, as a synchronous caller of the shipper would.
    await asyncio.to_thread(sender.wake)
    await asyncio.wait_for(woken.wait(), 10.0)
    await sender.astop()
    assert ended
    with pytest.raises(RuntimeError, match="once"):
        sender.start(main)


def test_a_sender_on_the_callers_loop_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        SenderLoop(name="test-sender", own_thread=False)


# Conversion.

WHEN = datetime(2030, 5, 17, 12, 30, 0, 123456, tzinfo=UTC)


def test_an_inference_event_becomes_an_inference_payload() -> None:
    event = InferenceEvent(
        model_version="models/chat/versions/3",
        provider="openai",
        provider_model="gpt-4o",
        model_source="registry",
        status="ok",
        latency_seconds=0.25,
        input_tokens=100,
        output_tokens=40,
        cached_input_tokens=60,
        reasoning_tokens=10,
        cost_micros=1234,
        cost_currency_code="USD",
        finish_reason="stop",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        request_id="req-1",
        event_time=WHEN,
        deployment="deployments/chat-prod",
        traffic_slot="stable",
    )
    message = to_log_event(event, service="inference", instance="pod-7")
    assert message.event_id == event.event_id
    assert message.event_time.ToDatetime(tzinfo=UTC) == WHEN
    assert (message.service, message.instance, message.level) == (
        "inference",
        "pod-7",
        logs_pb2.LOG_LEVEL_INFO,
    )
    assert message.WhichOneof("payload") == "inference"
    payload = message.inference
    assert (payload.provider, payload.model_version) == ("openai", "models/chat/versions/3")
    assert (payload.input_tokens, payload.output_tokens) == (100, 40)
    assert (payload.cached_input_tokens, payload.reasoning_tokens) == (60, 10)
    assert payload.latency.ToTimedelta() == timedelta(milliseconds=250)
    assert (payload.cost.currency_code, payload.cost.micros) == ("USD", 1234)
    assert payload.status == logs_pb2.INFERENCE_STATUS_OK
    assert message.links == common_pb2.EventLinks(
        model_version="models/chat/versions/3",
        deployment="deployments/chat-prod",
        traffic_slot=common_pb2.TRAFFIC_SLOT_STABLE,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        request_id="req-1",
    )
    assert dict(message.attributes) == {
        "provider_model": "gpt-4o",
        "model_source": "registry",
        "finish_reason": "stop",
    }


def test_an_inference_without_known_prices_leaves_the_cost_to_the_server() -> None:
    event = InferenceEvent("models/chat/versions/3", "local", "echo", "registry", "ok", 0.1, input_tokens=5)
    assert not to_log_event(event, service="inference").inference.HasField("cost")


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("ProviderError", logs_pb2.INFERENCE_STATUS_ERROR),
        ("TimeoutError", logs_pb2.INFERENCE_STATUS_TIMEOUT),
        ("CancelledError", logs_pb2.INFERENCE_STATUS_CANCELLED),
    ],
)
def test_a_failed_inference_is_an_error_with_its_cause(
    error_type: str, status: logs_pb2.InferenceStatus.ValueType
) -> None:
    event = InferenceEvent(
        "", "openai", "gpt-4o", "configured", "error", 2.0, error_type=error_type, error_message="x" * 9000
    )
    message = to_log_event(event, service="inference")
    assert message.level == logs_pb2.LOG_LEVEL_ERROR
    assert message.inference.status == status
    assert message.attributes["error_type"] == error_type
    # A long error text is cut to the server's limit rather than getting the batch refused.
    assert error_type in message.message
    assert len(message.message) == MAX_MESSAGE


def test_a_guardrail_verdict_becomes_a_guardrail_payload() -> None:
    event = GuardrailEvent(
        policy="policies/kids-safe",
        policy_revision=4,
        decision="block",
        violation_count=2,
        highest_severity="critical",
        checked=True,
        status="ok",
        latency_seconds=0.003,
        rule_ids=("violence", "pii"),
        model_version="models/story/versions/1",
        deployment="deployments/story-prod",
        traffic_slot="canary",
        trace_id="t",
        request_id="r",
    )
    message = to_log_event(event, service="storyteller")
    assert message.level == logs_pb2.LOG_LEVEL_WARNING
    assert message.guardrail == logs_pb2.GuardrailPayload(
        policy="policies/kids-safe",
        revision=4,
        decision=guardrails_pb2.DECISION_BLOCK,
        violation_count=2,
        highest_severity=guardrails_pb2.SEVERITY_CRITICAL,
    )
    assert message.links == common_pb2.EventLinks(
        model_version="models/story/versions/1",
        deployment="deployments/story-prod",
        traffic_slot=common_pb2.TRAFFIC_SLOT_CANARY,
        policy="policies/kids-safe",
        policy_revision=4,
        trace_id="t",
        request_id="r",
    )
    assert message.attributes["rule_ids"] == "violence,pii"
    assert message.attributes["checked"] == "true"


@pytest.mark.parametrize(
    ("fail_mode", "decision"),
    [("closed", guardrails_pb2.DECISION_BLOCK), ("open", guardrails_pb2.DECISION_ALLOW)],
)
def test_a_check_the_monitor_did_not_answer_records_what_the_fail_mode_did(
    fail_mode: str, decision: guardrails_pb2.Decision.ValueType
) -> None:
    event = GuardrailEvent(
        policy="policies/kids-safe",
        policy_revision=0,
        decision="",
        violation_count=0,
        highest_severity="",
        checked=False,
        status="error",
        latency_seconds=5.0,
        fail_mode=fail_mode,
        error_type="Unavailable",
        error_message="connection refused",
    )
    message = to_log_event(event, service="storyteller")
    assert message.level == logs_pb2.LOG_LEVEL_ERROR
    assert message.guardrail.decision == decision
    assert message.guardrail.highest_severity == guardrails_pb2.SEVERITY_UNSPECIFIED
    assert (message.attributes["checked"], message.attributes["fail_mode"]) == ("false", fail_mode)


def test_a_routed_call_becomes_a_routing_payload() -> None:
    event = RoutingEvent(
        deployment="deployments/chat-prod",
        traffic_slot="stable",
        endpoint="http://10.0.0.7:8000",
        model_version="models/chat/versions/2",
        outcome="fallback",
        latency_seconds=0.04,
        rollout="deployments/chat-prod/rollouts/5",
        routed_by="deployment_manager",
        table_revision=17,
        request_id="r",
    )
    message = to_log_event(event, service="orchestration")
    assert message.level == logs_pb2.LOG_LEVEL_WARNING
    assert message.routing == logs_pb2.RoutingPayload(
        deployment="deployments/chat-prod",
        rollout="deployments/chat-prod/rollouts/5",
        slot=common_pb2.TRAFFIC_SLOT_STABLE,
        endpoint="http://10.0.0.7:8000",
        outcome=logs_pb2.ROUTING_OUTCOME_FALLBACK,
        latency=message.routing.latency,
    )
    assert message.routing.latency.ToTimedelta() == timedelta(milliseconds=40)
    assert message.links.model_version == "models/chat/versions/2"
    assert message.links.traffic_slot == common_pb2.TRAFFIC_SLOT_STABLE
    assert dict(message.attributes) == {"routed_by": "deployment_manager", "table_revision": "17"}


def test_a_call_no_endpoint_could_take_is_an_error() -> None:
    event = RoutingEvent(
        "deployments/chat-prod", "", "", "", "no_endpoint", 0.0, error_type="NoReadyEndpoint"
    )
    message = to_log_event(event, service="orchestration")
    assert message.level == logs_pb2.LOG_LEVEL_ERROR
    assert message.routing.outcome == logs_pb2.ROUTING_OUTCOME_NO_ENDPOINT
    assert message.links.traffic_slot == common_pb2.TRAFFIC_SLOT_UNSPECIFIED


def test_a_ready_log_event_is_copied_and_completed() -> None:
    given = logs_pb2.LogEvent(event_id="e-1", message="cache warmed", attributes={"region": "eu"})
    message = to_log_event(given, service="inference", instance="pod-1")
    assert message is not given
    assert not given.service
    assert (message.service, message.instance, message.level) == (
        "inference",
        "pod-1",
        logs_pb2.LOG_LEVEL_INFO,
    )
    assert message.HasField("event_time")
    assert message.attributes["region"] == "eu"


def test_attribute_values_are_cut_to_the_servers_limit() -> None:
    event = GuardrailEvent(
        "policies/p",
        1,
        "allow",
        60,
        "info",
        True,
        "ok",
        0.001,
        rule_ids=tuple(f"rule-{i}" for i in range(60)),
    )
    assert len(to_log_event(event, service="s").attributes["rule_ids"]) == MAX_ATTRIBUTE_VALUE


@pytest.mark.parametrize(
    "event",
    [
        object(),
        "a plain string",
        logs_pb2.LogEvent(message="no event id"),
        GuardrailEvent("policies/p", 1, "maybe", 0, "", True, "ok", 0.1),
        GuardrailEvent("policies/p", 1, "allow", 0, "", True, "ok", 0.1, traffic_slot="blue"),
        RoutingEvent("deployments/d", "stable", "e", "", "lost", 0.1),  # type: ignore[arg-type]
    ],
)
def test_what_has_no_place_in_the_contract_is_refused(event: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_log_event(event, service="s")


# Settings, checked before anything starts.


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"service": "Story Teller"}, "service"),
        ({"service": ""}, "service"),
        ({"service": "s", "batch_size": 1001}, "batch_size"),
        ({"service": "s", "queue_size": 0}, "queue_size"),
        ({"service": "s", "flush_interval": 0}, "flush_interval"),
        ({"service": "s", "client_id": "has/slash"}, "client_id"),
        ({"service": "s", "instance": "x" * 129}, "instance"),
        ({"service": "s", "initial_backoff": 2.0, "max_backoff": 1.0}, "backoff"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LogShipper("127.0.0.1:1", **settings)  # type: ignore[arg-type]
