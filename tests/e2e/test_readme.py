"""README.md is a contract: every shell command and Python snippet in it runs here, in README order, against
one live server and database, and its output is checked, so the README cannot drift from the code.

How the examples run (tests/support/readme_runner.py): the server is started with the Makefile's own
`run` command, its `127.0.0.1:50051` replaced by a free loopback port, its data directory by a temporary
one, and `--database-url` added for the throw-away database of tests/conftest.py. Every shell command
runs with bash in the repository's root, after the variable assignments before it in its block, with the
README's `127.0.0.1:50051` replaced by the live server's address and its example database URL
(`postgresql://postgres@127.0.0.1:5432/modelplane`) by the test's; the environment carries no
MODELPLANE_* variable of the developer's, but MODELPLANE_DATABASE_URL (the test's database, which the
token commands use) and MODELPLANE_ADDRESS (a spare port, where a `serve` without `--address` listens).
A command whose comment says "(Ctrl-C to stop)" runs until its output shows what its check waits for,
then gets SIGINT. Each Python snippet is written to a file and run as a program with this interpreter,
its address replaced the same way; each TypeScript (```ts) snippet likewise, as an ES module run with the
package's tsx after `make ts-build`, importing `@modelplane/client` as an installed package.

What is checked: every command has an entry in SHELL_CHECKS and every snippet one in PYTHON_CHECKS (or
TYPESCRIPT_CHECKS), in
README order, each naming a fragment of the command it belongs to; a block that is neither run nor marked
`<!-- readme-test: skip: REASON -->` fails the test, and so does a check left over. A block marked
`<!-- readme-test: filters: REASON -->` is a list of filter expressions, each sent to the list RPCs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from modelplane.server.app import build_server
from modelplane.server.config import ServerConfig
from modelplane.server.store.urls import with_database
from modelplane.server.workers import default_worker_count
from modelplane.v1 import logs_pb2, logs_pb2_grpc, registry_pb2, registry_pb2_grpc
from tests.support.live_server import drop_database
from tests.support.readme_blocks import Block, ShellCommand, parse_blocks, shell_commands
from tests.support.readme_runner import (
    README_ADDRESS,
    README_DATABASE_URL,
    README_HTTP_ADDRESS,
    REPOSITORY,
    Output,
    Sandbox,
    Until,
    free_address,
    make_recipe,
    started_server,
)

README = REPOSITORY / "README.md"
SHELL = ("sh", "bash")
# grpcurl exits with 64 + the gRPC status code of a failed call.
GRPCURL_NOT_FOUND = 64 + grpc.StatusCode.NOT_FOUND.value[0]

Check = Callable[[Output, Sandbox], None]


@dataclass(frozen=True)
class Expect:
    """What one README command or snippet must do. `fragment` is a piece of its text, so that a check
    never lands on the wrong command; `until` says when a streaming command has shown enough."""

    fragment: str
    check: Check
    until: Until | None = None


# ---------------------------------------------------------------------------------------------------------
# Reading outputs


def messages(stdout: str) -> list[Any]:
    """The JSON objects grpcurl printed one after another; an interrupted stream's partial last one is
    left out."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    while True:
        while position < len(stdout) and stdout[position].isspace():
            position += 1
        if position == len(stdout):
            return found
        try:
            value, position = decoder.raw_decode(stdout, position)
        except json.JSONDecodeError:
            return found
        found.append(value)


def reply(output: Output) -> Any:
    """The one JSON answer of a unary grpcurl call that succeeded."""
    assert output.returncode == 0, output.describe()
    answers = messages(output.stdout)
    assert len(answers) == 1, output.describe()
    return answers[0]


def ok(output: Output) -> None:
    assert output.returncode == 0, output.describe()
    assert not output.interrupted, output.describe()


def shows(count: int, key: str) -> Until:
    """A stream has shown enough once `count` of its messages carry `key`."""

    def until(stdout: str, stderr: str) -> bool:
        return sum(key in message for message in messages(stdout)) >= count

    return until


# ---------------------------------------------------------------------------------------------------------
# The shell commands, in README order


def serve_on_another_database(output: Output, sandbox: Sandbox) -> None:
    assert output.interrupted, output.describe()
    # SIGINT stops the server as SIGTERM does: gracefully, exit code 0.
    assert output.returncode == 0, output.describe()
    assert f"modelplane serving on {sandbox.spare_address}" in output.stderr, output.describe()
    assert "auth is OFF" in output.stderr
    assert "health: SERVING" in output.stderr
    assert "Traceback" not in output.stderr


def service_list(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert set(output.stdout.split()) >= {
        "grpc.health.v1.Health",
        "modelplane.v1.ModelRegistryService",
        "modelplane.v1.DeploymentService",
        "modelplane.v1.GuardrailService",
        "modelplane.v1.LogService",
    }, output.describe()


def registry_described(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert "service ModelRegistryService {" in output.stdout, output.describe()
    assert "rpc ResolveModel" in output.stdout
    assert "returns ( stream .modelplane.v1.WatchModelsResponse )" in output.stdout
    # Reflection's descriptors carry no comments (the next block reads them from the .proto files).
    assert "//" not in output.stdout


def health_serving(output: Output, sandbox: Sandbox) -> None:
    assert reply(output) == {"status": "SERVING"}


def model_created(output: Output, sandbox: Sandbox) -> None:
    model = reply(output)["model"]
    assert model["name"] == "models/chat-large"
    assert (model["provider"], model["display_name"]) == ("openai", "Chat large")
    assert model["labels"] == {"team": "assistants"}


def first_version_created(output: Output, sandbox: Sandbox) -> None:
    version = reply(output)["model_version"]
    assert version["name"] == "models/chat-large/versions/1"
    assert version["capabilities"] == ["CAPABILITY_CHAT", "CAPABILITY_TOOL_USE"]
    assert version["state"] == "MODEL_VERSION_STATE_READY"
    # int64 fields print as strings (the proto3 JSON mapping).
    assert version["pricing"]["output_micros_per_million"] == "10000000"


def alias_set(output: Output, sandbox: Sandbox) -> None:
    alias = reply(output)["alias"]
    assert alias["name"] == "models/chat-large/aliases/prod"
    assert alias["version"] == "models/chat-large/versions/1"


def resolved_to_first_version(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    assert answer["model_version"]["name"] == "models/chat-large/versions/1"
    assert answer["model_version"]["aliases"] == ["prod"]
    assert int(answer["revision"]) >= 3


def search_found_first_version(output: Output, sandbox: Sandbox) -> None:
    names = [version["name"] for version in reply(output)["model_versions"]]
    assert names == ["models/chat-large/versions/1"]


def resolution_failed(output: Output, sandbox: Sandbox) -> None:
    assert output.returncode == GRPCURL_NOT_FOUND, output.describe()
    assert "Code: NotFound" in output.stderr
    assert '"reason":"NO_MATCHING_MODEL"' in output.stderr, output.describe()
    # The ResolveModelFailure detail: the version and the first constraint it failed.
    assert '"model_version":"models/chat-large/versions/1"' in output.stderr
    assert '"constraint":"constraints.min_context_window"' in output.stderr


def models_watched(output: Output, sandbox: Sandbox) -> None:
    assert output.interrupted, output.describe()
    watched = messages(output.stdout)
    changes = [message["change"] for message in watched if "change" in message]
    # From revision 1 on, inclusive: the model's creation (1), the version (2), then the alias, which also
    # changes the version's list of aliases (3).
    assert [(c["revision"], c["kind"], c["resource"]) for c in changes] == [
        ("1", "CHANGE_KIND_CREATED", "models/chat-large"),
        ("2", "CHANGE_KIND_CREATED", "models/chat-large/versions/1"),
        ("3", "CHANGE_KIND_CREATED", "models/chat-large/aliases/prod"),
        ("3", "CHANGE_KIND_UPDATED", "models/chat-large/versions/1"),
    ], output.describe()
    assert "progress" in watched[-1], output.describe()


def json_reply(output: Output) -> Any:
    """The JSON body curl printed for a call that succeeded."""
    ok(output)
    return json.loads(output.stdout)


def http_health(output: Output, sandbox: Sandbox) -> None:
    assert json_reply(output) == {"status": "SERVING"}


def http_model(display_name: str, description: str) -> Check:
    def check(output: Output, sandbox: Sandbox) -> None:
        model = json_reply(output)["model"]
        assert model["name"] == "models/chat-small", output.describe()
        # The proto3 JSON mapping: lowerCamelCase names, every field present.
        assert (model["displayName"], model["description"]) == (display_name, description)
        assert model["labels"] == {}

    return check


def http_deleted(output: Output, sandbox: Sandbox) -> None:
    assert json_reply(output) == {}, output.describe()
    with grpc.insecure_channel(sandbox.address) as channel:
        registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        missing = refusal(registry.GetModel, registry_pb2.GetModelRequest(name="models/chat-small"))
    assert missing == grpc.StatusCode.NOT_FOUND


def http_resolved_to_first_version(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    assert answer["modelVersion"]["name"] == "models/chat-large/versions/1", output.describe()
    assert answer["modelVersion"]["aliases"] == ["prod"]


def http_search_found_first_version(output: Output, sandbox: Sandbox) -> None:
    names = [version["name"] for version in json_reply(output)["modelVersions"]]
    assert names == ["models/chat-large/versions/1"], output.describe()


def http_error(output: Output, status: int, code: grpc.StatusCode) -> dict[str, Any]:
    """The details, by type, of the google.rpc.Status curl printed before its `-w` HTTP status line."""
    ok(output)
    body, printed_status = output.stdout.rsplit("\n", 1)[0].rsplit("\n", 1)
    assert printed_status == str(status), output.describe()
    error = json.loads(body)
    assert error["code"] == code.value[0], output.describe()
    return {detail["@type"].rpartition("/")[2]: detail for detail in error["details"]}


def http_resolution_failed(output: Output, sandbox: Sandbox) -> None:
    details = http_error(output, 404, grpc.StatusCode.NOT_FOUND)
    assert details["google.rpc.ErrorInfo"]["reason"] == "NO_MATCHING_MODEL"
    (rejection,) = details["modelplane.v1.ResolveModelFailure"]["rejections"]
    assert rejection["modelVersion"] == "models/chat-large/versions/1"
    assert rejection["constraint"] == "constraints.min_context_window"


def sse_data(stdout: str) -> list[Any]:
    """The data of every whole event a Server-Sent Events stream printed."""
    events = stdout.split("\n\n")[:-1]
    return [
        json.loads(line[len("data: ") :])
        for event in events
        for line in event.splitlines()
        if line.startswith("data: ")
    ]


def http_models_watched(output: Output, sandbox: Sandbox) -> None:
    assert output.interrupted, output.describe()
    changes = [message["change"] for message in sse_data(output.stdout) if "change" in message]
    assert [(c["revision"], c["resource"]) for c in changes[:4]] == [
        ("1", "models/chat-large"),
        ("2", "models/chat-large/versions/1"),
        ("3", "models/chat-large/aliases/prod"),
        ("3", "models/chat-large/versions/1"),
    ], output.describe()
    # Each event's id resumes the watch after it (Last-Event-ID): the K-th change of revision N is "N:K".
    assert "id: 3:2\n" in output.stdout, output.describe()


def http_models_watched_as_lines(output: Output, sandbox: Sandbox) -> None:
    assert output.interrupted, output.describe()
    lines = [json.loads(line) for line in output.stdout.splitlines()[:4]]
    assert [line["result"]["change"]["revision"] for line in lines] == ["1", "2", "3", "3"], output.describe()


def sse_shows(count: int) -> Until:
    def until(stdout: str, stderr: str) -> bool:
        return sum("change" in data for data in sse_data(stdout)) >= count

    return until


def succeeded(output: Output, sandbox: Sandbox) -> None:
    ok(output)


def request_described_with_comments(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert "message QueryLogEventsRequest {" in output.stdout, output.describe()
    # From the .proto files, unlike reflection, the comments come along.
    assert "//" in output.stdout


def token_created(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert re.fullmatch(r"mp_\S+\n", output.stdout), output.describe()
    # In the server's database (MODELPLANE_DATABASE_URL), stored as its SHA-256 only.
    query = "SELECT secret_sha256 FROM api_tokens WHERE name = 'release-pipeline'"
    stored = asyncio.run(fetch_value(sandbox.database_url, query))
    assert stored == hashlib.sha256(output.stdout.strip().encode()).digest()


async def fetch_value(database_url: str, query: str) -> object:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def scoped_token_created(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert re.fullmatch(r"mp_\S+\n", output.stdout), output.describe()
    query = "SELECT scopes FROM api_tokens WHERE name = 'web-frontend'"
    stored = asyncio.run(fetch_value(sandbox.database_url, query))
    assert sorted(stored) == ["deployments/web", "models/chat-large"], stored  # type: ignore[call-overload]


def tokens_listed(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    header, *rows = output.stdout.strip().splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED", "REVOKED", "SCOPES"]
    assert [row.split()[1:3] + row.split()[4:] for row in rows] == [
        ["release-pipeline", "operator", "-", "*"],
        ["web-frontend", "service", "-", "deployments/web,models/chat-large"],
    ], output.describe()


def token_revoked(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert "tok_" in output.stdout, output.describe()


def policy_created(output: Output, sandbox: Sandbox) -> None:
    policy = reply(output)["policy"]
    assert (policy["name"], policy["revision"]) == ("policies/kids-stories", "1")
    assert [rule["id"] for rule in policy["rules"]] == ["cards", "violence"]


def card_redacted(output: Output, sandbox: Sandbox) -> None:
    verdict = reply(output)["verdict"]
    assert verdict["decision"] == "DECISION_REDACT"
    assert verdict["redacted_text"] == "Pay with [REDACTED:pii] today."


def violence_blocked(output: Output, sandbox: Sandbox) -> None:
    verdict = reply(output)["verdict"]
    assert verdict["decision"] == "DECISION_BLOCK"
    assert verdict["fallback_content"] == "The knight and the dragon became friends."
    assert [v["rule_id"] for v in verdict["violations"]] == ["violence"]
    # redacted_text is set only on REDACT.
    assert "redacted_text" not in verdict


def violations_listed(output: Output, sandbox: Sandbox) -> None:
    found = reply(output)["violations"]
    # Newest first: the blocked check, then the redacted one.
    assert [(v["rule_id"], v["severity"]) for v in found] == [
        ("violence", "SEVERITY_CRITICAL"),
        ("cards", "SEVERITY_ERROR"),
    ]
    assert found[0]["links"]["model_version"] == "models/chat-large/versions/1"


def shadow_set(output: Output, sandbox: Sandbox) -> None:
    policy = reply(output)["policy"]
    # The candidate is revision 2, in shadow; revision 1 stays active.
    assert (policy["revision"], policy["shadow_revision"]) == ("1", "2"), output.describe()


def active_verdict_only(output: Output, sandbox: Sandbox) -> None:
    verdict = reply(output)["verdict"]
    assert verdict["decision"] == "DECISION_ALLOW", output.describe()
    assert verdict["policy_revision"] == "1"


def shadow_reported(output: Output, sandbox: Sandbox) -> None:
    report = reply(output)
    assert (report["shadow_revision"], report["checks"], report["changed_decisions"]) == ("2", "1", "1")
    assert report["shadow"]["would_block"] == "1"
    assert "would_block" not in report["active"]
    assert report["rule_differences"] == [{"rule_id": "violence", "shadow_only": "1"}]
    assert [s["excerpt"] for s in report["samples"]] == ["*****"]


def violations_aggregated(output: Output, sandbox: Sandbox) -> None:
    groups = {group["rule_id"]: group for group in reply(output)["groups"]}
    assert sorted(groups) == ["cards", "violence"], output.describe()
    counts = ("checks", "checks_with_violations", "violations", "blocked_checks")
    # proto3 JSON leaves zeros out.
    assert [groups["cards"].get(count, "0") for count in counts] == ["1", "1", "1", "0"]
    assert [groups["violence"].get(count, "0") for count in counts] == ["1", "1", "1", "1"]
    assert groups["violence"]["block_rate"] == 1


def events_written(output: Output, sandbox: Sandbox) -> None:
    assert reply(output)["ack"] == {"sequence": "1", "accepted": "1", "batches": "1"}


def events_queried(output: Output, sandbox: Sandbox) -> None:
    (event,) = reply(output)["events"]
    assert event["event_id"] == "3f1c0d2e-demo-1"
    # Priced at the version's registry prices: 1200 * 2.5 + 300 * 10 micro-units.
    assert event["inference"]["cost"] == {"currency_code": "USD", "micros": "6000"}
    assert event["inference"]["cost_from_registry"] is True


def events_aggregated(output: Output, sandbox: Sandbox) -> None:
    groups = reply(output)["groups"]
    (chat,) = [g for g in groups if g.get("model_version") == "models/chat-large/versions/1"]
    assert (chat["input_tokens"], chat["output_tokens"]) == ("1200", "300")
    assert chat["latency_p50"] == chat["latency_p99"] == "0.840s"
    assert chat["cost"] == {"currency_code": "USD", "micros": "6000"}
    assert "bucket_start" in chat


def ingestion_counted(output: Output, sandbox: Sandbox) -> None:
    clients = reply(output)["clients"]
    demo = [c for c in clients if c["client_id"] == "demo-1"]
    assert [(c["received"], c["accepted"], c["last_sequence"]) for c in demo] == [("1", "1", "1")]


def otlp_records_received(output: Output, sandbox: Sandbox) -> None:
    partial = reply(output)["partial_success"]
    assert partial["rejected_log_records"] == "1"
    assert partial["error_message"].startswith(
        "1 log records rejected: resource_logs[0].scope_logs[0].log_records[1]: attribute log.record.uid"
    )


def otlp_event_found_by_trace(output: Output, sandbox: Sandbox) -> None:
    (event,) = reply(output)["events"]
    assert (event["event_id"], event["service"]) == ("01JD3X8Z6Q7R9S0T1V2W3X4Y5Z", "chat-api")
    assert event["links"]["span_id"] == "00f067aa0ba902b7"
    # Priced at the version's registry prices: 1200 * 2.5 + 300 * 10 micro-units.
    assert event["inference"]["cost"] == {"currency_code": "USD", "micros": "6000"}


def events_exported(output: Output, sandbox: Sandbox) -> None:
    ok(output)
    assert output.stdout.strip() == "exported 1 events in 1 requests (0 rejected by the receiver)"


def second_version_created(output: Output, sandbox: Sandbox) -> None:
    assert reply(output)["model_version"]["name"] == "models/chat-large/versions/2"


def deployment_created(output: Output, sandbox: Sandbox) -> None:
    stable = reply(output)["deployment"]["traffic"]["stable"]
    assert stable["model_version"] == "models/chat-large/versions/1"
    assert [e["address"] for e in stable["endpoints"]] == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert stable["weight_bp"] == 10000


def rollout_planned(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_PENDING"
    assert [stage["state"] for stage in answer["stages"]] == [
        "ROLLOUT_STATE_WAITING_READY",
        "ROLLOUT_STATE_PROGRESSING",
        "ROLLOUT_STATE_PROGRESSING",
        "ROLLOUT_STATE_SUCCEEDED",
    ]
    assert [stage["traffic"].get("canary", {}).get("weight_bp", 0) for stage in answer["stages"]] == [
        0,
        1000,
        5000,
        0,
    ]


def rollout_started(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    assert answer["rollout"]["name"] == "deployments/chat-prod/rollouts/1"
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_WAITING_READY"
    # Waiting for the canary to be ready, the stable slot keeps everything.
    assert answer["deployment"]["traffic"]["stable"]["weight_bp"] == 10000


def canary_ready(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    assert answer["changed"] is True
    traffic = answer["deployment"]["traffic"]
    assert (traffic["stable"]["weight_bp"], traffic["canary"]["weight_bp"]) == (9000, 1000)


def route_resolved(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    by_slot = {
        "TRAFFIC_SLOT_STABLE": ({"10.0.0.1:8000", "10.0.0.2:8000"}, "models/chat-large/versions/1"),
        "TRAFFIC_SLOT_CANARY": ({"10.0.1.1:8000"}, "models/chat-large/versions/2"),
    }
    endpoints, version = by_slot[answer["slot"]]
    assert answer["endpoint"]["address"] in endpoints, output.describe()
    assert answer["model_version"] == version


def rollout_promoted(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED"
    traffic = answer["deployment"]["traffic"]
    assert "canary" not in traffic
    assert traffic["stable"]["model_version"] == "models/chat-large/versions/2"
    assert [e["address"] for e in traffic["stable"]["endpoints"]] == ["10.0.1.1:8000"]


def alias_moved(output: Output, sandbox: Sandbox) -> None:
    assert reply(output)["alias"]["version"] == "models/chat-large/versions/2"


def history_listed(output: Output, sandbox: Sandbox) -> None:
    entries = reply(output)["entries"]
    # Newest first, one entry per transition: the canary's readiness was a health change, and promoting
    # to the end made the rollout succeed.
    assert [entry["transition"].removeprefix("DEPLOYMENT_TRANSITION_") for entry in entries] == [
        "SUCCEEDED",
        "HEALTH_CHANGED",
        "ROLLOUT_STARTED",
        "CREATED",
    ]
    assert entries[0]["traffic_after"]["stable"]["model_version"] == "models/chat-large/versions/2"


def deployment_watched(output: Output, sandbox: Sandbox) -> None:
    assert output.interrupted, output.describe()
    first = messages(output.stdout)[0]["change"]
    assert first["kind"] == "CHANGE_KIND_CREATED"
    assert first["deployment"]["traffic"]["stable"]["model_version"] == "models/chat-large/versions/2"


def gates_planned(output: Output, sandbox: Sandbox) -> None:
    evaluations = reply(output)["gate_evaluations"]
    assert [e["gate"] for e in evaluations] == ["errors", "p95", "cost"]
    # No canary events yet: every gate waits for data, and says how many events it has.
    assert {e["verdict"] for e in evaluations} == {"GATE_VERDICT_INCONCLUSIVE"}
    assert all("waiting for data: canary has 0 of the 500 events needed" in e["reason"] for e in evaluations)
    # Each records the window it read: 600 s ending the 10 s evaluation delay before the evaluation.
    for e in evaluations:
        start, end = (
            datetime.fromisoformat(e[k].replace("Z", "+00:00")) for k in ("window_start", "window_end")
        )
        assert end - start == timedelta(seconds=600)


def gated_rollout_started(output: Output, sandbox: Sandbox) -> None:
    rollout = reply(output)["rollout"]
    assert rollout["name"] == "deployments/chat-prod/rollouts/2"
    assert rollout["state"] == "ROLLOUT_STATE_WAITING_READY"
    gates = rollout["analysis"]["gates"]
    assert [(g["name"], g["on_failure"]) for g in gates] == [
        ("errors", "GATE_ACTION_ROLLBACK"),
        ("p95", "GATE_ACTION_PAUSE"),
        ("cost", "GATE_ACTION_PAUSE"),
    ]
    assert rollout["analysis"]["evaluation_delay"] == "10s"


def bad_gate_refused(output: Output, sandbox: Sandbox) -> None:
    assert output.returncode == 64 + grpc.StatusCode.INVALID_ARGUMENT.value[0], output.describe()
    assert "rollout.analysis.gates[0].min_samples" in output.stderr
    assert "rollout.analysis.gates[0].bound.max_ratio" in output.stderr
    assert "rollout.analysis.evaluation_delay" in output.stderr


def gated_rollout_aborted(output: Output, sandbox: Sandbox) -> None:
    answer = reply(output)
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_ABORTED"
    assert "canary" not in answer["deployment"]["traffic"]


# The HTTP/JSON equivalents (proto3 JSON mapping: lowerCamelCase names, every field present, zeros too), on
# resources of their own so that the grpcurl examples around them see what they always saw.


def http_policy_created(output: Output, sandbox: Sandbox) -> None:
    policy = json_reply(output)["policy"]
    assert (policy["name"], policy["revision"]) == ("policies/bedtime-stories", "1"), output.describe()
    assert [rule["id"] for rule in policy["rules"]] == ["cards", "violence"]
    assert policy["shadowRevision"] == "0"


def http_card_redacted(output: Output, sandbox: Sandbox) -> None:
    verdict = json_reply(output)["verdict"]
    assert verdict["decision"] == "DECISION_REDACT", output.describe()
    assert verdict["redactedText"] == "Pay with [REDACTED:pii] today."


def http_violence_blocked(output: Output, sandbox: Sandbox) -> None:
    verdict = json_reply(output)["verdict"]
    assert verdict["decision"] == "DECISION_BLOCK", output.describe()
    assert verdict["fallbackContent"] == "The knight and the dragon became friends."
    assert [v["ruleId"] for v in verdict["violations"]] == ["violence"]
    assert verdict["redactedText"] == ""


def http_violations_listed(output: Output, sandbox: Sandbox) -> None:
    found = json_reply(output)["violations"]
    # Only the policy's own: newest first, the blocked check, then the redacted one.
    assert [(v["policy"], v["ruleId"], v["severity"]) for v in found] == [
        ("policies/bedtime-stories", "violence", "SEVERITY_CRITICAL"),
        ("policies/bedtime-stories", "cards", "SEVERITY_ERROR"),
    ], output.describe()
    assert found[0]["links"]["modelVersion"] == "models/chat-large/versions/1"


def http_violations_aggregated(output: Output, sandbox: Sandbox) -> None:
    groups = {group["ruleId"]: group for group in json_reply(output)["groups"]}
    assert sorted(groups) == ["cards", "violence"], output.describe()
    counts = ("checks", "checksWithViolations", "violations", "blockedChecks")
    assert [groups["cards"][count] for count in counts] == ["1", "1", "1", "0"], output.describe()
    assert [groups["violence"][count] for count in counts] == ["1", "1", "1", "1"]
    assert groups["violence"]["blockRate"] == 1


def http_shadow_set(output: Output, sandbox: Sandbox) -> None:
    policy = json_reply(output)["policy"]
    assert (policy["name"], policy["revision"], policy["shadowRevision"]) == (
        "policies/bedtime-stories",
        "1",
        "2",
    ), output.describe()


def http_active_verdict_only(output: Output, sandbox: Sandbox) -> None:
    verdict = json_reply(output)["verdict"]
    assert (verdict["decision"], verdict["policyRevision"]) == ("DECISION_ALLOW", "1"), output.describe()


def http_shadow_reported(output: Output, sandbox: Sandbox) -> None:
    report = json_reply(output)
    assert (report["shadowRevision"], report["checks"], report["changedDecisions"]) == ("2", "1", "1"), (
        output.describe()
    )
    assert (report["shadow"]["wouldBlock"], report["active"]["wouldBlock"]) == ("1", "0")
    assert [(d["ruleId"], d["shadowOnly"]) for d in report["ruleDifferences"]] == [("violence", "1")]
    assert [s["excerpt"] for s in report["samples"]] == ["*****"]


def http_events_written(output: Output, sandbox: Sandbox) -> None:
    ack = json_reply(output)["ack"]
    assert (ack["sequence"], ack["accepted"], ack["duplicates"]) == ("1", "1", "0"), output.describe()


def http_events_queried(output: Output, sandbox: Sandbox) -> None:
    events = json_reply(output)["events"]
    # The grpcurl example's event and this one, each priced at the registry's prices.
    assert sorted(event["eventId"] for event in events) == ["3f1c0d2e-demo-1", "3f1c0d2e-demo-2"], (
        output.describe()
    )
    assert {(e["inference"]["cost"]["micros"], e["inference"]["costFromRegistry"]) for e in events} == {
        ("6000", True)
    }


def http_events_aggregated(output: Output, sandbox: Sandbox) -> None:
    groups = [g for g in json_reply(output)["groups"] if g["modelVersion"] == "models/chat-large/versions/1"]
    assert groups, output.describe()
    # Both events, in one hour's bucket or (written across an hour's end) two.
    assert sum(int(g["inputTokens"]) for g in groups) == 2400, output.describe()
    assert sum(int(g["cost"]["micros"]) for g in groups) == 12000
    assert {g["latencyP50"] for g in groups} == {"0.840s"}


def http_ingestion_counted(output: Output, sandbox: Sandbox) -> None:
    clients = {c["clientId"]: c for c in json_reply(output)["clients"]}
    counted = [
        (clients[c]["received"], clients[c]["accepted"], clients[c]["lastSequence"])
        for c in ("demo-1", "demo-2")
    ]
    assert counted == [("1", "1", "1"), ("1", "1", "1")], output.describe()


def http_otlp_event_found_by_trace(output: Output, sandbox: Sandbox) -> None:
    (event,) = json_reply(output)["events"]
    assert (event["eventId"], event["service"]) == ("01JD3X8Z6Q7R9S0T1V2W3X4Y5Z", "chat-api"), (
        output.describe()
    )
    assert (event["links"]["traceId"], event["links"]["spanId"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert event["inference"]["cost"] == {"currencyCode": "USD", "micros": "6000"}


def http_mini_model_created(output: Output, sandbox: Sandbox) -> None:
    model = json_reply(output)["model"]
    assert (model["name"], model["displayName"]) == ("models/chat-mini", "Chat mini"), output.describe()


def http_mini_version_created(number: int) -> Check:
    def check(output: Output, sandbox: Sandbox) -> None:
        version = json_reply(output)["modelVersion"]
        assert version["name"] == f"models/chat-mini/versions/{number}", output.describe()
        assert version["state"] == "MODEL_VERSION_STATE_READY"
        assert version["pricing"]["outputMicrosPerMillion"] == "600000"

    return check


def http_deployment_created(output: Output, sandbox: Sandbox) -> None:
    deployment = json_reply(output)["deployment"]
    assert deployment["name"] == "deployments/mini-prod", output.describe()
    stable = deployment["traffic"]["stable"]
    assert stable["modelVersion"] == "models/chat-mini/versions/1"
    assert [e["address"] for e in stable["endpoints"]] == ["10.0.3.1:8000", "10.0.3.2:8000"]
    assert stable["weightBp"] == 10000


def canary_weight(traffic: dict[str, Any]) -> int:
    """The canary's weight in a traffic table as JSON: 0 when it has no canary slot."""
    canary = traffic.get("canary") or {}
    weight: int = canary.get("weightBp", 0)
    return weight


def http_rollout_planned(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_PENDING", output.describe()
    stages = answer["stages"]
    assert [stage["state"] for stage in stages] == [
        "ROLLOUT_STATE_WAITING_READY",
        "ROLLOUT_STATE_PROGRESSING",
        "ROLLOUT_STATE_PROGRESSING",
        "ROLLOUT_STATE_SUCCEEDED",
    ]
    assert [canary_weight(stage["traffic"]) for stage in stages] == [0, 1000, 5000, 0]


def http_rollout_started(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    assert answer["rollout"]["name"] == "deployments/mini-prod/rollouts/1", output.describe()
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_WAITING_READY"
    assert answer["deployment"]["traffic"]["stable"]["weightBp"] == 10000


def http_canary_ready(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    assert answer["changed"] is True, output.describe()
    traffic = answer["deployment"]["traffic"]
    assert (traffic["stable"]["weightBp"], canary_weight(traffic)) == (9000, 1000)


def http_route_resolved(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    by_slot = {
        "TRAFFIC_SLOT_STABLE": ({"10.0.3.1:8000", "10.0.3.2:8000"}, "models/chat-mini/versions/1"),
        "TRAFFIC_SLOT_CANARY": ({"10.0.4.1:8000"}, "models/chat-mini/versions/2"),
    }
    endpoints, version = by_slot[answer["slot"]]
    assert answer["endpoint"]["address"] in endpoints, output.describe()
    assert answer["modelVersion"] == version


def http_rollout_promoted(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED", output.describe()
    traffic = answer["deployment"]["traffic"]
    assert canary_weight(traffic) == 0
    assert traffic["stable"]["modelVersion"] == "models/chat-mini/versions/2"
    assert [e["address"] for e in traffic["stable"]["endpoints"]] == ["10.0.4.1:8000"]


def http_alias_moved(output: Output, sandbox: Sandbox) -> None:
    alias = json_reply(output)["alias"]
    assert (alias["name"], alias["version"]) == (
        "models/chat-mini/aliases/prod",
        "models/chat-mini/versions/2",
    )


def http_history_listed(output: Output, sandbox: Sandbox) -> None:
    entries = json_reply(output)["entries"]
    assert [entry["transition"].removeprefix("DEPLOYMENT_TRANSITION_") for entry in entries] == [
        "SUCCEEDED",
        "HEALTH_CHANGED",
        "ROLLOUT_STARTED",
        "CREATED",
    ], output.describe()
    assert entries[0]["trafficAfter"]["stable"]["modelVersion"] == "models/chat-mini/versions/2"


def http_deployment_watched(output: Output, sandbox: Sandbox) -> None:
    assert output.interrupted, output.describe()
    first = sse_data(output.stdout)[0]["change"]
    assert first["kind"] == "CHANGE_KIND_CREATED", output.describe()
    assert first["deployment"]["traffic"]["stable"]["modelVersion"] == "models/chat-mini/versions/2"


def http_gates_planned(output: Output, sandbox: Sandbox) -> None:
    evaluations = json_reply(output)["gateEvaluations"]
    assert [e["gate"] for e in evaluations] == ["errors", "p95", "cost"], output.describe()
    assert {e["verdict"] for e in evaluations} == {"GATE_VERDICT_INCONCLUSIVE"}
    assert all("waiting for data: canary has 0 of the 500 events needed" in e["reason"] for e in evaluations)


def http_gated_rollout_started(output: Output, sandbox: Sandbox) -> None:
    rollout = json_reply(output)["rollout"]
    assert rollout["name"] == "deployments/mini-prod/rollouts/2", output.describe()
    assert rollout["state"] == "ROLLOUT_STATE_WAITING_READY"
    assert [(g["name"], g["onFailure"]) for g in rollout["analysis"]["gates"]] == [
        ("errors", "GATE_ACTION_ROLLBACK"),
        ("p95", "GATE_ACTION_PAUSE"),
        ("cost", "GATE_ACTION_PAUSE"),
    ]


def http_bad_gate_refused(output: Output, sandbox: Sandbox) -> None:
    details = http_error(output, 400, grpc.StatusCode.INVALID_ARGUMENT)
    fields = {v["field"] for v in details["google.rpc.BadRequest"]["fieldViolations"]}
    assert fields >= {
        "rollout.analysis.gates[0].min_samples",
        "rollout.analysis.gates[0].bound.max_ratio",
    }, output.describe()


def http_gated_rollout_aborted(output: Output, sandbox: Sandbox) -> None:
    answer = json_reply(output)
    assert answer["rollout"]["state"] == "ROLLOUT_STATE_ABORTED", output.describe()
    traffic = answer["deployment"]["traffic"]
    assert canary_weight(traffic) == 0
    assert traffic["stable"]["modelVersion"] == "models/chat-mini/versions/2"


SHELL_CHECKS = [
    Expect("modelplane serve", serve_on_another_database, until=lambda out, err: "health: SERVING" in err),
    Expect(" list", service_list),
    Expect("describe modelplane.v1.ModelRegistryService", registry_described),
    Expect("Health/Check", health_serving),
    Expect("ModelRegistryService/CreateModel\n", model_created),
    Expect("ModelRegistryService/CreateModelVersion", first_version_created),
    Expect("ModelRegistryService/SetAlias", alias_set),
    Expect('"alias": "models/chat-large/aliases/prod"', resolved_to_first_version),
    Expect('"required_capabilities"', resolved_to_first_version),
    Expect("ModelRegistryService/ListModelVersions", search_found_first_version),
    Expect('"min_context_window": 1000000', resolution_failed),
    Expect("ModelRegistryService/WatchModels", models_watched, until=shows(1, "progress")),
    Expect("describe modelplane.v1.QueryLogEventsRequest", request_described_with_comments),
    Expect("$H/healthz", http_health),
    Expect("-X POST $H/v1/models -d", http_model("Chat small", "")),
    Expect("curl -s $H/v1/models/chat-small", http_model("Chat small", "")),
    Expect("-X PATCH $H/v1/models/chat-small", http_model("Chat small", "short answers")),
    Expect("-X DELETE $H/v1/models/chat-small", http_deleted),
    Expect('{"alias": "models/chat-large/aliases/prod"}', http_resolved_to_first_version),
    Expect('"requiredCapabilities"', http_resolved_to_first_version),
    Expect("filter=capabilities:tool_use AND alias:prod", http_search_found_first_version),
    Expect('"minContextWindow": 1000000', http_resolution_failed),
    Expect('"$H/v1/models:watch?startRevision=1"\n', http_models_watched, until=sse_shows(4)),
    Expect("application/x-ndjson", http_models_watched_as_lines, until=lambda out, err: out.count("\n") >= 4),
    Expect("token create", token_created),
    Expect("token create --role service --name web-frontend", scoped_token_created),
    Expect("token list", tokens_listed),
    Expect("token revoke", token_revoked),
    Expect("GuardrailService/CreatePolicy", policy_created),
    Expect("4111 1111 1111 1111", card_redacted),
    Expect("kill the dragon", violence_blocked),
    Expect("GuardrailService/ListViolations", violations_listed),
    Expect("GuardrailService/AggregateViolations", violations_aggregated),
    Expect("-X POST $H/v1/policies -d", http_policy_created),
    Expect('bedtime-stories:check -d \'{"text": "Pay with', http_card_redacted),
    Expect("will kill the dragon", http_violence_blocked),
    Expect("$H/v1/violations --data-urlencode", http_violations_listed),
    Expect("$H/v1/violations:aggregate?", http_violations_aggregated),
    Expect("GuardrailService/SetShadowRevision", shadow_set),
    Expect("drew his sword", active_verdict_only),
    Expect("GuardrailService/GetShadowReport", shadow_reported),
    Expect("bedtime-stories:setShadow", http_shadow_set),
    Expect('bedtime-stories:check -d \'{"text": "The knight drew', http_active_verdict_only),
    Expect("bedtime-stories:shadowReport", http_shadow_reported),
    Expect("LogService/WriteLogEvents", events_written),
    Expect("LogService/QueryLogEvents", events_queried),
    Expect("LogService/AggregateLogEvents", events_aggregated),
    Expect("LogService/GetIngestionStats", ingestion_counted),
    Expect("$H/v1/logEvents:write", http_events_written),
    Expect("filter=kind = INFERENCE AND model_version", http_events_queried),
    Expect("$H/v1/logEvents:aggregate?", http_events_aggregated),
    Expect("$H/v1/ingestionStats", http_ingestion_counted),
    Expect("LogsService/Export", otlp_records_received),
    Expect('trace_id = \\"4bf92f3577b34da6a3ce929d0e0e4736', otlp_event_found_by_trace),
    Expect('filter=trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"', http_otlp_event_found_by_trace),
    Expect("export-otlp", events_exported),
    Expect("ModelRegistryService/CreateModelVersion", second_version_created),
    Expect("DeploymentService/CreateDeployment", deployment_created),
    Expect("DeploymentService/PlanRollout", rollout_planned),
    Expect("DeploymentService/StartRollout", rollout_started),
    Expect("DeploymentService/ReportEndpointHealth", canary_ready),
    Expect("DeploymentService/ResolveRoute", route_resolved),
    Expect("DeploymentService/PromoteRollout", rollout_promoted),
    Expect("ModelRegistryService/GetAlias", alias_moved),
    Expect("DeploymentService/ListDeploymentHistory", history_listed),
    Expect("DeploymentService/WatchDeployment", deployment_watched, until=shows(1, "change")),
    Expect('-X POST $H/v1/models -d \'{"modelId": "chat-mini"', http_mini_model_created),
    Expect("gpt-4o-mini-2024-07-18", http_mini_version_created(1)),
    Expect("gpt-4o-mini-2024-11-20", http_mini_version_created(2)),
    Expect("-X POST $H/v1/deployments -d", http_deployment_created),
    Expect('mini-prod/rollouts:plan -d "{\\"rollout\\": $ROLLOUT}', http_rollout_planned),
    Expect('mini-prod/rollouts -d "{\\"rollout\\": $ROLLOUT}', http_rollout_started),
    Expect("mini-prod:reportEndpointHealth", http_canary_ready),
    Expect("mini-prod:resolveRoute?routingKey=user-42", http_route_resolved),
    Expect("mini-prod/rollouts/1:promote", http_rollout_promoted),
    Expect("$H/v1/models/chat-mini/aliases/prod", http_alias_moved),
    Expect("$H/v1/deployments/mini-prod/history", http_history_listed),
    Expect("$H/v1/deployments/mini-prod:watch", http_deployment_watched, until=sse_shows(1)),
    Expect("DeploymentService/PlanRollout", gates_planned),
    Expect("DeploymentService/StartRollout", gated_rollout_started),
    Expect('"min_samples": 10,', bad_gate_refused),
    Expect("DeploymentService/AbortRollout", gated_rollout_aborted),
    Expect('mini-prod/rollouts:plan -d "{\\"rollout\\": $GATED}', http_gates_planned),
    Expect('mini-prod/rollouts -d "{\\"rollout\\": $GATED}', http_gated_rollout_started),
    Expect('"minSamples": 10,', http_bad_gate_refused),
    Expect("mini-prod/rollouts/2:abort", http_gated_rollout_aborted),
]


# ---------------------------------------------------------------------------------------------------------
# The Python snippets, in README order


def printed(output: Output) -> list[str]:
    ok(output)
    assert "Traceback" not in output.stderr, output.describe()
    return output.stdout.splitlines()


def bare_channel_retrying(output: Output, sandbox: Sandbox) -> None:
    assert printed(output) == ["models/chat-large"], output.describe()


def registry_client(output: Output, sandbox: Sandbox) -> None:
    versions, missing = printed(output)
    assert versions == "models/chat-large/versions/1 []", output.describe()
    reason, request_id = missing.split()
    assert reason == "MODEL_NOT_FOUND"
    assert request_id


def llm_client(output: Output, sandbox: Sandbox) -> None:
    chosen, usage, text = printed(output)
    assert chosen == "models/chat-large/versions/2 registry", output.describe()
    assert "Cost(currency_code='USD', micros=" in usage, output.describe()
    assert text


def narrative_generator(output: Output, sandbox: Sandbox) -> None:
    status, reason, text = printed(output)
    assert status == "allowed ()", output.describe()
    assert reason == "allowed by policies/kids-stories revision 1"
    assert text


def service_coordinator(output: Output, sandbox: Sandbox) -> None:
    (answer,) = printed(output)
    assert answer == "10.0.1.1:8000 (stable, models/chat-large/versions/2) answers 'hello'", output.describe()


def log_shipper(output: Output, sandbox: Sandbox) -> None:
    (counts,) = printed(output)
    assert counts == "1 0", output.describe()
    with grpc.insecure_channel(sandbox.address) as channel:
        logs = logs_pb2_grpc.LogServiceStub(channel)
        found = logs.QueryLogEvents(
            logs_pb2.QueryLogEventsRequest(filter='service = "storyteller" AND kind = INFERENCE'), timeout=10
        )
    (event,) = found.events
    assert event.inference.input_tokens == 4  # "Tell me a story"


def sync_client(output: Output, sandbox: Sandbox) -> None:
    assert printed(output) == [
        "models/chat-large/versions/1 []",
        "models/chat-large/versions/2 ['prod']",
        "MODEL_NOT_FOUND",
        "1 models/chat-large",
    ], output.describe()


def wsgi_service(output: Output, sandbox: Sandbox) -> None:
    *answers, resolutions = printed(output)
    assert [json.loads(answer) for answer in answers] == [
        {"path": "/story", "model": "models/chat-large/versions/2"},
        {"path": "/poem", "model": "models/chat-large/versions/2"},
    ], output.describe()
    # One ResolveModel for two requests: the second was answered from the cache.
    assert resolutions == "1", output.describe()


PYTHON_CHECKS = [
    Expect("options=retrying_channel_options()", bare_channel_retrying),
    Expect("registry.create_model(", registry_client),
    Expect('alias="models/chat-large/aliases/prod",  # or constraints', llm_client),
    Expect("NarrativeGenerator(", narrative_generator),
    Expect("ServiceCoordinator(", service_coordinator),
    Expect("LogShipper(", log_shipper),
    Expect('conn.registry.list_model_versions(parent="models/chat-large")', sync_client),
    Expect("make_server(", wsgi_service),
]


# ---------------------------------------------------------------------------------------------------------
# The TypeScript snippets, in README order


def typescript_client(output: Output, sandbox: Sandbox) -> None:
    serving, *versions, missing, bad_fields, watched = printed(output)
    assert serving == "SERVING"
    assert bad_fields == "model_id model.provider"
    # After the deployment's promotion, prod points to version 2.
    assert versions == [
        "models/chat-large/versions/1 context 128000 ",
        "models/chat-large/versions/2 context 128000 prod",
    ], output.describe()
    assert missing == "MODEL_NOT_FOUND true"
    assert watched == "progress"


TYPESCRIPT_CHECKS = [
    Expect("conn.registry.listModelVersions(", typescript_client),
]


# ---------------------------------------------------------------------------------------------------------
# The run


@pytest.fixture
def sandbox(database_url: str, tmp_path: Path) -> Iterator[Sandbox]:
    """The server started as `make run` starts it, on a free port and the test's database."""
    address, http_address = free_address(), free_address()
    argv = make_recipe("run")
    # What the README says of `make run`: loopback, HTTP/JSON beside gRPC, an embedded Postgres under
    # ./.modelplane/, auth off.
    assert argv[1:] == [
        "serve", "--address", README_ADDRESS, "--http-address", README_HTTP_ADDRESS,
        "--data-dir", ".modelplane", "--no-auth",
    ], argv  # fmt: skip
    argv[argv.index(README_ADDRESS)] = address
    argv[argv.index(README_HTTP_ADDRESS)] = http_address
    argv[argv.index(".modelplane")] = str(tmp_path / "data")
    # The test's database stands in for the embedded one, so the server runs as many workers as `make run`
    # would with its embedded Postgres on this machine (with a URL, the default counts one worker more).
    workers = default_worker_count(embedded_postgres=True)
    argv += ["--database-url", database_url, "--workers", str(workers)]
    box = Sandbox(address=address, database_url=database_url, workdir=tmp_path, http_address=http_address)
    log_path = tmp_path / "serve.log"
    with started_server(argv, log_path, box.environment()):
        # "says so in its first lines"
        first_lines = log_path.read_text().splitlines()[:5]
        assert any("auth is OFF" in line for line in first_lines), first_lines
        yield box


def readme_blocks() -> list[Block]:
    return parse_blocks(README.read_text())


def test_readme_examples_run_in_order_against_one_server(sandbox: Sandbox) -> None:
    shell_checks = iter(SHELL_CHECKS)
    python_checks = iter(PYTHON_CHECKS)
    typescript_checks = iter(TYPESCRIPT_CHECKS)
    unhandled: list[str] = []
    for block in readme_blocks():
        if block.directive == "skip":
            continue
        if block.directive == "filters":
            check_filters(block, sandbox)
        elif block.language in SHELL:
            run_shell_block(block, shell_checks, sandbox)
        elif block.language == "python":
            expect = next_expect(python_checks, block.text, block.where)
            output = sandbox.python(block.text, f"readme_{block.line}.py")
            check_output(expect, output, sandbox, block.where)
        elif block.language == "ts":
            expect = next_expect(typescript_checks, block.text, block.where)
            output = sandbox.typescript(block.text, f"readme_{block.line}.mts")
            check_output(expect, output, sandbox, block.where)
        else:
            unhandled.append(block.where)
    assert not unhandled, (
        f"README blocks neither run nor marked <!-- readme-test: skip: REASON -->: {unhandled}"
    )
    left = [expect.fragment for expect in [*shell_checks, *python_checks, *typescript_checks]]
    assert not left, f"checks left over (their README examples are gone?): {left}"


def run_shell_block(block: Block, checks: Iterator[Expect], sandbox: Sandbox) -> None:
    assignments: list[ShellCommand] = []
    for command in shell_commands(block):
        where = f"README.md:{command.line} ({block.heading})"
        if command.is_assignment:
            assignments.append(command)
            continue
        expect = next_expect(checks, command.text, where)
        assert command.streams == (expect.until is not None), (
            f"{where}: a command marked (Ctrl-C to stop) needs a check that says when it has shown enough"
        )
        output = sandbox.shell(command, assignments, expect.until)
        check_output(expect, output, sandbox, where)


def check_output(expect: Expect, output: Output, sandbox: Sandbox, where: str) -> None:
    """Runs the check; a failure names the README line and shows the whole output."""
    try:
        expect.check(output, sandbox)
    except AssertionError as error:
        raise AssertionError(f"{where}: {error}\n{output.describe()}") from error


def next_expect(checks: Iterator[Expect], text: str, where: str) -> Expect:
    expect = next(checks, None)
    assert expect is not None, f"{where}: no check for this README example; add one in README order:\n{text}"
    assert expect.fragment in text + "\n", (
        f"{where}: the next check expects an example with {expect.fragment!r}; keep the checks in README "
        f"order:\n{text}"
    )
    return expect


def check_filters(block: Block, sandbox: Sandbox) -> None:
    """Each line is a filter that ListModels or ListModelVersions accepts (the other may refuse a field it
    does not have, with INVALID_ARGUMENT, never another error)."""
    with grpc.insecure_channel(sandbox.address) as channel:
        registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        for line in block.text.splitlines():
            answers = {
                "ListModels": refusal(registry.ListModels, registry_pb2.ListModelsRequest(filter=line)),
                "ListModelVersions": refusal(
                    registry.ListModelVersions,
                    registry_pb2.ListModelVersionsRequest(parent="models/-", filter=line),
                ),
            }
            assert set(answers.values()) <= {None, grpc.StatusCode.INVALID_ARGUMENT}, (line, answers)
            assert None in answers.values(), f"{block.where}: no list RPC accepts the filter {line!r}"


def refusal(method: Callable[..., object], request: object) -> grpc.StatusCode | None:
    """The status code a unary call failed with, None when it succeeded."""
    try:
        method(request, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return None


# ---------------------------------------------------------------------------------------------------------
# What the skipped blocks claim, proved another way


def test_every_readme_block_is_run_or_marked_with_a_reason() -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no fenced blocks?"
    for block in blocks:
        runnable = block.language in (*SHELL, "python", "ts")
        assert runnable or block.directive, (
            f"{block.where}: a {block.language or 'plain'} block is never run; mark it "
            "<!-- readme-test: skip: REASON --> or make it an example"
        )
        if block.directive:
            assert len(block.reason) >= 20, f"{block.where}: say why in the marker, not {block.reason!r}"
    skipped = [block for block in blocks if block.directive == "skip"]
    # Skips stay rare: each one is proved some other way in this module.
    assert [block.text for block in skipped] == [
        "make run    # the server on 127.0.0.1:50051 (HTTP/JSON on 127.0.0.1:8080), an embedded Postgres"
        " under ./.modelplane/, auth off\n"
        "make test   # the whole test suite against a real Postgres and real servers on loopback\n",
        demo_block().text,
        backup_block().text,
    ], [block.where for block in skipped]


def demo_block() -> Block:
    """The shell block of "The whole story": `make demo` and an excerpt of its output, which
    tests/e2e/test_demo.py runs and matches."""
    found = [
        b for b in readme_blocks() if b.heading == "The whole story: `make demo`" and b.language in SHELL
    ]
    assert len(found) == 1, [b.where for b in found]
    assert [command.text for command in shell_commands(found[0])] == ["make demo"]
    return found[0]


def backup_block() -> Block:
    """The shell block of "Backups": a dump, a new database, a restore into it."""
    found = [b for b in readme_blocks() if b.heading == "Backups" and b.language in SHELL]
    assert len(found) == 1, [b.where for b in found]
    return found[0]


async def _create_model(address: str, model_id: str, display_name: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        await stub.CreateModel(
            registry_pb2.CreateModelRequest(
                model_id=model_id, model=registry_pb2.Model(provider="openai", display_name=display_name)
            ),
            timeout=10,
        )


async def _display_name(address: str, model_id: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        response = await stub.GetModel(registry_pb2.GetModelRequest(name=f"models/{model_id}"), timeout=10)
        name: str = response.model.display_name
        return name


async def _on_server(database_url: str, step: Callable[[str], Any]) -> Any:
    """Runs `step(address)` against a server on `database_url`, started and stopped around it."""
    server = build_server(ServerConfig(address="127.0.0.1:0", database_url=database_url, auth=False))
    await server.start()
    try:
        await server.wait_serving(timeout=30)
        return await step(server.target)
    finally:
        await server.stop(grace=0)


async def _applied_migrations(database_url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(row["version"], row["checksum"]) for row in rows]


def test_the_backup_commands_restore_what_a_server_reads_back(
    database_url: str, admin_url: str, tmp_path: Path
) -> None:
    if not all(shutil.which(tool) for tool in ("pg_dump", "createdb", "pg_restore")):
        pytest.skip("pg_dump, createdb and pg_restore (apt-get install postgresql-client) are not installed")
    asyncio.run(_on_server(database_url, lambda address: _create_model(address, "chat-large", "Chat, large")))

    restored_name = f"mp_test_{uuid.uuid4().hex[:12]}"
    restored_url = with_database(database_url, restored_name)
    # The README's names, longest first, for the test's: its database, a new one, a file of its own.
    names = [
        (f"{README_DATABASE_URL}_restored", restored_url),
        (with_database(README_DATABASE_URL, "postgres"), with_database(database_url, "postgres")),
        (README_DATABASE_URL, database_url),
        (" modelplane_restored", f" {restored_name}"),
        ("modelplane.dump", str(tmp_path / "modelplane.dump")),
    ]
    try:
        for command in shell_commands(backup_block()):
            text = command.text
            for readme_name, ours in names:
                text = text.replace(readme_name, ours)
            done = subprocess.run(
                ["bash", "-c", text], capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 0, f"{command.text}\n{done.stderr}"
        assert asyncio.run(_applied_migrations(restored_url)) == asyncio.run(
            _applied_migrations(database_url)
        )
        display_name = asyncio.run(
            _on_server(restored_url, lambda address: _display_name(address, "chat-large"))
        )
        assert display_name == "Chat, large"
    finally:
        asyncio.run(drop_database(admin_url, restored_name))


def test_make_test_runs_the_suite_this_module_is_part_of() -> None:
    assert make_recipe("test") == [".venv/bin/pytest"]
    settings = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(Path(__file__).is_relative_to(REPOSITORY / path) for path in settings["testpaths"])
