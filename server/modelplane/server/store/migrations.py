"""Applies the numbered SQL files in schema/ at start, under an advisory lock: once across replicas.

Each applied file is recorded with its checksum (an edited one is refused) and with the oldest code that can
still serve the schema it leaves (`serves_from`; code is known by the number of its latest file). A server
whose latest file is L serves a database at schema V when L <= V and serves_from(V) <= L; see `unservable`.

A file's first lines may declare, as `-- modelplane: DIRECTIVE[, DIRECTIVE]` comments:
- `expand-only`: it only adds (tables, nullable or defaulted columns, indexes), so code written for the
  schema before it keeps working: serves_from stays what it was;
- `serves-from N`: it removes only what code from file N on no longer uses (the contract step of an
  expand/contract change): code from N on keeps serving;
- `no-transaction`: it runs outside a transaction (CREATE INDEX CONCURRENTLY cannot run inside one); it
  must hold one statement and be safe to run again, as a crash can leave it run but not recorded.
A file with neither expand-only nor serves-from makes every older server NOT_SERVING once it is applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from modelplane.server.store.pool import Connection

log = logging.getLogger(__name__)

# An arbitrary, fixed key: every replica takes the same session lock, so only one migrates at a time and
# the others find the work done when they get the lock.
MIGRATION_LOCK_KEY = 0x6D6F64656C706C  # "modelpl"

# Seconds between tries for the lock. Waiters poll instead of blocking in pg_advisory_lock: a blocked
# statement holds a snapshot, which a CREATE INDEX CONCURRENTLY run by the lock's holder would wait for.
LOCK_POLL_INTERVAL = 0.2

# Longest one migration's statements may run: an index on a large table takes minutes, not hours.
MIGRATION_STATEMENT_TIMEOUT = 3600.0

EXPAND_ONLY = "expand-only"
NO_TRANSACTION = "no-transaction"
SERVES_FROM = "serves-from"
DIRECTIVES = frozenset({EXPAND_ONLY, NO_TRANSACTION, SERVES_FROM})

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_DIRECTIVE = re.compile(r"^--\s*modelplane:(.*)$")

# The bookkeeping table. Its columns past the first three are added in place (nullable, so that code
# from before them goes on inserting its rows): every file's checksum is recorded as it is applied, so
# the column must exist before file 1 runs, which no numbered file can ensure.
_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text",
    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS serves_from integer",
)
_BOOKKEEPING_COMPLETE = (
    "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
    " AND table_name = 'schema_migrations' AND column_name IN ('checksum', 'serves_from')"
)


class MigrationError(RuntimeError):
    """The migration files and what the database recorded disagree; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    # The oldest code (by its latest file) that this migration lets serve the schema after it: 0 for an
    # expand-only file, N for `serves-from N`, its own version otherwise.
    keeps_serving_from: int = 0
    in_transaction: bool = True

    @property
    def expand_only(self) -> bool:
        return self.keeps_serving_from == 0

    @property
    def checksum(self) -> str:
        """sha256 of the file's text: what the database records, and compares at every start."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def _directives(name: str, version: int, sql: str) -> tuple[int, bool]:
    """What the file's header declares: (keeps_serving_from, in_transaction)."""
    found: dict[str, str] = {}
    for line in sql.splitlines():
        match = _DIRECTIVE.match(line.strip())
        if match is None:
            break
        for word in match.group(1).split(","):
            directive, _, argument = word.strip().partition(" ")
            if directive:
                found[directive] = argument.strip()
    unknown = set(found) - DIRECTIVES
    if unknown:
        raise MigrationError(
            f"{name}: unknown directive {', '.join(sorted(unknown))}; known: {', '.join(sorted(DIRECTIVES))}"
        )
    keeps = version
    if EXPAND_ONLY in found:
        keeps = 0
    if SERVES_FROM in found:
        argument = found[SERVES_FROM]
        if EXPAND_ONLY in found or not argument.isdigit() or not 1 <= int(argument) < version:
            raise MigrationError(
                f"{name}: 'serves-from N' takes the number of an earlier migration (1 to {version - 1}),"
                f" and an expand-only file needs none; found {argument!r}"
            )
        keeps = int(argument)
    return keeps, NO_TRANSACTION not in found


def load_migrations(source: Traversable | None = None) -> list[Migration]:
    """The migrations of `source` (a folder; the package's schema/ by default), in order."""
    folder = source if source is not None else resources.files("modelplane.server.store") / "schema"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            version, sql = int(match.group(1)), entry.read_text(encoding="utf-8")
            keeps, in_transaction = _directives(entry.name, version, sql)
            found.append(Migration(version, entry.name, sql, keeps, in_transaction))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def latest_version(migrations: Sequence[Migration] | None = None) -> int:
    return len(load_migrations() if migrations is None else migrations)


def unservable(schema_version: int, serves_from: int, code_latest: int) -> str | None:
    """Why code whose latest migration is `code_latest` cannot serve a schema at `schema_version` that code
    from `serves_from` on can serve; None when it can."""
    if schema_version < code_latest:
        return (
            f"the database schema is at version {schema_version}, older than this server's {code_latest}:"
            " it has not been migrated yet (modelplane migrate, or a server of this version starting)"
        )
    if serves_from > code_latest:
        return (
            f"the database schema is at version {schema_version}, which needs a server that knows schema"
            f" {serves_from} or later (its migrations since are not all expand-only), and this one knows up"
            f" to {code_latest}; upgrade this replica"
        )
    return None


async def _lock(conn: Connection) -> None:
    # The lock belongs to Postgres and another process releases it: there is no Event to wait on.
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):  # noqa: ASYNC110
        await asyncio.sleep(LOCK_POLL_INTERVAL)


async def _check_applied(conn: Connection, migrations: Sequence[Migration]) -> dict[int, int]:
    """Compares what the database recorded with the files; fills in checksums recorded before there were
    any. Returns serves_from by applied version."""
    rows = await conn.fetch("SELECT version, name, checksum, serves_from FROM schema_migrations")
    applied = {int(row["version"]): row for row in rows}
    serves_from: dict[int, int] = {}
    for version, row in applied.items():
        serves_from[version] = version if row["serves_from"] is None else int(row["serves_from"])
    for migration in migrations:
        if migration.version not in applied:
            continue
        row = applied[migration.version]
        if row["name"] != migration.name:
            raise MigrationError(
                f"migration {migration.version} was applied as {row['name']}, and is {migration.name} here:"
                " a migration is never renamed or renumbered once applied; restore its name"
            )
        if row["checksum"] is None:
            await conn.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                migration.version,
                migration.checksum,
            )
        elif row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} was edited after it was applied (its checksum is"
                f" {migration.checksum[:12]}..., the database recorded {row['checksum'][:12]}...): restore"
                " the file as it was applied and put the change in a new migration"
            )
    return serves_from


async def migrate(conn: Connection, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Brings the schema up to date with `migrations` (the package's by default); returns the names of the
    migrations this call applied. MigrationError when an applied file was edited, renamed or renumbered."""
    migrations = load_migrations() if migrations is None else migrations
    applied: list[str] = []
    await _lock(conn)
    try:
        if await conn.fetchval(_BOOKKEEPING_COMPLETE) != 2:
            # Only when columns are missing: ALTER TABLE locks out every replica's health probe meanwhile.
            for statement in _BOOKKEEPING:
                await conn.execute(statement)
        serves_from = await _check_applied(conn, migrations)
        current = max(serves_from, default=0)
        for migration in migrations:
            if migration.version <= current:
                continue
            # A migration never lets older code serve than the schema before it did.
            previous = serves_from.get(migration.version - 1, migration.version - 1)
            serves_from[migration.version] = max(previous, migration.keeps_serving_from)
            record = (
                "INSERT INTO schema_migrations (version, name, checksum, serves_from)"
                " VALUES ($1, $2, $3, $4)",
                migration.version,
                migration.name,
                migration.checksum,
                serves_from[migration.version],
            )
            if migration.in_transaction:
                async with conn.transaction():
                    await conn.execute(migration.sql, timeout=MIGRATION_STATEMENT_TIMEOUT)
                    await conn.execute(*record)
            else:
                await conn.execute(migration.sql, timeout=MIGRATION_STATEMENT_TIMEOUT)
                await conn.execute(*record)
            log.info("applied migration %s", migration.name)
            applied.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied
