"""The cost of a registry read's response in the servicer: built from the cached domain value on every call,
or taken from the servicer's memo (proto_memo.py), which builds it once per cached value.

Run by bench/run.py after the registry benchmark, in a process of its own: `python -m bench.registry_convert`.
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from modelplane.pricing import Prices
from modelplane.server.proto_memo import ProtoMemo
from modelplane.server.registry import servicer
from modelplane.server.registry.domain import ModelVersion, Resolution, VersionState

CALLS = 20_000
ROUNDS = 5


def sample_version() -> ModelVersion:
    """A typical chat model version, as the benchmark's seed writes them."""
    now = datetime.now(UTC)
    return ModelVersion(
        model_id="bench-openai-chat-00",
        version_id=3,
        provider="openai",
        description="release 3 of bench-openai-chat-00",
        source_uri="s3://models/bench-openai-chat-00/3",
        source_sha256="a" * 64,
        capabilities=("chat", "streaming", "completion", "tool_use", "json_mode"),
        context_window=128_000,
        max_output_tokens=16_384,
        pricing=Prices(currency_code="USD", input=2_500_000, output=10_000_000, cached_input=250_000),
        state=VersionState.READY,
        labels={"eval": "passed", "release": "r3"},
        parent_version="",
        source_run="",
        aliases=("prod", "staging"),
        create_time=now,
        update_time=now,
        etag="0123456789abcdef",
    )


def microseconds(call: Callable[[], object]) -> str:
    """median (min-max) microseconds a call over ROUNDS rounds of CALLS calls."""
    times = [timeit.timeit(call, number=CALLS) / CALLS * 1e6 for _ in range(ROUNDS)]
    return f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) us"


def main() -> int:
    version = sample_version()
    resolution = Resolution(version, 42)
    versions = ProtoMemo(servicer.get_version_response)
    resolutions = ProtoMemo(servicer.resolve_response)
    print("registry responses in the servicer (median (min-max) over rounds of 20,000 calls)")
    print(
        f"  GetModelVersion response built:  {microseconds(lambda: servicer.get_version_response(version))}"
    )
    print(f"  GetModelVersion response memo:   {microseconds(lambda: versions(version))}")
    print(f"  ResolveModel response built:     {microseconds(lambda: servicer.resolve_response(resolution))}")
    print(f"  ResolveModel response memo:      {microseconds(lambda: resolutions(resolution))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
