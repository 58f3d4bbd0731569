"""The deployment manager's watch: a deployment's state, then each change to it, resumable by revision."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modelplane.server import field_rules
from modelplane.server.deployments import store, validation
from modelplane.server.deployments.domain import Deployment, DeploymentChange, deployment_name
from modelplane.server.store import changes
from modelplane.server.store.pool import Database
from modelplane.server.store.snapshots import from_json
from modelplane.server.store.watch import ChangeFeed


class DeploymentWatch:
    """WatchDeployment's stream, independent of gRPC and of SQL."""

    def __init__(self, database: Database, feed: ChangeFeed, *, progress_interval: float = 5.0) -> None:
        self._db = database
        self._feed = feed
        self._progress_interval = progress_interval

    async def watch(
        self, deployment: str, start_revision: int
    ) -> AsyncIterator[DeploymentChange | changes.ProgressMark]:
        """With start_revision 0 the deployment now, then each change after it; otherwise each change from
        start_revision on (inclusive); progress marks when idle."""
        v = field_rules.Violations()
        deployment_id = v.collect(lambda: validation.parse_deployment(deployment, "deployment"), "")
        changes.check_start_revision(start_revision, v)
        v.raise_if_any()
        name = deployment_name(deployment_id)
        if start_revision == 0:
            async with self._db.connection() as conn:
                found, latest = await store.get_deployment_at(conn, deployment_id)
            if found is not None:
                yield DeploymentChange(found.revision, "created", name, found.update_time, found)
                # Everything up to `latest` is in that state; the stream goes on with what commits after.
                start_revision = latest + 1
        async for event in changes.watch_changes(
            self._db,
            self._feed,
            start_revision=start_revision,
            resource_types=("deployment",),
            resource=name,
            progress_interval=self._progress_interval,
        ):
            if isinstance(event, changes.ProgressMark):
                yield event
            else:
                snapshot = None if event.snapshot is None else from_json(Deployment, event.snapshot)
                yield DeploymentChange(
                    event.revision, event.kind, event.resource, event.change_time, snapshot
                )
