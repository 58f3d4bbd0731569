"""How many connections Postgres lets this server's role open, so that a start-up with several workers can
refuse a pool budget that would not fit instead of failing calls later with "too many clients"."""

from __future__ import annotations

import asyncpg

# The slots Postgres keeps for superusers (superuser_reserved_connections) and, since Postgres 16, for
# roles granted pg_use_reserved_connections (reserved_connections): neither is open to an ordinary role.
_LIMIT_SETTINGS = ("max_connections", "superuser_reserved_connections", "reserved_connections")


async def connection_limit(url: str, *, timeout: float = 2.0) -> int:  # noqa: ASYNC109 - passed on to asyncpg
    """max_connections less the reserved slots, as the database at `url` reports them."""
    conn = await asyncpg.connect(url, timeout=timeout, command_timeout=timeout)
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", list(_LIMIT_SETTINGS)
        )
    finally:
        await conn.close()
    settings = {row["name"]: int(row["setting"]) for row in rows}
    reserved = settings.get("superuser_reserved_connections", 0) + settings.get("reserved_connections", 0)
    return settings["max_connections"] - reserved
