"""Turns the `authorization` metadata of a call into a Caller, or refuses the call.

The call's scope (calls.py) calls `Authenticator.authenticate` once per RPC and fills in the
request id.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from modelplane.server.auth.roles import Role, allowed_roles, is_open
from modelplane.server.auth.scopes import TokenScope
from modelplane.server.auth.store import TokenInfo, find_by_hash, hash_secret, looks_like_secret
from modelplane.server.context import ANONYMOUS, Caller
from modelplane.server.errors import PermissionDenied, Unauthenticated
from modelplane.server.store.pool import Database
from modelplane.v1.error_reason_pb2 import ErrorReason

# Enough for every token of a large installation; past it the oldest entries go first.
MAX_CACHED_TOKENS = 10_000


class Authenticator:
    """Checks bearer tokens and roles per RPC; a scoped token's Caller carries its scope, which the
    call's scope checks against each request once it is parsed.

    Validated tokens are cached by the SHA-256 of their secret for `cache_ttl` seconds, so the hot path
    does not query Postgres on every call. The price: a revoked token keeps working on a replica that
    validated it recently for at most `cache_ttl` seconds after the revocation. Unknown and malformed
    tokens are never cached, so a token works as soon as it is created.

    With `enabled` False every call gets the anonymous Caller (actor "anonymous", role None).
    """

    def __init__(
        self,
        database: Database,
        enabled: bool,
        *,
        cache_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = database
        self.enabled = enabled
        self.cache_ttl = cache_ttl
        self._clock = clock
        # hash of the secret -> (expiry on `clock`, token)
        self._cache: dict[bytes, tuple[float, TokenInfo]] = {}
        # The anonymous caller of each method, made once (a Caller is immutable).
        self._anonymous: dict[str, Caller] = {}

    async def authenticate(self, method: str, authorization: str | None) -> Caller:
        """Who calls; raises Unauthenticated (TOKEN_MISSING, TOKEN_INVALID) or PermissionDenied."""
        if not self.enabled or is_open(method):
            anonymous = self._anonymous.get(method)
            if anonymous is None:
                anonymous = self._anonymous[method] = Caller(
                    actor=ANONYMOUS, role=None, method=method, trace_request_id=""
                )
            return anonymous
        token = await self._token(authorization)
        allowed = allowed_roles(method)
        if token.role not in allowed:
            raise _denied(method, token, allowed)
        return Caller(
            actor=token.name,
            role=token.role.value,
            method=method,
            trace_request_id="",
            scope=TokenScope.of(token.scopes),
        )

    async def _token(self, authorization: str | None) -> TokenInfo:
        if authorization is None or not authorization.strip():
            raise Unauthenticated(
                'this method needs a token: send the metadata "authorization: Bearer <token>"',
                reason=ErrorReason.ERROR_REASON_TOKEN_MISSING,
            )
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not looks_like_secret(secret):
            raise Unauthenticated(
                'the authorization metadata must be "Bearer <token>",'
                " with a token made by `modelplane token create`",
                reason=ErrorReason.ERROR_REASON_TOKEN_INVALID,
            )
        digest = hash_secret(secret)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None:
            expiry, token = cached
            if now < expiry:
                return token
            del self._cache[digest]
        async with self._db.connection() as conn:
            found = await find_by_hash(conn, digest)
        if found is None:
            raise Unauthenticated(
                "the token is unknown or revoked", reason=ErrorReason.ERROR_REASON_TOKEN_INVALID
            )
        self._remember(digest, found, now)
        return found

    def _remember(self, digest: bytes, token: TokenInfo, now: float) -> None:
        if self.cache_ttl <= 0:
            return
        if len(self._cache) >= MAX_CACHED_TOKENS:
            self._cache = {key: entry for key, entry in self._cache.items() if entry[0] > now}
            while len(self._cache) >= MAX_CACHED_TOKENS:
                # Dicts keep insertion order: the first key is the oldest entry.
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = (now + self.cache_ttl, token)

    def forget(self) -> None:
        """Drops every cached token (a revocation made through this process takes effect at once)."""
        self._cache.clear()


def _denied(method: str, token: TokenInfo, allowed: frozenset[Role]) -> PermissionDenied:
    if not allowed:
        return PermissionDenied(
            f"no role may call {method}",
            metadata={"method": method, "role": token.role.value, "allowed_roles": ""},
        )
    names = ", ".join(role.value for role in Role if role in allowed)
    return PermissionDenied(
        f"role {token.role.value!r} may not call {method}; roles allowed: {names}",
        metadata={"method": method, "role": token.role.value, "allowed_roles": names},
    )
