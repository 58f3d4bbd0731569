"""Pages of one deployment's records, newest first: its rollouts and its history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from modelplane.server import field_rules, pagination
from modelplane.server.deployments import store, validation
from modelplane.server.deployments.domain import Page
from modelplane.server.deployments.writer import deployment_not_found
from modelplane.server.store.pool import Connection, Database

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Fetch(Protocol[R_co]):
    """A store read of up to `limit` records of a deployment, newest first, keyed below `before` if given."""

    def __call__(
        self, conn: Connection, deployment_id: str, *, before: int | None, limit: int
    ) -> Awaitable[Sequence[R_co]]: ...


async def records_page(
    db: Database,
    method: str,
    parent: str,
    page_size: int,
    page_token: str,
    fetch: Fetch[R],
    key: Callable[[R], int],
) -> Page[R]:
    """A page of the records of the deployment `parent` names; DEPLOYMENT_NOT_FOUND if there is none."""
    v = field_rules.Violations()
    deployment_id = v.collect(lambda: validation.parse_deployment(parent, "parent"), "")
    request = pagination.keyset_page(v, page_size, page_token, int, method, parent)
    v.raise_if_any()
    async with db.connection() as conn:
        if await store.get_deployment(conn, deployment_id) is None:
            raise deployment_not_found(deployment_id)
        rows = await fetch(conn, deployment_id, before=request.after, limit=request.fetch)
    return Page(*request.page(rows, key))
