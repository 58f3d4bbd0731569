"""The `modelplane` command run as a subprocess: token management, migrate, and serve up to SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from modelplane.server.store.migrations import latest_version
from modelplane.v1 import registry_pb2, registry_pb2_grpc
from tests.support.processes import free_port, wait_serving

SHUTDOWN_GRACE = 2.0


def _environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without MODELPLANE_* settings, so the developer's shell cannot leak in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODELPLANE_")}
    env.update(extra or {})
    return env


def modelplane(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelplane.server.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_environment(env),
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


def test_flag_wins_over_environment(database_url: str, tmp_path: Path) -> None:
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
    assert result.returncode != 0
    assert "without auth" in result.stderr
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
            env=_environment(),
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

    process.send_signal(signal.SIGTERM)
    # A generous bound on the wait only keeps a hung server from hanging the run.
    returncode = process.wait(timeout=SHUTDOWN_GRACE + 30)
    assert returncode == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
