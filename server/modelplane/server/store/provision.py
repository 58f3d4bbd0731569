"""The server's own database as a thing to name and create: which database a URL points at, how an
operator creates it when it is missing, and `--create-database` doing that itself."""

from __future__ import annotations

import logging
import shlex
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from modelplane.server.store.urls import with_database

log = logging.getLogger(__name__)

# The database connected to while creating another one; every Postgres cluster starts with it.
MAINTENANCE_DATABASE = "postgres"


class DatabaseMissing(Exception):
    """The database the URL names does not exist. Retrying will not help: an operator must create it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = database_name(url)
        super().__init__(missing_database_help(url))


def redacted_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def database_name(url: str) -> str | None:
    """The database a Postgres URL names in its path; None when it names none and the driver's default
    (the user's name) applies."""
    return unquote(urlsplit(url).path.lstrip("/")) or None


def missing_database_help(url: str) -> str:
    """One line for the operator: which database is missing and the two ways to create it."""
    name = database_name(url) or "(the user's default)"
    maintenance = redacted_url(with_database(url, MAINTENANCE_DATABASE))
    return (
        f"database {name!r} does not exist ({redacted_url(url)}); create it with"
        f" `createdb --maintenance-db={shlex.quote(maintenance)} {shlex.quote(name)}`,"
        " or start with --create-database"
    )


def quote_identifier(name: str) -> str:
    """A Postgres identifier quoted so that any name is taken literally."""
    return '"' + name.replace('"', '""') + '"'


async def create_database(url: str, *, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - passed to asyncpg
    """Creates the database `url` names, connecting to the cluster's maintenance database with the same
    credentials. False when it already exists (another replica created it first)."""
    name = database_name(url)
    if name is None:
        raise ValueError("--create-database needs a database name in the URL's path, e.g. .../modelplane")
    conn = await asyncpg.connect(with_database(url, MAINTENANCE_DATABASE), timeout=timeout)
    try:
        # CREATE DATABASE takes no parameters; the name is quoted as an identifier instead.
        await conn.execute(f"CREATE DATABASE {quote_identifier(name)}", timeout=timeout)
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await conn.close()
    log.info("created database %r", name)
    return True
