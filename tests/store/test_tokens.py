"""Bearer tokens on real Postgres: create, find, revoke, hashing at rest, and the Authenticator on top."""

from __future__ import annotations

import hashlib

import pytest

from modelplane.server.auth.roles import Role
from modelplane.server.auth.service import Authenticator
from modelplane.server.auth.store import (
    TokenInfo,
    create_token,
    find_by_secret,
    list_tokens,
    revoke_token,
)
from modelplane.server.context import ANONYMOUS
from modelplane.server.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from modelplane.server.store.pool import Database

GET_MODEL = "/modelplane.v1.ModelRegistryService/GetModel"
CREATE_MODEL = "/modelplane.v1.ModelRegistryService/CreateModel"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


async def _create(database: Database, name: str, role: str) -> tuple[TokenInfo, str]:
    async with database.transaction() as conn:
        return await create_token(conn, name, role)


async def _revoke(database: Database, name_or_id: str) -> TokenInfo:
    async with database.transaction() as conn:
        return await revoke_token(conn, name_or_id)


async def _find(database: Database, secret: str) -> TokenInfo | None:
    async with database.connection() as conn:
        return await find_by_secret(conn, secret)


class FakeClock:
    """A clock the test moves by hand, so cache expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_create_returns_a_secret_that_finds_the_token(database: Database) -> None:
    token, secret = await _create(database, "ci-pipeline", "service")
    assert secret.startswith("mp_")
    assert len(secret) == 3 + 43  # 32 random bytes, urlsafe base64 without padding
    assert token.name == "ci-pipeline"
    assert token.role is Role.SERVICE
    assert token.id.startswith("tok_")
    assert not token.revoked
    assert await _find(database, secret) == token


async def test_secrets_differ_and_do_not_find_each_other(database: Database) -> None:
    first, first_secret = await _create(database, "one", "reader")
    second, second_secret = await _create(database, "two", "reader")
    assert first_secret != second_secret
    assert (await _find(database, first_secret)) == first
    assert (await _find(database, second_secret)) == second
    assert await _find(database, "mp_" + "A" * 43) is None
    assert await _find(database, "not a token") is None
    assert await _find(database, "") is None


async def test_only_the_sha256_of_the_secret_is_stored(database: Database) -> None:
    token, secret = await _create(database, "dashboard", "reader")
    async with database.connection() as conn:
        rows = await conn.fetch("SELECT * FROM api_tokens")
        whole_table = await conn.fetchval("SELECT string_agg(t::text, '|') FROM api_tokens t")
    assert len(rows) == 1
    stored = dict(rows[0])
    assert stored["secret_sha256"] == hashlib.sha256(secret.encode()).digest()
    random_part = secret.removeprefix("mp_")
    assert random_part not in whole_table
    for value in stored.values():
        assert random_part not in str(value)
        if isinstance(value, bytes):
            assert random_part.encode() not in value
    assert stored["id"] == token.id


async def test_duplicate_name_is_already_exists(database: Database) -> None:
    await _create(database, "deployer", "operator")
    with pytest.raises(AlreadyExists) as caught:
        await _create(database, "deployer", "admin")
    assert caught.value.reason == "TOKEN_ALREADY_EXISTS"
    assert "deployer" in caught.value.message
    async with database.connection() as conn:
        assert [t.role for t in await list_tokens(conn)] == [Role.OPERATOR]


@pytest.mark.parametrize("role", ["root", "", "admins"])
async def test_bad_role_is_invalid_argument_on_role(database: Database, role: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await _create(database, "someone", role)
    assert [v.field for v in caught.value.violations] == ["role"]
    async with database.connection() as conn:
        assert await list_tokens(conn) == []


@pytest.mark.parametrize(
    "name", ["", "has space", "-leading-dash", "x" * 64, "tok_0123456789abcdef", "anonymous"]
)
async def test_bad_name_is_invalid_argument_on_name(database: Database, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await _create(database, name, "reader")
    assert [v.field for v in caught.value.violations] == ["name"]


async def test_revoke_by_name_and_by_id(database: Database) -> None:
    by_name, by_name_secret = await _create(database, "old-service", "service")
    by_id, by_id_secret = await _create(database, "old-reader", "reader")
    kept, kept_secret = await _create(database, "kept", "reader")

    revoked = await _revoke(database, "old-service")
    assert revoked.id == by_name.id
    assert revoked.revoked
    assert (await _revoke(database, by_id.id)).name == "old-reader"

    assert await _find(database, by_name_secret) is None
    assert await _find(database, by_id_secret) is None
    assert await _find(database, kept_secret) == kept

    async with database.connection() as conn:
        everything = await list_tokens(conn)
        live = await list_tokens(conn, include_revoked=False)
    assert [t.name for t in everything] == ["old-service", "old-reader", "kept"]
    assert [t.revoked for t in everything] == [True, True, False]
    assert live == [kept]


async def test_revoking_twice_keeps_the_first_revoke_time(database: Database) -> None:
    await _create(database, "twice", "reader")
    first = await _revoke(database, "twice")
    second = await _revoke(database, "twice")
    assert first.revoke_time is not None
    assert second.revoke_time == first.revoke_time


async def test_revoking_an_unknown_token_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound) as caught:
        await _revoke(database, "nobody")
    assert caught.value.reason == "TOKEN_NOT_FOUND"


# The Authenticator over the same tables.


async def test_authenticator_returns_the_token_as_caller(database: Database) -> None:
    _, secret = await _create(database, "story-teller", "service")
    auth = Authenticator(database, enabled=True)
    caller = await auth.authenticate(GET_MODEL, f"Bearer {secret}")
    assert caller.actor == "story-teller"
    assert caller.role == "service"
    assert caller.method == GET_MODEL
    assert caller.trace_request_id == ""
    # The scheme is case-insensitive, as in HTTP.
    assert (await auth.authenticate(GET_MODEL, f"bearer  {secret} ")).actor == "story-teller"


@pytest.mark.parametrize("authorization", [None, "", "   "])
async def test_missing_token_is_token_missing(database: Database, authorization: str | None) -> None:
    auth = Authenticator(database, enabled=True)
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(GET_MODEL, authorization)
    assert caught.value.reason == "TOKEN_MISSING"
    assert "authorization: Bearer <token>" in caught.value.message


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwdw==", "Bearer", "Bearer short", "mp_" + "A" * 43, "Bearer mp_" + "A" * 43],
)
async def test_malformed_or_unknown_token_is_token_invalid(database: Database, authorization: str) -> None:
    auth = Authenticator(database, enabled=True)
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(GET_MODEL, authorization)
    assert caught.value.reason == "TOKEN_INVALID"
    assert "A" * 43 not in caught.value.message


async def test_revoked_token_is_token_invalid(database: Database) -> None:
    _, secret = await _create(database, "gone", "admin")
    await _revoke(database, "gone")
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(database, enabled=True).authenticate(GET_MODEL, f"Bearer {secret}")
    assert caught.value.reason == "TOKEN_INVALID"


async def test_wrong_role_is_permission_denied_naming_the_roles(database: Database) -> None:
    _, secret = await _create(database, "viewer", "reader")
    auth = Authenticator(database, enabled=True)
    with pytest.raises(PermissionDenied) as caught:
        await auth.authenticate(CREATE_MODEL, f"Bearer {secret}")
    assert caught.value.reason == "ROLE_NOT_ALLOWED"
    assert "'reader'" in caught.value.message
    assert "admin, operator" in caught.value.message
    assert caught.value.metadata == {
        "method": CREATE_MODEL,
        "role": "reader",
        "allowed_roles": "admin, operator",
    }


async def test_unknown_method_is_denied_even_to_admin(database: Database) -> None:
    _, secret = await _create(database, "root", "admin")
    auth = Authenticator(database, enabled=True)
    with pytest.raises(PermissionDenied) as caught:
        await auth.authenticate("/modelplane.v1.ModelRegistryService/DropEverything", f"Bearer {secret}")
    assert caught.value.reason == "ROLE_NOT_ALLOWED"


async def test_open_methods_need_no_token(database: Database) -> None:
    caller = await Authenticator(database, enabled=True).authenticate(HEALTH_CHECK, None)
    assert caller.actor == ANONYMOUS
    assert caller.role is None


async def test_disabled_auth_makes_every_caller_anonymous(database: Database) -> None:
    auth = Authenticator(database, enabled=False)
    for method in (GET_MODEL, CREATE_MODEL, "/modelplane.v1.ModelRegistryService/DropEverything"):
        caller = await auth.authenticate(method, None)
        assert (caller.actor, caller.role, caller.method) == (ANONYMOUS, None, method)
    assert (await auth.authenticate(GET_MODEL, "Bearer garbage")).actor == ANONYMOUS


async def test_revoked_token_works_until_the_cache_ttl_passes(database: Database) -> None:
    _, secret = await _create(database, "cached", "operator")
    clock = FakeClock()
    auth = Authenticator(database, enabled=True, cache_ttl=5.0, clock=clock)
    assert (await auth.authenticate(GET_MODEL, f"Bearer {secret}")).actor == "cached"

    await _revoke(database, "cached")
    clock.now += 4.9
    # Still cached: the hot path did not ask Postgres, which is the trade the ttl makes.
    assert (await auth.authenticate(GET_MODEL, f"Bearer {secret}")).actor == "cached"

    clock.now += 0.2
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(GET_MODEL, f"Bearer {secret}")
    assert caught.value.reason == "TOKEN_INVALID"


async def test_a_cache_ttl_of_zero_sees_a_revocation_at_once(database: Database) -> None:
    _, secret = await _create(database, "uncached", "operator")
    auth = Authenticator(database, enabled=True, cache_ttl=0.0, clock=FakeClock())
    assert (await auth.authenticate(GET_MODEL, f"Bearer {secret}")).actor == "uncached"
    await _revoke(database, "uncached")
    with pytest.raises(Unauthenticated):
        await auth.authenticate(GET_MODEL, f"Bearer {secret}")


async def test_unknown_tokens_are_not_cached(database: Database) -> None:
    clock = FakeClock()
    auth = Authenticator(database, enabled=True, cache_ttl=60.0, clock=clock)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(GET_MODEL, "Bearer mp_" + "B" * 43)
    # A token created after a failed attempt must work at once, not after the ttl.
    _, secret = await _create(database, "fresh", "reader")
    assert (await auth.authenticate(GET_MODEL, f"Bearer {secret}")).actor == "fresh"


async def test_cached_token_is_still_checked_against_the_method(database: Database) -> None:
    _, secret = await _create(database, "reader-bot", "reader")
    auth = Authenticator(database, enabled=True, clock=FakeClock())
    await auth.authenticate(GET_MODEL, f"Bearer {secret}")
    with pytest.raises(PermissionDenied):
        await auth.authenticate(CREATE_MODEL, f"Bearer {secret}")
