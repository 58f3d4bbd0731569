"""The guardrails benchmark over gRPC: CheckContent of a 2 KB text against a realistic policy (5,000 banned
terms, 20 regular expressions, every PII detector, a length limit), as a share of the grpc.health.v1 Check
baseline measured in the same run, at each concurrency.

`python -m bench.guardrails_grpc` starts a server process on a database (as bench/run.py does) and drives it
from a second process; `--target HOST:PORT` drives a running server without auth instead (`--json` prints
the raw measurements). Two texts are checked: a clean one (ALLOW, nothing stored: the check alone) and one
with an e-mail address (REDACT: the check plus one violation record written). The clean text is also checked
against a second policy with the same rules in shadow (a candidate revision equal to the active one, so the
shadow costs one more check of the same policy): the ratio of the two shows what shadow evaluation costs.
It only prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import string
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.registry_load import Call, Cell, measure_level, wait_serving
from bench.run import REPO, bench_database, server_process
from modelplane.client.channel import channel_options
from modelplane.v1 import guardrails_pb2, guardrails_pb2_grpc

if TYPE_CHECKING:
    from modelplane.v1.guardrails_pb2_grpc import GuardrailServiceAsyncStub

BASELINE = "Health/Check"
CLEAN = "CheckContent(clean)"
FLAGGED = "CheckContent(1 violation)"
SHADOWED = "CheckContent(clean, shadow)"
# CheckContent of a clean text is good enough when it keeps this share of the baseline's throughput.
TARGET = 0.6
CALL_TIMEOUT = 10.0
TEXT_CHARS = 2048
BANNED_TERMS = 5_000
REGEXES = 20
# A fixed seed: every run checks the same policy and texts.
RANDOM_SEED = 20_250_101

# Prose the texts are made of: common words that none of the generated banned terms can equal.
_PROSE_TEXT = (
    "the lighthouse keeper walked along the harbor at dawn while gulls circled above the quiet water and "
    "the fishing boats returned with their morning catch. children ran across the square to the bakery, "
    "where warm bread cooled on the shelves and the baker told stories about storms of years gone by. "
    "in the afternoon the wind turned, clouds gathered over the hills, and the village prepared for rain. "
    "she wrote a letter to her brother, describing the garden, the new school, the market on thursday "
    "and the old bridge that the council had finally decided to repair before the winter came. "
)
_PROSE = tuple(_PROSE_TEXT.split(" ")[:-1])

_REGEX_PATTERNS = (
    r"\b(?:kill|hurt|harm)\s+(?:him|her|them|you)\b",
    r"\border\s*#?\d{6,10}\b",
    r"\b(?:password|passwd|pwd)\s*[:=]\s*\S+",
    r"\bticket[- ]?[A-Z]{2,4}-\d{3,6}\b",
    r"\b(?:buy|sell)\s+now\b",
    r"\bwww\.[a-z0-9-]+\.(?:xyz|top|click)\b",
    r"\b\d{1,3}(?:,\d{3})+\s*(?:USD|EUR|GBP)\b",
    r"(?i)\bguaranteed\s+(?:returns?|profits?)\b",
    r"\b(?:bet|casino|jackpot)\w*\b",
    r"\bcall\s+(?:me|us)\s+at\b",
    r"\b[A-Z]{5}\d{4}[A-Z]\b",
    r"\bcase\s+no\.?\s*\d{2}-\d{4,6}\b",
    r"\b(?:diagnosed|diagnosis)\s+with\b",
    r"\b(?:wire|transfer)\s+\$?\d+",
    r"(?i)\bignore\s+(?:all\s+)?previous\s+instructions\b",
    r"\bsystem\s+prompt\b",
    r"\b(?:hate|despise)\s+(?:all|every)\b",
    r"\bdate\s+of\s+birth\b",
    r"\b(?:home|street)\s+address\b",
    r"\bpassport\s+(?:no|number)\b",
)


def banned_terms(count: int, rng: random.Random) -> list[str]:
    """`count` distinct made-up words and two-word phrases, none of them a word of the prose."""
    prose = set(re.findall(r"[a-z]+", _PROSE_TEXT))
    terms: set[str] = set()
    while len(terms) < count:
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 10)))
        if rng.random() < 0.2:
            word += " " + "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 8)))
        if word not in prose:
            terms.add(word)
    return sorted(terms)


def bench_policy(terms: int = BANNED_TERMS) -> guardrails_pb2.Policy:
    """The benchmark's policy: banned terms (CRITICAL), 20 expressions (WARNING), every PII detector
    (ERROR), a length limit (WARNING), with the default decision table."""
    rng = random.Random(RANDOM_SEED)
    rules = [
        guardrails_pb2.Rule(
            id="banned",
            severity=guardrails_pb2.SEVERITY_CRITICAL,
            category="banned",
            banned_terms=guardrails_pb2.BannedTermsRule(terms=banned_terms(terms, rng)),
        ),
        guardrails_pb2.Rule(
            id="pii", severity=guardrails_pb2.SEVERITY_ERROR, category="pii", pii=guardrails_pb2.PiiRule()
        ),
        guardrails_pb2.Rule(
            id="length",
            severity=guardrails_pb2.SEVERITY_WARNING,
            category="length",
            length=guardrails_pb2.LengthRule(max_chars=20_000),
        ),
    ]
    rules += [
        guardrails_pb2.Rule(
            id=f"regex-{index:02d}",
            severity=guardrails_pb2.SEVERITY_WARNING,
            category="content",
            regex=guardrails_pb2.RegexRule(pattern=pattern),
        )
        for index, pattern in enumerate(_REGEX_PATTERNS[:REGEXES])
    ]
    return guardrails_pb2.Policy(
        display_name="benchmark policy",
        rules=rules,
        default_fallback="This story is not available right now.",
        fail_mode=guardrails_pb2.FAIL_MODE_CLOSED,
    )


def bench_text(chars: int = TEXT_CHARS, *, flagged: bool = False) -> str:
    """`chars` characters of prose; `flagged` puts one e-mail address in the middle."""
    words: list[str] = []
    size = 0
    index = 0
    while size < chars:
        word = _PROSE[index % len(_PROSE)]
        words.append(word)
        size += len(word) + 1
        index += 1
    if flagged:
        words.insert(len(words) // 2, "write to mara.keeper@example.org")
    return " ".join(words)[:chars]


def _calls(
    channel: grpc.aio.Channel, guardrails: GuardrailServiceAsyncStub, policy: str, shadowed: str
) -> dict[str, Call]:
    health = health_pb2_grpc.HealthStub(channel)
    health_request = health_pb2.HealthCheckRequest(service="")
    clean, flagged = bench_text(), bench_text(flagged=True)

    def check(text: str, name: str = policy) -> Awaitable[object]:
        # A fresh request id per call, as the typed client sends one.
        request = guardrails_pb2.CheckContentRequest(policy=name, text=text, request_id=uuid.uuid4().hex)
        return guardrails.CheckContent(request, timeout=CALL_TIMEOUT)

    return {
        BASELINE: lambda: health.Check(health_request, timeout=CALL_TIMEOUT),
        CLEAN: lambda: check(clean),
        SHADOWED: lambda: check(clean, shadowed),
        FLAGGED: lambda: check(flagged),
    }


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    """Creates the policy, checks both texts once to confirm their verdicts, measures every cell, and
    deletes the policy (its violation records stay, as they do for any deleted policy)."""
    async with grpc.aio.insecure_channel(args.target, options=channel_options()) as channel:
        await wait_serving(channel)
        guardrails: GuardrailServiceAsyncStub = guardrails_pb2_grpc.GuardrailServiceStub(channel)
        policy_id = f"bench-{uuid.uuid4().hex[:8]}"
        print(f"creating policies/{policy_id} ({BANNED_TERMS} terms, {REGEXES} regexes) ...", file=sys.stderr)
        created = await guardrails.CreatePolicy(
            guardrails_pb2.CreatePolicyRequest(policy_id=policy_id, policy=bench_policy()),
            timeout=60.0,
        )
        policy = created.policy.name
        shadowed_id = f"{policy_id}-shadow"
        shadowed = (
            await guardrails.CreatePolicy(
                guardrails_pb2.CreatePolicyRequest(policy_id=shadowed_id, policy=bench_policy()), timeout=60.0
            )
        ).policy.name
        await guardrails.SetShadowRevision(
            guardrails_pb2.SetShadowRevisionRequest(name=shadowed, policy=bench_policy()), timeout=60.0
        )
        try:
            verdicts = {}
            for label, text in ((CLEAN, bench_text()), (FLAGGED, bench_text(flagged=True))):
                response = await guardrails.CheckContent(
                    guardrails_pb2.CheckContentRequest(policy=policy, text=text), timeout=CALL_TIMEOUT
                )
                verdicts[label] = guardrails_pb2.Decision.Name(response.verdict.decision).removeprefix(
                    "DECISION_"
                )
            calls = _calls(channel, guardrails, policy, shadowed)
            cells: list[Cell] = []
            for concurrency in args.concurrency:
                print(f"  baseline and CheckContent at concurrency {concurrency} ...", file=sys.stderr)
                cells += await measure_level(calls, concurrency, args.warmup, args.duration, args.rounds)
            report = await guardrails.GetShadowReport(
                guardrails_pb2.GetShadowReportRequest(name=shadowed), timeout=60.0
            )
            shadow = {
                "checks": report.checks,
                "skipped": report.skipped,
                "unchecked": report.shadow.unchecked,
                "changed": report.changed_decisions,
            }
        finally:
            for name in (policy, shadowed):
                await guardrails.DeletePolicy(
                    guardrails_pb2.DeletePolicyRequest(name=name), timeout=CALL_TIMEOUT
                )
    return {"verdicts": verdicts, "cells": [asdict(cell) for cell in cells], "shadow": shadow}


def format_report(result: dict[str, Any], args: argparse.Namespace, where: str) -> str:
    """The table: one block per concurrency, each CheckContent's QPS also as a share of the baseline's."""
    cells: list[dict[str, Any]] = result["cells"]
    baseline = {cell["concurrency"]: cell["qps"] for cell in cells if cell["rpc"] == BASELINE}
    verdicts = result["verdicts"]
    lines = [
        "modelplane guardrails benchmark (CheckContent over gRPC)",
        f"  policy: {BANNED_TERMS} banned terms, {REGEXES} regular expressions, every PII detector, "
        "a length limit",
        f"  texts: {TEXT_CHARS} characters; clean -> {verdicts[CLEAN]}, "
        f"with one e-mail address -> {verdicts[FLAGGED]} (one violation record written per call)",
        f"  server and client in separate processes on this machine ({os.cpu_count()} CPUs); "
        "one channel, asyncio callers",
        f"  {where}",
        f"  {args.duration:g} s measured per cell in {args.rounds} slices taken in turn with the other RPCs, "
        f"after {args.warmup:g} s of warm-up",
        "",
    ]
    header = f"{'RPC':<30}{'conc':>5}{'QPS':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs base':>9}  {'errors':<8}"
    below: list[str] = []
    for concurrency in args.concurrency:
        lines.append(header)
        for cell in (c for c in cells if c["concurrency"] == concurrency):
            rpc = cell["rpc"]
            ratio = ""
            if rpc != BASELINE and baseline.get(concurrency):
                share = cell["qps"] / baseline[concurrency]
                ratio = f"{share:.2f}"
                if rpc == CLEAN:
                    ok = share >= TARGET
                    ratio += " ok" if ok else " <-"
                    if not ok:
                        below.append(f"{rpc} at concurrency {concurrency} ({share:.2f})")
            errors = ",".join(f"{code}={n}" for code, n in sorted(cell["errors"].items())) or "0"
            label = f"{rpc} (baseline)" if rpc == BASELINE else rpc
            lines.append(
                f"{label:<30}{concurrency:>5}{cell['qps']:>10.0f}{cell['p50_ms']:>9.2f}{cell['p99_ms']:>9.2f}"
                f"{ratio:>9}  {errors:<8}"
            )
        lines.append("")
    lines.append(
        f"target: CheckContent of the clean text at {TARGET:.1f} of the baseline's QPS at the same "
        "concurrency or better (vs base = QPS / Health/Check QPS)"
    )
    lines.append("below target: " + ("; ".join(below) if below else "none"))
    lines.append("")
    lines.extend(shadow_lines(cells, args.concurrency, result["shadow"]))
    return "\n".join(lines)


def shadow_lines(cells: list[dict[str, Any]], concurrencies: list[int], shadow: dict[str, int]) -> list[str]:
    """What a shadow costs: the shadowed policy's QPS as a share of the same policy's without one, and the
    extra time a call takes, counted in checks (1.0: as much as a second check)."""
    qps = {(cell["rpc"], cell["concurrency"]): cell["qps"] for cell in cells}
    lines = [
        f"shadow evaluation (a candidate equal to the active revision): {shadow['checks']} checks evaluated "
        f"under the shadow, {shadow['skipped']} skipped (shadow queue full), {shadow['unchecked']} out of "
        f"budget, {shadow['changed']} decided differently"
    ]
    for concurrency in concurrencies:
        plain, shadowed = qps.get((CLEAN, concurrency)), qps.get((SHADOWED, concurrency))
        if not plain or not shadowed:
            continue
        ratio = shadowed / plain
        extra = plain / shadowed - 1
        verdict = "ok" if extra < 1 else "<- over one extra check"
        lines.append(
            f"  concurrency {concurrency}: {SHADOWED} at {ratio:.2f} of {CLEAN}'s QPS; "
            f"extra cost {extra:.2f} of a check {verdict} (target: below 1.00)"
        )
    return lines


def _load_in_process_of_its_own(target: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.guardrails_grpc",
        "--target",
        target,
        "--json",
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--rounds",
        str(args.rounds),
        "--concurrency",
        ",".join(str(level) for level in args.concurrency),
    ]
    finished = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the load process failed with exit code {finished.returncode}")
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    return seconds


def _concurrencies(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"every concurrency must be 1 or more, got {value!r}")
    return levels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardrails_grpc", description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="HOST:PORT of a running modelplane server without auth")
    parser.add_argument("--json", action="store_true", help="with --target: print the raw measurements")
    parser.add_argument("--database-url", help="without --target: the Postgres to run the server on")
    parser.add_argument("--embedded", action="store_true", help="without --target: use an embedded Postgres")
    parser.add_argument(
        "--server-log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="without --target: the server's --log-level (INFO)",
    )
    parser.add_argument("--duration", type=_positive, default=3.0, help="seconds measured per cell (3)")
    parser.add_argument("--warmup", type=_positive, default=0.5, help="seconds of warm-up per cell (0.5)")
    parser.add_argument(
        "--concurrency", type=_concurrencies, default=[1, 16], help="callers per cell, comma-separated (1,16)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="slices each cell is cut into, taken in turn with the others (3)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.target is not None:
        result = asyncio.run(run_load(args))
        if args.json:
            json.dump(result, sys.stdout)
            sys.stdout.write("\n")
        else:
            print(format_report(result, args, f"server at {args.target}"))
        return 0
    with tempfile.NamedTemporaryFile("w+", prefix="modelplane-bench-server-", suffix=".log") as log_file:
        try:
            with (
                bench_database(args.database_url, embedded_only=args.embedded) as database,
                server_process(database.url, args.server_log_level, log_file) as target,
            ):
                print(f"server on {target}; database: {database.description}", file=sys.stderr)
                result = _load_in_process_of_its_own(target, args)
        except RuntimeError as exc:
            log_file.seek(0)
            tail = log_file.read().splitlines()[-30:]
            print(f"bench: {exc}; the server's last log lines:", *tail, sep="\n  ", file=sys.stderr)
            return 1
    print(
        format_report(
            result, args, f"database: {database.description}; server log level {args.server_log_level}"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
