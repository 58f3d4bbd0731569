"""Writes the published gRPC service config: which modelplane methods a client retries, and how.

clients/modelplane/client/service_config.json is what a gRPC client in any language loads (channel
argument or name resolver) to retry as the Python client does: the same attempts and backoff
(DEFAULT_RETRY_POLICY of modelplane.client.retry), on UNAVAILABLE only, for the methods that may run twice
without harm: reads, requests that carry a request_id (AIP-155: a repeat with the same id returns the first
answer) and WriteLogEvents (a resent batch is stored once, by event id). Streams from the client are never
retried: gRPC would replay their messages. With --check it writes nothing and fails when the file is not
what the protos and the policy give (`make check-gen` and the tests run that).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import MethodDescriptor

from modelplane.client.retry import DEFAULT_RETRY_POLICY

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "clients" / "modelplane" / "v1"
OUT = ROOT / "clients" / "modelplane" / "client" / "service_config.json"
# Methods that change nothing, by the verbs the API uses for them.
READ_VERBS = ("Get", "List", "Resolve", "Plan", "Watch", "Query", "Tail", "Aggregate")
# Mutations without a request_id that are idempotent by their own contract (see the method's comment).
IDEMPOTENT = frozenset({"modelplane.v1.LogService/WriteLogEvents"})


def retried(service: str, method: MethodDescriptor) -> bool:
    """Whether a retry of `method` after UNAVAILABLE is safe."""
    if method.client_streaming:
        return False
    return (
        method.name.startswith(READ_VERBS)
        or "request_id" in method.input_type.fields_by_name
        or f"{service}/{method.name}" in IDEMPOTENT
    )


def _seconds(value: float) -> str:
    # The JSON form of google.protobuf.Duration.
    return f"{value:g}s"


def service_config() -> dict[str, Any]:
    names: list[dict[str, str]] = []
    for path in sorted(GENERATED.glob("*_pb2.py")):
        module = importlib.import_module(f"modelplane.v1.{path.stem}")
        for service in module.DESCRIPTOR.services_by_name.values():
            names.extend(
                {"service": service.full_name, "method": method.name}
                for method in service.methods
                if retried(service.full_name, method)
            )
    policy = DEFAULT_RETRY_POLICY
    return {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": policy.max_attempts,
                    "initialBackoff": _seconds(policy.initial_backoff),
                    "maxBackoff": _seconds(policy.max_backoff),
                    "backoffMultiplier": policy.multiplier,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }


def rendered() -> str:
    return json.dumps(service_config(), indent=2) + "\n"


def main() -> None:
    if sys.argv[1:] not in ([], ["--check"]):
        raise SystemExit("usage: gen_service_config.py [--check]")
    wanted = rendered()
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != wanted:
            raise SystemExit(f"{OUT.relative_to(ROOT)} is not what the protos give; run `make gen`")
        print("service config: matches the protos and the retry policy")
        return
    OUT.write_text(wanted)
    print(f"service config: written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
