"""Builds the wheel and the sdist, installs the wheel into clean virtualenvs and runs something from each.

Two installs, each from its hash-locked requirements (`make lock` writes them) plus the wheel:
- the base install (`requirements/base.lock`): a consumer service's view. It must import the clients,
  must not have the server's dependencies, and talks to the server below through the typed client;
- the `server` extra (`requirements/server.lock`): `modelplane serve` from the wheel, on a throw-away
  database of the Postgres named by MODELPLANE_TEST_DATABASE_URL (default: 127.0.0.1:5432), until
  health says SERVING.

Usage: python scripts/check_dist.py   (run by `make dist-check`; exits non-zero on the first failure)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import asyncpg

from modelplane.server.store.urls import with_database

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "dist-check"
ADMIN_URL = os.environ.get("MODELPLANE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# What a consumer service runs: the typed client against the server started from the wheel.
CLIENT_PROGRAM = """
import asyncio, importlib.util, sys
from modelplane.client import connect
from modelplane.v1 import registry_pb2 as pb

for module in ("asyncpg", "pgserver", "re2"):
    assert importlib.util.find_spec(module) is None, f"the base install pulled in {module}"

async def main() -> None:
    async with connect(sys.argv[1]) as conn:
        await conn.registry.create_model(model_id="from-wheel", model=pb.Model(provider="openai"))
        model = await conn.registry.get_model(name="models/from-wheel")
        print(model.name, model.provider)

asyncio.run(main())
"""

# Exits 0 once health says SERVING (the base install has no health stubs: the call is made by hand; an empty
# HealthCheckRequest asks for the whole server, and b"\x08\x01" is a HealthCheckResponse of SERVING).
PROBE = (
    "import grpc, sys; channel = grpc.insecure_channel(sys.argv[1]);"
    " check = channel.unary_unary('/grpc.health.v1.Health/Check');"
    " sys.exit(0 if check(b'', timeout=1) == b'\\x08\\x01' else 1)"
)


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def build() -> tuple[Path, Path]:
    """Builds both artifacts with the locked hatchling and checks that they hold what users need."""
    out = BUILD / "dist"
    run(Path(sys.executable).parent / "hatchling", "build", "-d", out, cwd=ROOT)
    wheel = next(out.glob("modelplane-*.whl"))
    sdist = next(out.glob("modelplane-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "modelplane/v1/registry_pb2.py",
        "modelplane/v1/registry_pb2.pyi",
        "modelplane/v1/py.typed",
        "modelplane/client/py.typed",
        "modelplane/server/cli.py",
    ):
        assert needed in names, f"the wheel lacks {needed}"
    assert not any(n.startswith("modelplane/__init__") for n in names), "modelplane must stay a namespace"
    migrations = [n for n in names if n.startswith("modelplane/server/store/schema/") and n.endswith(".sql")]
    assert migrations, "the wheel lacks the SQL migrations"
    check_console(wheel, names)
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(m.endswith("protos/modelplane/v1/registry.proto") for m in members), "the sdist lacks protos/"
    assert not any("/node_modules/" in m for m in members), "the sdist holds node_modules"
    return wheel, sdist


CONSOLE = "modelplane/server/console/static/"


def check_console(wheel: Path, names: set[str]) -> None:
    """The web console's index.html is in the wheel with every script and stylesheet it loads."""
    assert f"{CONSOLE}index.html" in names, "the wheel lacks the web console (make console-build)"
    index = zipfile.ZipFile(wheel).read(f"{CONSOLE}index.html").decode()
    assets = re.findall(r'(?:src|href)="\./(assets/[^"]+)"', index)
    assert assets, "the console's index.html loads no assets"
    for asset in assets:
        assert CONSOLE + asset in names, f"the wheel lacks {asset}, which the console's index.html loads"


def venv(name: str, lock: str, wheel: Path, extra: str) -> Path:
    """A clean virtualenv with the locked dependencies of one install, then the wheel without resolution."""
    path = BUILD / name
    run(sys.executable, "-m", "venv", "--clear", path)
    python = path / "bin" / "python"
    run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--require-hashes",
        "--no-deps",
        "-r",
        ROOT / "requirements" / lock,
    )
    run(python, "-m", "pip", "install", "-q", "--no-deps", f"{wheel}{extra}")
    run(python, "-m", "pip", "check")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def serve_and_call(server_env: Path, client_env: Path) -> None:
    database = f"modelplane_dist_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(ADMIN_URL, f'CREATE DATABASE "{database}"'))
    address = f"127.0.0.1:{free_port()}"
    command = [
        str(server_env / "bin" / "modelplane"),
        "serve",
        "--address",
        address,
        "--database-url",
        with_database(ADMIN_URL, database),
        "--no-auth",
    ]
    print("+", " ".join(command), flush=True)
    server = subprocess.Popen(command, cwd=BUILD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        probe = [str(client_env / "bin" / "python"), "-c", PROBE, address]
        deadline = time.monotonic() + 60
        while subprocess.run(probe, capture_output=True).returncode:
            assert server.poll() is None, f"the server from the wheel exited:\n{server.communicate()[0]}"
            assert time.monotonic() < deadline, "the server from the wheel was not SERVING within 60 s"
        result = subprocess.run(
            [str(client_env / "bin" / "python"), "-c", CLIENT_PROGRAM, address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.strip() == "models/from-wheel openai", result.stdout + result.stderr
        print(result.stdout.strip())
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
        asyncio.run(execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    assert server.returncode == 0, f"the server exited {server.returncode} on SIGTERM:\n{output}"


def serve_without_the_extra(client_env: Path) -> None:
    """The console script is in every install; without the server extra it says, in one line, what to add."""
    command = [str(client_env / "bin" / "modelplane"), "serve", "--database-url", ADMIN_URL, "--no-auth"]
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    said = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, said
    assert "Traceback" not in said, said
    assert len(said.splitlines()) == 1, said
    assert "pip install 'modelplane[server]'" in said, said
    print(said)


def main() -> None:
    shutil.rmtree(BUILD, ignore_errors=True)
    BUILD.mkdir(parents=True)
    wheel, _ = build()
    base = venv("base", "base.lock", wheel, "")
    server = venv("server", "server.lock", wheel, "[server]")
    serve_without_the_extra(base)
    serve_and_call(server, base)
    print("dist check passed: wheel and sdist built; base names the extra serve needs; [server] serves")


if __name__ == "__main__":
    main()
