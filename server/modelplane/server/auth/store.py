"""Bearer tokens in Postgres (api_tokens): create, list, revoke, and look up by secret.

Only the SHA-256 of a secret is stored; the secret itself exists once, in create_token's return value.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from modelplane.server.auth.roles import Role, parse_role
from modelplane.server.auth.scopes import parse_scopes
from modelplane.server.context import ANONYMOUS
from modelplane.server.errors import AlreadyExists, InvalidArgument, NotFound
from modelplane.server.store.pool import CONNECTION_ERRORS, Connection
from modelplane.v1.error_reason_pb2 import ErrorReason

SECRET_PREFIX = "mp_"
# 32 random bytes, urlsafe base64 without padding: 43 characters.
_SECRET = re.compile(r"^mp_[A-Za-z0-9_-]{43}$")
_TOKEN_ID = re.compile(r"^tok_[0-9a-f]{16}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

# What a command-line run meets when the URL is wrong, the database is missing or Postgres is down;
# the CLI shows these as one line instead of a traceback.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


@dataclass(frozen=True)
class TokenInfo:
    """A token as stored, without its secret."""

    id: str
    name: str
    role: Role
    create_time: datetime
    revoke_time: datetime | None
    # What the token may name ("deployments/web", ...); empty: anything its role allows (auth/scopes.py).
    scopes: tuple[str, ...] = ()

    @property
    def revoked(self) -> bool:
        return self.revoke_time is not None


def hash_secret(secret: str) -> bytes:
    """The stored form of a secret; lookups and the authenticator's cache compare these, never secrets."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def looks_like_secret(secret: str) -> bool:
    """True when `secret` has the shape create_token gives; anything else is refused without a query."""
    return _SECRET.match(secret) is not None


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument.field(
            "name", "use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if _TOKEN_ID.match(name):
        # `token revoke` takes a name or an id; a name shaped like an id would make that ambiguous.
        raise InvalidArgument.field("name", "must not look like a token id (tok_ and 16 hex digits)")
    if name == ANONYMOUS:
        # The audit log's actor for calls on a server without auth; a token of that name would blur it.
        raise InvalidArgument.field("name", f"{ANONYMOUS!r} is reserved")
    return name


def _token(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        create_time=row["create_time"],
        revoke_time=row["revoke_time"],
        scopes=tuple(row["scopes"]),
    )


_COLUMNS = "id, name, role, create_time, revoke_time, scopes"


async def create_token(
    conn: Connection, name: str, role: str, scopes: Sequence[str] = ()
) -> tuple[TokenInfo, str]:
    """Creates a token, scoped when `scopes` are given; returns it and its secret, which is not kept and
    cannot be read again."""
    checked_role = parse_role(role)
    validate_name(name)
    checked_scopes = parse_scopes(scopes)
    secret = new_secret()
    try:
        row = await conn.fetchrow(
            f"INSERT INTO api_tokens (id, name, role, secret_sha256, scopes) VALUES ($1, $2, $3, $4, $5)"
            f" RETURNING {_COLUMNS}",
            "tok_" + secrets.token_hex(8),
            name,
            checked_role.value,
            hash_secret(secret),
            list(checked_scopes),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "api_tokens_name_key":
            raise AlreadyExists(
                f"a token named {name!r} already exists",
                reason=ErrorReason.ERROR_REASON_TOKEN_ALREADY_EXISTS,
                metadata={"name": name},
            ) from None
        # An id or secret collision of 64 or 256 random bits: not something a caller can act on.
        raise
    assert row is not None
    return _token(row), secret


async def list_tokens(conn: Connection, *, include_revoked: bool = True) -> list[TokenInfo]:
    """Tokens oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE $1 OR revoke_time IS NULL ORDER BY create_time, id",
        include_revoked,
    )
    return [_token(row) for row in rows]


async def revoke_token(conn: Connection, name_or_id: str) -> TokenInfo:
    """Revokes the token with this name or id; revoking a revoked token keeps its first revoke time."""
    row = await conn.fetchrow(
        f"UPDATE api_tokens SET revoke_time = coalesce(revoke_time, now())"
        f" WHERE id = $1 OR name = $1 RETURNING {_COLUMNS}",
        name_or_id,
    )
    if row is None:
        raise NotFound(
            f"no token has the name or id {name_or_id!r}",
            reason=ErrorReason.ERROR_REASON_TOKEN_NOT_FOUND,
            metadata={"token": name_or_id},
        )
    return _token(row)


async def find_by_secret(conn: Connection, secret: str) -> TokenInfo | None:
    """The live (not revoked) token whose secret this is, or None."""
    if not looks_like_secret(secret):
        return None
    return await find_by_hash(conn, hash_secret(secret))


async def find_by_hash(conn: Connection, secret_sha256: bytes) -> TokenInfo | None:
    """The live token whose stored hash this is, or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE secret_sha256 = $1 AND revoke_time IS NULL",
        secret_sha256,
    )
    return None if row is None else _token(row)
