"""The guardrails rule engine alone, on one core: checks per second of a 2 KB text against 5,000 banned
terms, 20 regular expressions and every PII detector, then how the time grows with the number of terms
and with the text's size, and how long an event loop waits while a worker thread checks a 1 MB text (as
the server checks large texts). Prints figures only; a low figure never fails anything."""

from __future__ import annotations

import asyncio
import random
import statistics
import string
import sys
import time

from modelplane.server.guardrails.engine import (
    BannedTerms,
    CompiledPolicy,
    Pattern,
    Pii,
    RuleSpec,
    Severity,
    compile_policy,
)

PROSE = (
    "The old lighthouse keeper told the children a story about the sea, the storms of winter and the ships "
    "that found their way home by his lamp. Every evening he climbed the stairs, trimmed the wick and "
    "watched the dark water until morning came over the hills. "
)
# Two findings per 2 KB, as in a narrative that quotes a contact: the common case has few.
CONTACT = "Contact the harbour office at harbour@example.org or call +44 20 7946 0958 for tours. "


def _terms(count: int) -> tuple[str, ...]:
    rng = random.Random(count)
    terms: set[str] = set()
    while len(terms) < count:
        terms.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 12))))
    return tuple(sorted(terms))


def _policy(term_count: int) -> CompiledPolicy:
    rules = [RuleSpec("terms", Severity.CRITICAL, "toxicity", BannedTerms(_terms(term_count)))]
    rules += [
        RuleSpec(f"regex-{i}", Severity.WARNING, "misc", Pattern(rf"\b(?:ticket|case)-{i}\d{{3,}}\b"))
        for i in range(20)
    ]
    rules.append(RuleSpec("pii", Severity.ERROR, "pii", Pii(())))
    return compile_policy(rules)


def _text(size: int) -> str:
    block = (CONTACT + PROSE * 8)[:2_048]
    return (block * (size // len(block) + 1))[:size]


def _rate(policy: CompiledPolicy, text: str, seconds: float = 1.5) -> float:
    policy.check(text)
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(20):
            policy.check(text)
        count += 20
    return count / elapsed


def _loop_stall(policy: CompiledPolicy, text: str) -> float:
    """The longest pause of an event loop that wakes every millisecond while a worker thread checks `text`;
    a thread holding the GIL keeps the loop waiting."""

    async def run() -> float:
        pauses: list[float] = []
        checked = False

        async def tick() -> None:
            last = time.perf_counter()
            while not checked:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                pauses.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.01)
        pauses.clear()
        await asyncio.to_thread(policy.check, text)
        checked = True
        await ticker
        return max(pauses)

    return asyncio.run(run())


def main() -> None:
    started = time.perf_counter()
    policy = _policy(5_000)
    print(f"compile: 5,000 terms + 20 expressions + PII in {time.perf_counter() - started:.3f} s")
    text = _text(2_048)
    result = policy.check(text)
    print(f"2 KB text: {len(result.violations)} violations, decision {result.decision.name}")
    rate = _rate(policy, text)
    print(
        f"engine, 2 KB text, 5,000 terms, 20 expressions, every PII detector: {rate:,.0f} checks/s "
        f"({1e6 / rate:.1f} us/check; target 10,000 checks/s)"
    )
    print("growth with the number of terms (2 KB text):")
    for count in (1_000, 10_000, 100_000):
        started = time.perf_counter()
        grown = _policy(count)
        compiled = time.perf_counter() - started
        rate = _rate(grown, text, 1.0)
        print(f"  {count:>7,} terms: {1e6 / rate:8.1f} us/check  (compile {compiled:.2f} s)")
    print("growth with the text's size (5,000 terms):")
    for size in (2_048, 20_480, 204_800):
        rate = _rate(policy, _text(size), 1.0)
        print(f"  {size // 1024:>4} KB: {1e3 / rate:8.3f} ms/check  ({rate * size / 1e6:.1f} MB/s)")
    print(
        "event loop's longest pause while a worker thread checks a 1 MB text "
        f"(the GIL switch interval is {sys.getswitchinterval() * 1e3:.0f} ms):"
    )
    for name, big in (
        ("prose with contacts", _text(1_000_000)),
        ("non-ASCII prose", ("Über die See und den Leuchtturm, naïve Geschichten. " * 20_000)[:1_000_000]),
    ):
        _loop_stall(policy, big)
        pauses = [_loop_stall(policy, big) * 1e3 for _ in range(7)]
        print(f"  {name}: median {statistics.median(pauses):.1f} ms, worst {max(pauses):.1f} ms of 7 checks")


if __name__ == "__main__":
    main()
