"""The asyncpg pools (one for every call, one for bulk writes) and the one place where a lost database
becomes UNAVAILABLE."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from modelplane.server.errors import StorageUnavailable
from modelplane.server.store.provision import DatabaseMissing

log = logging.getLogger(__name__)

# Seconds a client is asked to wait while the server's database does not exist: it takes an operator.
MISSING_DATABASE_RETRY_AFTER = 30.0

# What store functions take: a plain connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# What a lost, refusing or hung Postgres looks like from asyncpg: every one of these becomes
# STORAGE_UNAVAILABLE, so a client retries instead of seeing INTERNAL.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


async def _reset_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a connection needs before it goes back to the pool.

    asyncpg's default reset (UNLISTEN, RESET ALL, advisory unlock, CLOSE ALL) is one more round trip per
    borrow. Pooled connections here keep no session state: LISTEN runs on the change feed's own
    connection, the migration lock is released explicitly, and every transaction is a managed block.
    So only a transaction left open (a cancelled call) needs undoing.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def exchange_timestamps_as_micros(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Makes the connection exchange timestamptz values as integers: microseconds since 2000-01-01 UTC,
    the form Postgres stores (see pg_time.py). asyncpg then encodes them as it encodes a bigint, about
    ten times faster than a datetime, which is a third of a COPY's encoding of a log event."""
    await conn.set_builtin_type_codec("timestamptz", schema="pg_catalog", codec_name="int8")


@dataclass(frozen=True)
class PoolSettings:
    """Timeouts are short on purpose: a client must hear UNAVAILABLE within 2 s when Postgres is gone.

    The bulk pool serves bulk writes (log ingestion) alone, so a flood of them never holds the
    connections that every other call needs; it connects only when first used.
    """

    min_size: int = 2
    max_size: int = 10
    bulk_max_size: int = 8
    connect_timeout: float = 1.0
    acquire_timeout: float = 1.5
    command_timeout: float = 10.0


class Database:
    """Owns the pools; `connection()`, `bulk_connection()` and `transaction()` hand out connections or
    raise StorageUnavailable."""

    def __init__(self, url: str, settings: PoolSettings | None = None) -> None:
        self.url = url
        self.settings = settings or PoolSettings()
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._bulk_pool: asyncpg.Pool[asyncpg.Record] | None = None
        # Set when the last open() found no such database, so calls hear that rather than "retry shortly".
        self._missing = False

    async def _create_pool(
        self, min_size: int, max_size: int, *, timestamps_as_micros: bool = False
    ) -> asyncpg.Pool[asyncpg.Record]:
        s = self.settings
        return await asyncpg.create_pool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            timeout=s.connect_timeout,
            command_timeout=s.command_timeout,
            # Statements are re-prepared after a reconnect; a small cache keeps memory flat.
            statement_cache_size=256,
            server_settings={"application_name": "modelplane"},
            reset=_reset_connection,
            init=exchange_timestamps_as_micros if timestamps_as_micros else None,
        )

    async def open(self) -> None:
        """Connects the pools; DatabaseMissing when the URL's database does not exist."""
        s = self.settings
        try:
            self._pool = await self._create_pool(s.min_size, s.max_size)
        except asyncpg.InvalidCatalogNameError as exc:
            self._missing = True
            raise DatabaseMissing(self.url) from exc
        self._missing = False
        self._bulk_pool = await self._create_pool(0, s.bulk_max_size, timestamps_as_micros=True)

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        pools, self._pool, self._bulk_pool = (self._bulk_pool, self._pool), None, None
        for pool in pools:
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout=5)
                except CONNECTION_ERRORS:
                    pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._borrow(self._pool) as conn:
            yield conn

    @asynccontextmanager
    async def bulk_connection(self) -> AsyncIterator[Connection]:
        """A connection of the bulk pool, which exchanges timestamptz values as integers (see
        exchange_timestamps_as_micros)."""
        async with self._borrow(self._bulk_pool) as conn:
            yield conn

    @asynccontextmanager
    async def _borrow(self, pool: asyncpg.Pool[asyncpg.Record] | None) -> AsyncIterator[Connection]:
        if pool is None:
            if self._missing:
                raise StorageUnavailable(
                    "the server's database does not exist; an operator must create it (the server's log"
                    " says how)",
                    retry_after=MISSING_DATABASE_RETRY_AFTER,
                )
            raise StorageUnavailable("the database is not connected yet; retry shortly")
        try:
            async with pool.acquire(timeout=self.settings.acquire_timeout) as conn:
                yield conn
        except CONNECTION_ERRORS as exc:
            log.warning("database unavailable: %s", exc)
            raise StorageUnavailable("the database is unavailable; retry shortly") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction; it is committed when the block ends, so a write is acknowledged after COMMIT."""
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except CONNECTION_ERRORS as exc:
                log.warning("database unavailable: %s", exc)
                raise StorageUnavailable("the database is unavailable; retry shortly") from exc

    async def ping(self, timeout: float = 1.0) -> int:  # noqa: ASYNC109 - passed on to asyncpg
        """Returns the schema version, or raises StorageUnavailable."""
        async with self.connection() as conn:
            try:
                value = await conn.fetchval(
                    "SELECT coalesce(max(version), 0) FROM schema_migrations", timeout=timeout
                )
            except CONNECTION_ERRORS as exc:
                raise StorageUnavailable("the database is unavailable; retry shortly") from exc
            return int(value)
