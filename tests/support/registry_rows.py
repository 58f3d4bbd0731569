"""Registry rows for store tests, written in the test's transaction by the registry's own SQL functions."""

from __future__ import annotations

from modelplane.server.errors import NotFound
from modelplane.server.registry import store
from modelplane.server.registry.domain import ModelVersion, VersionFields
from modelplane.server.store.mutations import WriteRequest
from modelplane.server.store.pool import Connection
from modelplane.server.store.snapshots import from_json
from modelplane.server.store.writes import call_write_function

SEEDER = WriteRequest(actor="test", method="/test/InsertVersion")


def _refused(name: str, detail: str) -> NotFound:
    return NotFound(f"refused: {name} {detail}")


async def insert_version(
    conn: Connection, model_id: str, fields: VersionFields, etag: str = "e"
) -> ModelVersion | None:
    """Creates the model's next version as CreateModelVersion does; None when the model does not exist."""
    try:
        outcome = await call_write_function(
            conn,
            SEEDER,
            store.CREATE_VERSION,
            store.create_version_args(model_id, fields, None, etag),
            _refused,
        )
    except NotFound:
        return None
    return from_json(ModelVersion, outcome.result)
