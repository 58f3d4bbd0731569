"""The `modelplane` command run as a subprocess: token management, migrate, serve up to SIGTERM, and what
serve says at start-up (a shared data dir, a missing database, a taken address, the metrics endpoint)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from modelplane.server.store.migrations import latest_version
from modelplane.server.store.provision import create_database
from modelplane.server.store.urls import with_database
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support.live_server import drop_database
from tests.support.loopback import free_port
from tests.support.processes import (
    SHUTDOWN_GRACE,
    environment,
    launched,
    modelplane_command,
    wait_for_line,
    wait_serving,
)


def modelplane(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*modelplane_command(), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment(env),
        timeout=60,
        check=False,
    )


def _create_token(database_url: str, cwd: Path, name: str, role: str) -> str:
    result = modelplane(
        "token", "create", "--name", name, "--role", role, "--database-url", database_url, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_token_create_list_revoke_round_trip(database_url: str, tmp_path: Path) -> None:
    created = modelplane(
        "token", "create", "--name", "ci", "--role", "service", "--database-url", database_url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    # The secret alone on stdout; the warning on stderr.
    assert created.stdout.count("\n") == 1
    secret = created.stdout.strip()
    assert secret.startswith("mp_")
    assert "will not be shown again" in created.stderr

    # The URL from the environment this time.
    listed = modelplane("token", "list", cwd=tmp_path, env={"MODELPLANE_DATABASE_URL": database_url})
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.strip().splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED", "REVOKED", "SCOPES"]
    token_id, name, role, created_at, revoked_at, scopes = row.split()
    assert (name, role, revoked_at, scopes) == ("ci", "service", "-", "*")
    assert token_id.startswith("tok_")
    assert created_at.endswith("Z")
    assert secret not in listed.stdout

    revoked = modelplane("token", "revoke", "ci", "--database-url", database_url, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert token_id in revoked.stdout

    listed = modelplane("token", "list", "--database-url", database_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().splitlines()[1].split()[4].endswith("Z")


def test_a_scoped_token_lists_its_scopes(database_url: str, tmp_path: Path) -> None:
    created = modelplane(
        *("token", "create", "--name", "web", "--role", "service", "--database-url", database_url),
        *("--scope", "deployments/web", "--scope", "models/chat-large", "--scope", "deployments/web"),
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    listed = modelplane("token", "list", "--database-url", database_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().splitlines()[1].split()[5] == "deployments/web,models/chat-large"
    bad = modelplane(
        *("token", "create", "--name", "bad", "--role", "service", "--database-url", database_url),
        *("--scope", "policies/x"),
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert "scopes[0]" in bad.stderr
    assert "deployments/{id}" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_flag_wins_overenvironment(database_url: str, tmp_path: Path) -> None:
    result = modelplane(
        "token",
        "list",
        "--database-url",
        database_url,
        cwd=tmp_path,
        env={"MODELPLANE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ID")


def test_bad_role_exits_2_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = modelplane(
        "token", "create", "--name", "x", "--role", "root", "--database-url", database_url, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "role" in result.stderr
    assert "admin, operator, service, reader" in result.stderr
    assert "Traceback" not in result.stderr


def test_duplicate_name_and_unknown_revoke_exit_2(database_url: str, tmp_path: Path) -> None:
    _create_token(database_url, tmp_path, "twice", "reader")
    again = modelplane(
        "token", "create", "--name", "twice", "--role", "reader", "--database-url", database_url, cwd=tmp_path
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    missing = modelplane("token", "revoke", "nobody", "--database-url", database_url, cwd=tmp_path)
    assert missing.returncode == 2
    assert "nobody" in missing.stderr
    assert "Traceback" not in again.stderr + missing.stderr


def test_unreachable_database_is_one_line_exit_1(tmp_path: Path) -> None:
    result = modelplane(
        "token", "list", "--database-url", f"postgresql://postgres@127.0.0.1:{free_port()}/x", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.startswith("modelplane: error: cannot use the database")
    assert result.stderr.count("\n") == 1


def test_bad_environment_value_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = modelplane("serve", cwd=tmp_path, env={"MODELPLANE_SHUTDOWN_GRACE": "soon"})
    assert result.returncode == 2
    assert "MODELPLANE_SHUTDOWN_GRACE" in result.stderr


async def _schema_version(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return int(await conn.fetchval("SELECT max(version) FROM schema_migrations"))
    finally:
        await conn.close()


def test_migrate_brings_an_empty_database_up_to_date(empty_database_url: str, tmp_path: Path) -> None:
    result = modelplane("migrate", "--database-url", empty_database_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert asyncio.run(_schema_version(empty_database_url)) == latest_version()
    again = modelplane("migrate", "--database-url", empty_database_url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


async def _edit_recorded_checksum(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    finally:
        await conn.close()


def test_migrate_refuses_a_migration_edited_after_it_was_applied_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    asyncio.run(_edit_recorded_checksum(database_url))
    refused = modelplane("migrate", "--database-url", database_url, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "0001_foundation.sql was edited after it was applied" in refused.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--no-auth"], {}),
        ([], {"MODELPLANE_NO_AUTH": "1"}),
    ],
)
def test_serve_refuses_no_auth_beyond_loopback(
    database_url: str, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = modelplane(
        "serve",
        "--address",
        f"0.0.0.0:{free_port()}",
        "--database-url",
        database_url,
        *args,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert "with auth off" in result.stderr
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def serving(database_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`modelplane serve` on a free loopback port; yields the process, its address and its log file."""
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelplane.server.cli",
                "serve",
                "--address",
                address,
                "--database-url",
                database_url,
                "--shutdown-grace",
                str(SHUTDOWN_GRACE),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=environment(),
        )
    try:
        yield process, address, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.type_url.endswith("google.rpc.ErrorInfo"):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def test_serve_answers_health_checks_auth_and_exits_0_on_sigterm(
    serving: tuple[subprocess.Popen[bytes], str, Path], database_url: str, tmp_path: Path
) -> None:
    process, address, log_path = serving
    service_secret = _create_token(database_url, tmp_path, "story-teller", "service")
    reader_secret = _create_token(database_url, tmp_path, "dashboard", "reader")

    with grpc.insecure_channel(address) as channel:
        wait_serving(process, channel, log_path)
        registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)

        with pytest.raises(grpc.RpcError) as missing:
            registry.ListModels(registry_pb2.ListModelsRequest(), timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _reason(missing.value) == "TOKEN_MISSING"

        with pytest.raises(grpc.RpcError) as denied:
            registry.CreateModel(
                registry_pb2.CreateModelRequest(),
                metadata=(("authorization", f"Bearer {reader_secret}"),),
                timeout=10,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _reason(denied.value) == "ROLE_NOT_ALLOWED"

        listed = registry.ListModels.future(
            registry_pb2.ListModelsRequest(),
            metadata=(("authorization", f"Bearer {service_secret}"),),
            timeout=10,
        )
        assert listed.code() == grpc.StatusCode.OK, listed.details()
        assert list(listed.result().models) == []

    _stop_and_check(process, log_path)


def _stop_and_check(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """SIGTERM, then the exit code must be 0 and the log free of tracebacks; returns the log."""
    process.send_signal(signal.SIGTERM)
    # A generous bound on the wait only keeps a hung server from hanging the run.
    returncode = process.wait(timeout=SHUTDOWN_GRACE + 30)
    text = log_path.read_text()
    assert returncode == 0, text
    assert "Traceback" not in text
    return text


# ---------------------------------------------------------------------------------------------------------
# Start-up: the data dir, a missing database, a taken address, warnings, the metrics endpoint


def _list_models(channel: grpc.Channel, token: str | None = None) -> tuple[grpc.StatusCode, str]:
    """ListModels, with the token when one is given; the status code and message."""
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    try:
        stub.ListModels(registry_pb2.ListModelsRequest(), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _stop_stray_postgres(pgdata: Path) -> None:
    """After a failed test, the embedded Postgres its processes left running (a killed last user)."""
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        with suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)


def test_make_run_data_dir_is_shared_by_the_token_commands(tmp_path: Path) -> None:
    # Not under pytest's basetemp, which another pytest run may prune from under the running Postgres.
    root = Path(tempfile.mkdtemp(prefix="modelplane-cli-"))
    pgdata = root / ".modelplane" / "pgdata"
    address = f"127.0.0.1:{free_port()}"
    make_run = ["serve", "--address", address, "--data-dir", ".modelplane", "--no-auth"]
    token_args = ["--data-dir", ".modelplane"]
    try:
        with (
            launched(make_run, root, tmp_path / "make-run.log") as first,
            grpc.insecure_channel(address) as channel,
        ):
            wait_serving(first, channel, tmp_path / "make-run.log")
            assert _list_models(channel)[0] == grpc.StatusCode.OK

            # A second `make run`: one line naming the taken address, before it touches Postgres.
            second = subprocess.run(
                [*modelplane_command(), *make_run],
                capture_output=True,
                text=True,
                cwd=root,
                env=environment(),
                timeout=60,
            )
            assert second.returncode == 1
            assert second.stderr == f"modelplane: error: {address} is already in use\n"

            # The token commands join the embedded Postgres the server is running.
            created = modelplane(
                "token", "create", "--name", "ci", "--role", "operator", *token_args, cwd=root
            )
            assert created.returncode == 0, created.stderr
            secret = created.stdout.strip()
            _stop_and_check(first, tmp_path / "make-run.log")

        # The same data dir with auth on: the token made above is the one the server checks.
        with (
            launched(["serve", "--address", address, *token_args], root, tmp_path / "auth.log") as authed,
            grpc.insecure_channel(address) as channel,
        ):
            wait_serving(authed, channel, tmp_path / "auth.log")
            assert _list_models(channel)[0] == grpc.StatusCode.UNAUTHENTICATED
            assert _list_models(channel, secret) == (grpc.StatusCode.OK, "")
            listed = modelplane("token", "list", *token_args, cwd=root)
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.splitlines()[1].split()[1:3] == ["ci", "operator"]
            _stop_and_check(authed, tmp_path / "auth.log")

        # The last process that used the embedded Postgres stopped it.
        assert (pgdata / "PG_VERSION").exists()
        assert not (pgdata / "postmaster.pid").exists()
        assert not (root / ".modelplane" / "PG_VERSION").exists()
    finally:
        _stop_stray_postgres(pgdata)
        shutil.rmtree(root, ignore_errors=True)


def test_a_data_dir_that_is_itself_a_postgres_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".modelplane").mkdir()
    (tmp_path / ".modelplane" / "PG_VERSION").write_text("16\n")
    result = modelplane("token", "list", "--data-dir", ".modelplane", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert str(tmp_path / ".modelplane" / "pgdata") in result.stderr


@pytest.mark.parametrize("taken", ["--address", "--metrics-address"])
def test_serve_on_a_taken_address_says_so_in_one_line(database_url: str, tmp_path: Path, taken: str) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        busy = f"127.0.0.1:{occupant.getsockname()[1]}"
        addresses = {
            "--address": f"127.0.0.1:{free_port()}",
            "--metrics-address": f"127.0.0.1:{free_port()}",
        }
        addresses[taken] = busy
        result = modelplane(
            "serve", *(part for pair in addresses.items() for part in pair), "--database-url", database_url,
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1
    what = "the metrics address " if taken == "--metrics-address" else ""
    assert result.stderr == f"modelplane: error: {what}{busy} is already in use\n"


def test_a_healthy_start_logs_no_warning(database_url: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = ["serve", "--address", address, "--database-url", database_url, "--log-level", "DEBUG"]
    with launched([*args, "--shutdown-grace", str(SHUTDOWN_GRACE)], tmp_path, log_path) as process:
        with grpc.insecure_channel(address) as channel:
            wait_serving(process, channel, log_path)
        # The first round of log maintenance has run (it used to fail, and warn, at every start).
        wait_for_line(process, log_path, "log maintenance: partitions up to date", "log partitions: created")
        text = _stop_and_check(process, log_path)
    assert [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line] == []


def _status_details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        if detail.Is(retry.DESCRIPTOR):
            detail.Unpack(retry)
    return info, retry


@pytest.fixture
def missing_database(admin_url: str) -> Iterator[tuple[str, str]]:
    """The name and URL of a database that does not exist (yet); dropped after the test if made."""
    name = f"mp_missing_{uuid.uuid4().hex[:12]}"
    yield name, with_database(admin_url, name)
    asyncio.run(drop_database(admin_url, name))


def test_a_missing_database_is_said_once_and_clients_are_not_told_to_retry_shortly(
    missing_database: tuple[str, str], tmp_path: Path
) -> None:
    name, url = missing_database
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = ["serve", "--address", address, "--database-url", url, "--no-auth", "--log-level", "DEBUG"]
    with (
        launched([*args, "--shutdown-grace", str(SHUTDOWN_GRACE)], tmp_path, log_path) as process,
        grpc.insecure_channel(address) as channel,
    ):
        # The operator's line, then at least one quiet look again.
        wait_for_line(process, log_path, "database still missing")
        with pytest.raises(grpc.RpcError) as raised:
            registry_pb2_grpc.ModelRegistryServiceStub(channel).ListModels(
                registry_pb2.ListModelsRequest(), timeout=10
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "does not exist" in (raised.value.details() or "")
        assert "retry shortly" not in (raised.value.details() or "")
        info, retry = _status_details(raised.value)
        assert info.reason == "STORAGE_UNAVAILABLE"
        assert retry.retry_delay.seconds >= 30
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING

        # Created by the operator: the server goes on by itself.
        asyncio.run(create_database(url))
        wait_serving(process, channel, log_path)
        text = _stop_and_check(process, log_path)
    said = [line for line in text.splitlines() if " ERROR " in line or " WARNING " in line]
    assert len(said) == 2, text  # the missing database once, and auth being off
    missing = next(line for line in said if "does not exist" in line)
    assert f"createdb --maintenance-db={with_database(url, 'postgres')} {name}" in missing
    assert "--create-database" in missing
    assert "database ready" in text


def test_migrate_names_a_missing_database_and_creates_it_when_told(
    missing_database: tuple[str, str], tmp_path: Path
) -> None:
    name, url = missing_database
    refused = modelplane("migrate", "--database-url", url, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert f"database {name!r} does not exist" in refused.stderr
    assert "createdb" in refused.stderr

    created = modelplane("migrate", "--database-url", url, "--create-database", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert asyncio.run(_schema_version(url)) == latest_version()


def test_serve_creates_a_missing_database_when_told(
    missing_database: tuple[str, str], tmp_path: Path
) -> None:
    _, url = missing_database
    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    args = ["serve", "--address", address, "--database-url", url, "--create-database", "--no-auth"]
    with (
        launched([*args, "--shutdown-grace", str(SHUTDOWN_GRACE)], tmp_path, log_path) as process,
        grpc.insecure_channel(address) as channel,
    ):
        wait_serving(process, channel, log_path)
        assert _list_models(channel)[0] == grpc.StatusCode.OK
        text = _stop_and_check(process, log_path)
    assert "created database" in text
    assert "does not exist" not in text


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--metrics-address", "0.0.0.0:9464"], {}),
        ([], {"MODELPLANE_METRICS_ADDRESS": "0.0.0.0:9464"}),
        # --insecure is about auth; it says nothing of the metrics endpoint.
        (["--metrics-address", "0.0.0.0:9464", "--insecure"], {}),
    ],
)
def test_serve_refuses_metrics_beyond_loopback(
    database_url: str, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = modelplane(
        "serve", "--address", f"127.0.0.1:{free_port()}", "--database-url", database_url, *args,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "refusing to listen on 0.0.0.0:9464 for the metrics endpoint" in result.stderr
    assert "--metrics-insecure" in result.stderr


def test_metrics_insecure_serves_metrics_beyond_loopback(database_url: str, tmp_path: Path) -> None:
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    log_path = tmp_path / "serve.log"
    args = ["serve", "--address", address, "--database-url", database_url, "--no-auth"]
    metrics = ["--metrics-address", f"0.0.0.0:{metrics_port}", "--metrics-insecure"]
    with (
        launched([*args, *metrics, "--shutdown-grace", str(SHUTDOWN_GRACE)], tmp_path, log_path) as process,
        grpc.insecure_channel(address) as channel,
    ):
        wait_serving(process, channel, log_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert "grpc_server_handled_total" in body
        _stop_and_check(process, log_path)
