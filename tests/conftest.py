"""Shared fixtures: a throw-away Postgres database per test, migrated from a template made once per run.

Postgres comes from MODELPLANE_TEST_DATABASE_URL when set, else from 127.0.0.1:5432 when it answers,
else from an embedded Postgres (pgserver); MODELPLANE_TEST_EMBEDDED=1 forces the embedded one.
Property tests draw a fixed set of examples unless HYPOTHESIS_PROFILE=explore.
Every database this run creates is dropped at its end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings

from modelplane.server.store.migrations import migrate
from modelplane.server.store.pool import Database
from modelplane.server.store.urls import with_database
from tests.support.tcp_proxy import TcpProxy

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# `make test` draws the same examples on every run, so a red build always means a change, never a draw;
# HYPOTHESIS_PROFILE=explore draws new ones each time, to look for what the fixed draw does not reach.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A URL of the test Postgres with the right to create databases."""
    if os.environ.get("MODELPLANE_TEST_EMBEDDED") != "1":
        url = os.environ.get("MODELPLANE_TEST_DATABASE_URL")
        if url:
            yield url
            return
        if asyncio.run(_answers(LOCAL_URL)):
            yield LOCAL_URL
            return
    from modelplane.server.store.embedded import start_embedded

    # Not under pytest's basetemp: another pytest run on the machine prunes old basetemps, and would
    # pull the data directory from under the running Postgres.
    root = Path(tempfile.mkdtemp(prefix="modelplane-test-pg-"))
    embedded = start_embedded(root)
    try:
        yield embedded.url
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _create_template(admin: str, name: str) -> None:
    await _execute(admin, f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(with_database(admin, name), timeout=10)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(admin_url: str) -> Iterator[str]:
    """A migrated database that each test's database is copied from (much faster than migrating each)."""
    name = f"mp_test_{os.getpid()}_{uuid.uuid4().hex[:8]}_template"
    asyncio.run(_create_template(admin_url, name))
    yield name
    asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_database_url(admin_url: str) -> Iterator[str]:
    """A URL of a new, empty database (no schema), dropped after the test."""
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(admin_url, f'CREATE DATABASE "{name}"'))
    yield with_database(admin_url, name)
    asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(admin_url: str, template_database: str) -> Iterator[str]:
    """A URL of a new, migrated database, dropped after the test."""
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield with_database(admin_url, name)
    asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """An open pool on a new, migrated database."""
    db = Database(database_url)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test database's Postgres, which the test can cut, stall and restore."""
    try:
        proxy = TcpProxy.for_url(database_url)
    except ValueError:
        pytest.skip("the test Postgres is reached over a Unix socket; the proxy needs TCP")
    async with proxy:
        yield proxy
