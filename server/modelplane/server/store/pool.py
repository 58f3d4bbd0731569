"""The asyncpg pools (one for every call, one for bulk writes) and the one place where a lost, refusing or
hung database becomes UNAVAILABLE within a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from modelplane.server.context import current_deadline
from modelplane.server.errors import StorageUnavailable
from modelplane.server.store.connect_noise import quiet_connect_races
from modelplane.server.store.provision import DatabaseMissing

log = logging.getLogger(__name__)

# Seconds a client is asked to wait while the server's database does not exist: it takes an operator.
MISSING_DATABASE_RETRY_AFTER = 30.0

# Seconds without a database failure of one kind after which the next one is logged as a new episode.
EPISODE_GAP = 60.0

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

    `storage_timeout` bounds all of one call's borrowing of a connection (waiting for it, connecting it,
    every statement run on it) and the call's gRPC deadline bounds it too, whichever comes first; past
    it the connection is terminated, never waited on, so a hung Postgres costs a call 1.5 s and the
    answer (UNAVAILABLE) reaches the client within the 2 s promised. Work outside calls (migrations,
    log maintenance, the rollout driver) is bounded per statement by `command_timeout` instead.

    The bulk pool serves bulk writes (log ingestion) alone, so a flood of them never holds the
    connections that every other call needs; it connects only when first used.
    """

    min_size: int = 2
    max_size: int = 10
    bulk_max_size: int = 8
    connect_timeout: float = 1.0
    acquire_timeout: float = 1.5
    storage_timeout: float = 1.5
    command_timeout: float = 10.0
    # How long a stop waits for a graceful close (a Terminate message to each backend) before it
    # terminates the connections: a hung Postgres never answers a graceful close.
    close_timeout: float = 1.0


# What ends a borrowed connection's use in a state nobody should wait on: a cancelled or timed-out
# statement (asyncpg would send a cancel request and wait for it), or a lost connection.
_ABANDONING: tuple[type[BaseException], ...] = (asyncio.CancelledError, *CONNECTION_ERRORS)


class _Episodes:
    """Logs the failures of one kind as episodes: the first a WARNING, its repeats DEBUG, until EPISODE_GAP
    quiet seconds end it. Under load, an outage is then a few lines instead of one per call; health's
    own log lines say when it begins and ends."""

    def __init__(self) -> None:
        self.count = 0
        self.last: float | None = None

    def report(self, message: str, *args: object) -> None:
        now = time.monotonic()
        starts = self.last is None or now - self.last > EPISODE_GAP
        self.count += 1
        self.last = now
        log.log(logging.WARNING if starts else logging.DEBUG, message, *args)

    def within(self, seconds: float) -> bool:
        """Whether one was reported in the last `seconds`."""
        return self.last is not None and time.monotonic() - self.last <= seconds


def _described(exc: BaseException) -> str:
    """The error for a log line: its text, or its type when it has none (a connect that timed out)."""
    return str(exc) or type(exc).__name__


def _abandons(exc: BaseException) -> bool:
    """Whether `exc` left a connection in a state nobody should wait on: it is, or was raised from (the
    store turns connection errors into StorageUnavailable), an _ABANDONING error."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of causes is short; this only bounds a cycle
        if seen is None:
            return False
        if isinstance(seen, _ABANDONING):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _terminate(conn: Connection) -> None:
    """Closes a borrowed connection at once; the pool opens a new one when it needs it."""
    # A connection terminated before is detached from its proxy, which then refuses every call.
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


class Database:
    """Owns the pools; `connection()`, `bulk_connection()` and `transaction()` hand out connections or
    raise StorageUnavailable."""

    def __init__(self, url: str, settings: PoolSettings | None = None) -> None:
        quiet_connect_races()
        self.url = url
        self.settings = settings or PoolSettings()
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._bulk_pool: asyncpg.Pool[asyncpg.Record] | None = None
        # Set when the last open() found no such database, so calls hear that rather than "retry shortly".
        self._missing = False
        # Connections Postgres refused for want of slots (max_connections, or a role's or database's
        # CONNECTION LIMIT): health reads them. And calls that found the database unavailable.
        self.refusals = _Episodes()
        self._failures = _Episodes()

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

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - a bound, not a deadline
        """Closes both pools gracefully within `timeout` seconds (the settings' close_timeout by default),
        then terminates whatever is left: a stop never waits on a Postgres that does not answer."""
        limit = self.settings.close_timeout if timeout is None else timeout
        pools = [pool for pool in (self._bulk_pool, self._pool) if pool is not None]
        self._pool = self._bulk_pool = None
        if not pools:
            return
        closing = [asyncio.ensure_future(pool.close()) for pool in pools]
        done, pending = await asyncio.wait(closing, timeout=max(limit, 0.0))
        if pending:
            log.warning("the database did not close its connections within %.1f s; terminating them", limit)
            for task in pending:
                task.cancel()
            for pool in pools:
                pool.terminate()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("closing a pool failed: %r", task.exception())

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
        loop = asyncio.get_running_loop()
        limit = self._limit(loop.time())
        acquire_timeout = (
            self.settings.acquire_timeout if limit is None else min(limit, self.settings.acquire_timeout)
        )
        expired = False
        try:
            async with pool.acquire(timeout=max(acquire_timeout, 0.0)) as conn:

                def abandon() -> None:
                    # Terminating makes the statement in flight (and a ROLLBACK after it) fail at once, where
                    # a cancellation would wait on a Postgres that does not answer.
                    nonlocal expired
                    expired = True
                    _terminate(conn)

                timer = loop.call_at(loop.time() + limit, abandon) if limit is not None else None
                try:
                    yield conn
                except BaseException as exc:
                    if _abandons(exc):
                        _terminate(conn)
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
        except CONNECTION_ERRORS as exc:
            if isinstance(exc, asyncpg.TooManyConnectionsError):
                raise self._refused(exc) from exc
            if expired:
                self._failures.report("database unavailable: no answer within %.1f s", limit)
                raise StorageUnavailable("the database did not answer in time; retry shortly") from exc
            self._failures.report("database unavailable: %s", _described(exc))
            raise StorageUnavailable("the database is unavailable; retry shortly") from exc

    def _refused(self, exc: BaseException) -> StorageUnavailable:
        """A new connection refused for want of slots: one WARNING an episode, with what to do."""
        self.refusals.report(
            "Postgres refused a new connection (%s): its connection slots are used up; calls that find"
            " none of this replica's %d open connections free fail with STORAGE_UNAVAILABLE until slots"
            " free up. Size the pools so that every replica's total stays below max_connections"
            " (README, Operating it)",
            exc,
            self.open_connections(),
        )
        return StorageUnavailable("Postgres has no free connection slot; retry shortly")

    def open_connections(self) -> int:
        """Connections the call pool holds open right now (busy or idle)."""
        return self._pool.get_size() if self._pool is not None else 0

    def _limit(self, now: float) -> float | None:
        """Seconds the borrowing may take: the storage timeout, or less when the call's deadline is nearer;
        None outside any call."""
        deadline = current_deadline.get()
        if deadline is None:
            return None
        limit = self.settings.storage_timeout
        if deadline.task is asyncio.current_task():
            limit = min(limit, deadline.at - now)
        return limit

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction; it is committed when the block ends, so a write is acknowledged after COMMIT."""
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except CONNECTION_ERRORS as exc:
                self._failures.report("database unavailable: %s", _described(exc))
                raise StorageUnavailable("the database is unavailable; retry shortly") from exc

    async def ping(self, timeout: float = 1.0) -> tuple[int, int]:  # noqa: ASYNC109 - passed on to asyncpg
        """The schema version and the oldest code version that can serve it (see migrations.py), (0, 0) for
        an empty database; or raises StorageUnavailable."""
        async with self.connection() as conn:
            try:
                row = await conn.fetchrow(
                    "SELECT version, coalesce(serves_from, version) AS serves_from FROM schema_migrations"
                    " ORDER BY version DESC LIMIT 1",
                    timeout=timeout,
                )
            except CONNECTION_ERRORS as exc:
                raise StorageUnavailable("the database is unavailable; retry shortly") from exc
            return (0, 0) if row is None else (int(row["version"]), int(row["serves_from"]))
