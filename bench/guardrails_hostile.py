"""The guardrails monitor under hostile policies and texts: the server's event loop's longest pause while each
case is written or checked, next to the pause while a clean 2 KB text is checked (the baseline, measured in
the same run), with what the caller got back.

The server runs in this process; a ticker on its event loop wakes every millisecond and records how late it
wakes. The calls come from a synchronous gRPC client on another thread, which waits in gRPC's core without
the GIL. `python -m bench.guardrails_hostile [--database-url URL]`; it only prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench.run import bench_database
from modelplane.server.app import build_server
from modelplane.server.config import ServerConfig
from modelplane.v1 import guardrails_pb2 as pb
from modelplane.v1 import guardrails_pb2_grpc
from tests.support.hostile_schemas import ref_chain, valid_but_slow

# The event loop's longest pause with any policy that can be written should stay under this.
TARGET_MS = 50.0
CALL_TIMEOUT = 120.0
PROSE = (
    "The old lighthouse keeper told the children a story about the sea, the storms of winter and the ships "
    "that found their way home by his lamp. "
)


def _json(schema: Any) -> pb.Rule:
    return pb.Rule(
        id="shape",
        severity=pb.SEVERITY_CRITICAL,
        category="format",
        json=pb.JsonRule(schema=json.dumps(schema)),
    )


def _policy(rules: list[pb.Rule], fallback: str = "Not available.") -> pb.Policy:
    return pb.Policy(rules=rules, fail_mode=pb.FAIL_MODE_CLOSED, default_fallback=fallback)


KILL = pb.Rule(
    id="violence",
    severity=pb.SEVERITY_CRITICAL,
    category="violence",
    banned_terms=pb.BannedTermsRule(terms=["kill", "stab"]),
)
PII = pb.Rule(id="pii", severity=pb.SEVERITY_ERROR, category="pii", pii=pb.PiiRule())
REGEXES = [
    pb.Rule(
        id=f"r{i}",
        severity=pb.SEVERITY_INFO,
        category="noise",
        regex=pb.RegexRule(pattern=f"[a-z]{{{1 + i % 3}}}"),
    )
    for i in range(1_000)
]
LETTERS = pb.Rule(
    id="letters", severity=pb.SEVERITY_ERROR, category="c" * 63, regex=pb.RegexRule(pattern="x")
)

# (name, policy, text or None for a case that only writes the policy, streamed)
CASES: list[tuple[str, pb.Policy, str | None, bool]] = [
    ("clean 2 KB text (baseline)", _policy([KILL, PII]), (PROSE * 20)[:2048], False),
    ("clean 1 MB text (moving 1 MB through gRPC)", _policy([KILL, PII]), (PROSE * 8_000)[:1_000_000], False),
    (
        "schema $ref to a URL (create)",
        _policy([_json({"$ref": "http://127.0.0.1:9/x.json"})], ""),
        None,
        False,
    ),
    (
        "schema $ref to file:///etc/passwd (create)",
        _policy([_json({"$ref": "file:///etc/passwd"})], ""),
        None,
        False,
    ),
    ("22 $defs, anyOf of two refs each (create)", _policy([_json(ref_chain(22))], ""), None, False),
    ("16 $defs, anyOf of two refs each (create)", _policy([_json(ref_chain(16))], ""), None, False),
    (
        "a chain within the size bound, [1] * 100,000",
        _policy([_json(valid_but_slow(10))], ""),
        json.dumps([1] * 100_000),
        False,
    ),
    (
        "uniqueItems over 1,500 objects",
        _policy([_json({"type": "array", "uniqueItems": True})], ""),
        json.dumps([{"n": i, "t": [i, str(i)]} for i in range(1_500)]),
        False,
    ),
    ('banned terms, "kill " * 200,000 (1 MB)', _policy([KILL]), "kill " * 200_000, False),
    ('banned terms, "kill " * 200,000 streamed in 20 chunks', _policy([KILL]), "kill " * 200_000, True),
    ("1,000 regex rules, 14 KB text", _policy(REGEXES), (PROSE * 120)[:14_000], False),
    ("PII-dense 1 MB (50,000 card numbers)", _policy([PII]), "4111 1111 1111 1111 " * 50_000, False),
    ("1,000,000 one-letter REDACT matches", _policy([LETTERS]), "x" * 1_000_000, False),
]


class LoopWatch:
    """Records how late a task on the loop wakes from 1 ms sleeps; `longest()` since the last reset."""

    def __init__(self) -> None:
        self._pauses: list[float] = []
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self._pauses.append(now - last)
            last = now

    def reset(self) -> None:
        self._pauses.clear()

    def longest(self) -> float:
        return max(self._pauses, default=0.0)

    def stop(self) -> None:
        self._stop = True


def _call(target: str, index: int, policy: pb.Policy, text: str | None, streamed: bool) -> str:
    """Writes the case's policy and checks its text, on a synchronous channel; a summary of the answers."""
    options = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = guardrails_pb2_grpc.GuardrailServiceStub(channel)
        policy_id = f"case-{index}"
        try:
            stub.CreatePolicy(
                pb.CreatePolicyRequest(policy_id=policy_id, policy=policy), timeout=CALL_TIMEOUT
            )
        except grpc.RpcError as error:
            return f"create: {error.code().name}"
        if text is None:
            return "create: OK"
        name = f"policies/{policy_id}"
        if streamed:
            step = len(text) // 20 + 1
            requests = [pb.CheckStreamRequest(start=pb.CheckStreamStart(policy=name))]
            requests += [
                pb.CheckStreamRequest(chunk=text[at : at + step]) for at in range(0, len(text), step)
            ]
            requests.append(pb.CheckStreamRequest(end=pb.CheckStreamEnd()))
            responses = list(stub.CheckStream(iter(requests), timeout=CALL_TIMEOUT))
            verdict, size = responses[-1].verdict, max(r.ByteSize() for r in responses)
        else:
            response = stub.CheckContent(pb.CheckContentRequest(policy=name, text=text), timeout=CALL_TIMEOUT)
            verdict, size = response.verdict, response.ByteSize()
        omitted = sum(verdict.omitted_violations.values())
        flags = " unchecked" if verdict.unchecked else ""
        flags += " redaction_too_large" if verdict.redaction_too_large else ""
        listed = len(verdict.violations)
        decision = pb.Decision.Name(verdict.decision)
        return f"{decision}{flags}, {listed} listed + {omitted} counted, answer {size / 1024:.0f} KiB"


async def _measure(
    target: str, watch: LoopWatch, index: int, case: tuple[str, pb.Policy, str | None, bool]
) -> tuple[float, float, str]:
    _, policy, text, streamed = case
    done: list[str] = []
    finished = asyncio.Event()
    loop = asyncio.get_running_loop()

    def work() -> None:
        try:
            done.append(_call(target, index, policy, text, streamed))
        finally:
            loop.call_soon_threadsafe(finished.set)

    started = time.perf_counter()
    watch.reset()
    threading.Thread(target=work).start()
    await finished.wait()
    return watch.longest() * 1e3, time.perf_counter() - started, done[0] if done else "no answer"


async def _run(database_url: str, rounds: int, select: Callable[[str], bool]) -> None:
    server = build_server(ServerConfig(address="127.0.0.1:0", database_url=database_url, auth=False))
    await server.start()
    await server.wait_serving(timeout=60)
    watch = LoopWatch()
    ticker = asyncio.create_task(watch.run())
    try:
        baseline_ms: float | None = None
        print(f"event loop's longest pause per case (median of {rounds}; target under {TARGET_MS:.0f} ms):")
        for index, case in enumerate(CASES):
            if not select(case[0]) and index:
                continue
            # One round first, not counted: the first call of a kind warms caches and connections.
            await _measure(server.target, watch, index * 100 + rounds, case)
            results = [await _measure(server.target, watch, index * 100 + r, case) for r in range(rounds)]
            pause = statistics.median(r[0] for r in results)
            wall = statistics.median(r[1] for r in results)
            if baseline_ms is None:
                baseline_ms = pause
            ratio = pause / baseline_ms if baseline_ms else float("nan")
            summary = results[-1][2]
            print(f"  {case[0]}: {pause:.1f} ms ({ratio:.1f}x the baseline), call {wall:.2f} s; {summary}")
    finally:
        watch.stop()
        await ticker
        await server.stop(grace=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a Postgres URL; by default a throw-away database")
    parser.add_argument("--embedded", action="store_true", help="run on the embedded Postgres")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per case")
    parser.add_argument("--only", default="", help="run only the cases whose name holds this text")
    args = parser.parse_args()
    with bench_database(args.database_url, embedded_only=args.embedded) as database:
        print(f"guardrails under hostile policies and texts, on {database.description}")
        asyncio.run(_run(database.url, args.rounds, lambda name: args.only in name))


if __name__ == "__main__":
    main()
