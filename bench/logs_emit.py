"""The cost of `LogShipper.emit` in the caller: median, p99 and max of single calls, timed one by one with
perf_counter_ns, while the shipper's sender thread runs. Three cases: a queue with room, a full queue
(every emit drops the oldest event), and emit from 4 threads at once. Without --target the shipper points
at a port where nothing listens (the sender keeps reconnecting, as during an outage); with --target it
ships to that server. The target figure is a median under 10 microseconds. Prints figures only.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import threading
import time

from modelplane.client.events import InferenceEvent
from modelplane.client.log_shipper import LogShipper

TARGET_MEDIAN_US = 10.0


def _events(count: int) -> list[InferenceEvent]:
    return [
        InferenceEvent(
            model_version="models/chat/versions/3",
            provider="openai",
            provider_model="gpt-4o",
            model_source="registry",
            status="ok",
            latency_seconds=0.2,
            input_tokens=index,
            output_tokens=10,
            request_id=f"req-{index}",
        )
        for index in range(count)
    ]


def _time_emits(shipper: LogShipper, events: list[InferenceEvent]) -> list[int]:
    emit = shipper.emit
    clock = time.perf_counter_ns
    samples = []
    for event in events:
        started = clock()
        emit(event)
        samples.append(clock() - started)
    return samples


def _report(name: str, samples: list[int]) -> None:
    ordered = sorted(samples)
    median = statistics.median(ordered) / 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] / 1000
    verdict = "meets" if median < TARGET_MEDIAN_US else "misses"
    print(
        f"{name:<34} n={len(ordered):>7}  median {median:6.2f} us  p99 {p99:7.2f} us  "
        f"max {ordered[-1] / 1000:9.1f} us  ({verdict} the {TARGET_MEDIAN_US:g} us target)"
    )


def _nowhere() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", help="a modelplane server to ship to (default: nowhere)")
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    # Without a server the sender reports each failed reconnect; the figures are what matters here.
    logging.basicConfig(level=logging.ERROR)
    target = args.target or _nowhere()
    where = f"shipping to {target}" if args.target else "server unreachable"
    print(f"LogShipper.emit, {where}")

    events = _events(args.events)
    shipper = LogShipper(target, service="bench", queue_size=args.events * 2, flush_interval=0.05)
    _report("queue with room", _time_emits(shipper, events))
    shipper.close(timeout=5 if args.target else 0.1)

    shipper = LogShipper(target, service="bench", queue_size=1000, flush_interval=0.05)
    _report("full queue (drops the oldest)", _time_emits(shipper, events))
    print(f"{'':<34} dropped {shipper.stats.dropped} of {shipper.stats.accepted}")
    shipper.close(timeout=5 if args.target else 0.1)

    shipper = LogShipper(target, service="bench", queue_size=args.events * 2, flush_interval=0.05)
    per_thread = args.events // 4
    results: list[list[int]] = [[] for _ in range(4)]

    def run(slot: int) -> None:
        results[slot] = _time_emits(shipper, events[slot * per_thread : (slot + 1) * per_thread])

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _report("4 threads at once", [sample for samples in results for sample in samples])
    shipper.close(timeout=5 if args.target else 0.1)


if __name__ == "__main__":
    main()
