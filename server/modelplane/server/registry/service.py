"""The model registry's rules: validation, compare-and-set, idempotent writes, resolution, changes.

Every write runs in one `Mutation`: the change rows, the audit row, the alias history and the stored
result of its request id commit together with the write, or none of them do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from modelplane.server import field_rules, pagination
from modelplane.server.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ModelplaneError,
    NotFound,
    reason_name,
)
from modelplane.server.registry import names, search, store, validation
from modelplane.server.registry.domain import (
    Alias,
    AliasMove,
    Change,
    Constraints,
    Model,
    ModelFields,
    ModelVersion,
    Page,
    Progress,
    Resolution,
    VersionFields,
    VersionState,
    VersionUpdate,
    alias_name,
    model_name,
    version_name,
)
from modelplane.server.registry.resolution import choose
from modelplane.server.store import changes
from modelplane.server.store.mutations import Mutation, WriteRequest
from modelplane.server.store.pool import Database
from modelplane.server.store.read_cache import ReadCache
from modelplane.server.store.snapshots import from_json, to_json
from modelplane.server.store.watch import ChangeFeed
from modelplane.server.store.writes import etag_mismatch, new_etag, write_in_one_statement, write_once
from modelplane.v1.error_reason_pb2 import ErrorReason

T = TypeVar("T")
log = logging.getLogger(__name__)

# Resource types of the registry in the change table, and the domain type of their snapshots.
SNAPSHOT_TYPES: dict[str, type[Model | ModelVersion | Alias]] = {
    "model": Model,
    "model_version": ModelVersion,
    "alias": Alias,
}
# Constraint resolution considers at most this many READY versions (newest first).
MAX_CANDIDATES = 5000


def _model_not_found(model_id: str) -> NotFound:
    return NotFound.resource("model", model_name(model_id), ErrorReason.ERROR_REASON_MODEL_NOT_FOUND)


def _version_not_found(model_id: str, version_id: int) -> NotFound:
    name = version_name(model_id, version_id)
    return NotFound.resource("version", name, ErrorReason.ERROR_REASON_MODEL_VERSION_NOT_FOUND)


def _refused(
    name: str,
    *,
    model_id: str,
    version: int = 0,
    alias: str = "",
    parent: str = "",
    expected: str | None = None,
    current: str = "",
) -> ModelplaneError:
    """The error of a refusal by a registry write's SQL function (schema/0014)."""
    if name == "model_not_found":
        return _model_not_found(model_id)
    if name == "version_not_found":
        return _version_not_found(model_id, version)
    if name == "parent_version_not_found":
        return InvalidArgument.field(
            "model_version.lineage.parent_version",
            f"{parent} does not exist; name an existing version or leave it empty",
        )
    if name == "version_archived":
        target = version_name(model_id, version)
        return FailedPrecondition(
            f"{target} is ARCHIVED and cannot be aliased; pick a READY or DEPRECATED version",
            reason=ErrorReason.ERROR_REASON_VERSION_ARCHIVED,
            metadata={"resource": target},
        )
    if name == "alias_conflict":
        now = version_name(model_id, int(current)) if current else ""
        return Aborted(
            f"{alias_name(model_id, alias)} points to {now or 'nothing (the alias does not exist)'}, not to "
            f"{expected or 'nothing'}; read it again and retry",
            reason=ErrorReason.ERROR_REASON_ALIAS_CONFLICT,
            metadata={"resource": alias_name(model_id, alias), "current_version": now},
        )
    if name == "alias_keeps_moving":
        return Aborted("the alias keeps moving; retry", reason=ErrorReason.ERROR_REASON_ALIAS_CONFLICT)
    raise AssertionError(f"a registry write refused with {name!r}, which the server does not know")


def _alias_not_found(model_id: str, alias: str) -> NotFound:
    name = alias_name(model_id, alias)
    return NotFound.resource("alias", name, ErrorReason.ERROR_REASON_ALIAS_NOT_FOUND)


class RegistryService:
    """The registry's use cases, independent of gRPC and of SQL."""

    def __init__(self, database: Database, feed: ChangeFeed, *, progress_interval: float = 5.0) -> None:
        self._db = database
        self._feed = feed
        self._progress_interval = progress_interval
        # Versions and resolutions, keyed by what was asked; see store/read_cache.py for when they are valid.
        self._versions: ReadCache[ModelVersion] = ReadCache(feed)
        self._resolutions: ReadCache[Resolution] = ReadCache(feed)

    async def _write(
        self,
        write: WriteRequest,
        result_type: type[T] | None,
        body: Callable[[Mutation], Awaitable[T]],
    ) -> T:
        return await write_once(self._db, write, body, result_type=result_type, committed=self._written)

    def _written(self, revision: int) -> None:
        self._versions.written(revision)
        self._resolutions.written(revision)

    @staticmethod
    def _record(m: Mutation, kind: str, resource_type: str, resource: str, value: Any) -> None:
        m.change(
            resource_type=resource_type,
            resource=resource,
            kind=kind,
            snapshot=None if value is None else to_json(value),
        )

    # ---- models

    async def create_model(self, model_id: str, fields: ModelFields, write: WriteRequest) -> Model:
        validation.check_create_model(model_id, fields, write.request_id)

        async def body(m: Mutation) -> Model:
            created = await store.insert_model(m.conn, model_id, fields, new_etag())
            if created is None:
                raise AlreadyExists(
                    f"model {model_name(model_id)} already exists; choose another model_id",
                    reason=ErrorReason.ERROR_REASON_MODEL_ALREADY_EXISTS,
                    metadata={"resource": model_name(model_id)},
                )
            self._record(m, "created", "model", created.name, created)
            return created

        return await self._write(write, Model, body)

    async def get_model(self, name: str) -> Model:
        model_id = names.parse_model(name, "name")
        async with self._db.connection() as conn:
            found = await store.get_model(conn, model_id)
        if found is None:
            raise _model_not_found(model_id)
        return found

    async def list_models(
        self, *, page_size: int, page_token: str, filter_text: str, order_by: str
    ) -> Page[Model]:
        plan = search.plan_model_list(
            filter_text=filter_text, order_by=order_by, page_size=page_size, page_token=page_token
        )
        async with self._db.connection() as conn:
            rows = await store.list_models(
                conn, where=plan.where, params=plan.params, order_sql=plan.order_sql, limit=plan.limit
            )
        kept, token = plan.page(rows)
        return Page(tuple(k.value for k in kept), token)

    async def update_model(
        self, name: str, fields: ModelFields, paths: frozenset[str], etag: str, write: WriteRequest
    ) -> Model:
        model_id, paths = validation.check_update_model(name, fields, paths, write.request_id)

        async def body(m: Mutation) -> Model:
            updated = await store.update_model(
                m.conn, model_id, fields, paths, expected_etag=etag, new_etag=new_etag()
            )
            if updated is None:
                current = await store.get_model(m.conn, model_id)
                if current is None:
                    raise _model_not_found(model_id)
                raise etag_mismatch(current.name, current.etag)
            self._record(m, "updated", "model", updated.name, updated)
            return updated

        return await self._write(write, Model, body)

    async def delete_model(self, name: str, etag: str, force: bool, write: WriteRequest) -> None:
        model_id = field_rules.parse_with_request_id(
            lambda: names.parse_model(name, "name"), write.request_id
        )

        async def body(m: Mutation) -> None:
            current = await store.get_model(m.conn, model_id, for_update=True)
            if current is None:
                raise _model_not_found(model_id)
            if etag and current.etag != etag:
                raise etag_mismatch(current.name, current.etag)
            count = await store.count_versions(m.conn, model_id)
            if count and not force:
                raise FailedPrecondition(
                    f"{current.name} has {count} version(s); delete them first or set force to"
                    " delete them too",
                    reason=ErrorReason.ERROR_REASON_MODEL_HAS_VERSIONS,
                    metadata={"resource": current.name, "version_count": str(count)},
                )
            aliases = await store.list_aliases(m.conn, model_id, after="", limit=1_000_000)
            versions = await store.list_versions(
                m.conn, where="v.model_id = $1", params=[model_id], order_sql="v.version_id", limit=1_000_000
            )
            versions_deleted = [k.value for k in versions]
            await store.delete_model(m.conn, model_id, expected_etag="")
            # The alias history goes with the model (as the contract says); the change log keeps the deletes.
            for alias in aliases:
                self._record(m, "deleted", "alias", alias.name, None)
            for version in versions_deleted:
                self._record(m, "deleted", "model_version", version.name, None)
            self._record(m, "deleted", "model", current.name, None)

        await self._write(write, None, body)

    # ---- versions

    async def create_version(
        self, parent: str, fields: VersionFields, pricing_given: bool, write: WriteRequest
    ) -> ModelVersion:
        model_id = validation.check_create_version(parent, fields, pricing_given, write.request_id)
        lineage = names.parse_version(fields.parent_version, "") if fields.parent_version else None
        return await write_in_one_statement(
            self._db,
            write,
            store.CREATE_VERSION,
            store.create_version_args(model_id, fields, lineage, new_etag()),
            decode=lambda data: from_json(ModelVersion, data),
            refused=lambda name, _detail: _refused(name, model_id=model_id, parent=fields.parent_version),
            committed=self._written,
        )

    async def get_version(self, name: str) -> ModelVersion:
        model_id, number = names.parse_version(name, "name")

        async def load() -> tuple[ModelVersion, int] | None:
            async with self._db.connection() as conn:
                return await store.get_version_at(conn, model_id, number)

        version = await self._versions.read((model_id, number), load)
        if version is None:
            raise _version_not_found(model_id, number)
        return version

    async def list_versions(
        self, *, parent: str, page_size: int, page_token: str, filter_text: str, order_by: str
    ) -> Page[ModelVersion]:
        v = field_rules.Violations()
        model_id = None
        if parent != "models/-":
            model_id = v.collect(lambda: names.parse_model(parent, "parent"), "")
        plan = v.collect(
            lambda: search.plan_model_version_list(
                model_id=model_id,
                filter_text=filter_text,
                order_by=order_by,
                page_size=page_size,
                page_token=page_token,
            ),
            None,
        )
        v.raise_if_any()
        assert plan is not None
        async with self._db.connection() as conn:
            if model_id and await store.get_model(conn, model_id) is None:
                raise _model_not_found(model_id)
            rows = await store.list_versions(
                conn, where=plan.where, params=plan.params, order_sql=plan.order_sql, limit=plan.limit
            )
        kept, token = plan.page(rows)
        return Page(tuple(k.value for k in kept), token)

    async def update_version(
        self, name: str, update: VersionUpdate, paths: frozenset[str], etag: str, write: WriteRequest
    ) -> ModelVersion:
        model_id, number, paths = validation.check_update_version(name, update, paths, write.request_id)

        async def body(m: Mutation) -> ModelVersion:
            if "state" in paths and update.state is VersionState.ARCHIVED:
                aliases = await store.aliases_of_version(m.conn, model_id, number)
                if aliases:
                    raise FailedPrecondition(
                        f"{version_name(model_id, number)} cannot be archived: aliases "
                        f"{', '.join(a.alias for a in aliases)} point to it; move them first",
                        reason=ErrorReason.ERROR_REASON_VERSION_HAS_ALIASES,
                        metadata={"resource": version_name(model_id, number)},
                    )
            updated = await store.update_version(
                m.conn, model_id, number, update, paths, expected_etag=etag, new_etag=new_etag()
            )
            if updated is None:
                current = await store.get_version(m.conn, model_id, number)
                if current is None:
                    raise _version_not_found(model_id, number)
                raise etag_mismatch(current.name, current.etag)
            self._record(m, "updated", "model_version", updated.name, updated)
            return updated

        return await self._write(write, ModelVersion, body)

    async def delete_version(self, name: str, etag: str, write: WriteRequest) -> None:
        model_id, number = field_rules.parse_with_request_id(
            lambda: names.parse_version(name, "name"), write.request_id
        )

        async def body(m: Mutation) -> None:
            current = await store.get_version(m.conn, model_id, number)
            if current is None:
                raise _version_not_found(model_id, number)
            if current.aliases:
                raise FailedPrecondition(
                    f"{current.name} cannot be deleted: aliases {', '.join(current.aliases)} point to it",
                    reason=ErrorReason.ERROR_REASON_VERSION_HAS_ALIASES,
                    metadata={"resource": current.name},
                )
            if not await store.delete_version(m.conn, model_id, number, expected_etag=etag):
                raise etag_mismatch(current.name, current.etag)
            self._record(m, "deleted", "model_version", current.name, None)

        await self._write(write, None, body)

    # ---- aliases

    async def set_alias(
        self, name: str, version: str, expected_version: str | None, reason: str, write: WriteRequest
    ) -> Alias:
        model_id, alias, number, expected = validation.check_set_alias(
            name, version, expected_version, reason, write.request_id
        )

        expect = "any" if expected_version is None else "absent" if expected is None else "at"
        return await write_in_one_statement(
            self._db,
            write,
            store.SET_ALIAS,
            [model_id, alias, number, expect, expected, reason],
            decode=lambda data: from_json(Alias, data),
            refused=lambda name, detail: _refused(
                name,
                model_id=model_id,
                version=number,
                alias=alias,
                expected=expected_version,
                current=detail,
            ),
            committed=self._written,
        )

    async def move_alias_in(
        self, m: Mutation, model_id: str, alias: str, version_id: int, reason: str
    ) -> Alias:
        """Points an alias at a version inside the caller's write transaction (a deployment's rollout
        succeeding), with the rules, change rows and history of SetAlias. The caller calls `written` with
        the revision once it has committed."""
        return await self._point_alias(m, model_id, alias, version_id, reason)

    def written(self, revision: int) -> None:
        """A write through another capability's transaction committed `revision`: drop older cached reads."""
        self._versions.written(revision)
        self._resolutions.written(revision)

    async def _point_alias(self, m: Mutation, model_id: str, alias: str, number: int, reason: str) -> Alias:
        """Points the alias at the version (whatever it points to now) in the caller's transaction, recording
        the changes SetAlias records."""
        point = await store.point_alias(
            m.conn,
            model_id,
            alias,
            number,
            actor=m.write.actor,
            reason=reason,
            revision=m.revision_for("alias_history"),
        )
        if isinstance(point, store.Refused):
            raise _refused(point.name, model_id=model_id, version=number, alias=alias, current=point.detail)
        for change in point.changes:
            m.change(**change)
        return point.moved

    async def get_alias(self, name: str) -> Alias:
        model_id, alias = names.parse_alias(name, "name")
        async with self._db.connection() as conn:
            found = await store.get_alias(conn, model_id, alias)
        if found is None:
            raise _alias_not_found(model_id, alias)
        return found

    async def list_aliases(self, parent: str, page_size: int, page_token: str) -> Page[Alias]:
        v = field_rules.Violations()
        model_id = v.collect(lambda: names.parse_model(parent, "parent"), "")
        fingerprint = pagination.query_fingerprint("ListAliases", parent)
        limit, after = pagination.check_page(v, page_size, page_token, fingerprint, (str,))
        v.raise_if_any()
        async with self._db.connection() as conn:
            if await store.get_model(conn, model_id) is None:
                raise _model_not_found(model_id)
            rows = await store.list_aliases(
                conn, model_id, after=str(after[0]) if after else "", limit=limit + 1
            )
        token = (
            pagination.encode_page_token(fingerprint, (rows[limit - 1].alias,)) if len(rows) > limit else ""
        )
        return Page(tuple(rows[:limit]), token)

    async def delete_alias(self, name: str, expected_version: str, reason: str, write: WriteRequest) -> None:
        model_id, alias, expected = validation.check_delete_alias(
            name, expected_version, reason, write.request_id
        )

        async def body(m: Mutation) -> None:
            current = await store.get_alias(m.conn, model_id, alias)
            if current is None:
                raise _alias_not_found(model_id, alias)
            if not await store.delete_alias(m.conn, model_id, alias, expected_version=expected):
                now = await store.get_alias(m.conn, model_id, alias)
                raise Aborted(
                    f"{current.name} points to {now.version if now else 'nothing'}, "
                    f"not to {expected_version}",
                    reason=ErrorReason.ERROR_REASON_ALIAS_CONFLICT,
                    metadata={"resource": current.name, "current_version": now.version if now else ""},
                )
            self._record(m, "deleted", "alias", current.name, None)
            snapshot = await store.get_version(m.conn, model_id, current.version_id)
            if snapshot is not None:
                self._record(m, "updated", "model_version", snapshot.name, snapshot)
            await store.record_alias_move(
                m.conn,
                model_id=model_id,
                alias=alias,
                from_version=current.version_id,
                to_version=None,
                actor=m.write.actor,
                reason=reason,
                revision=m.revision_for("alias_history"),
            )

        await self._write(write, None, body)

    async def list_alias_history(
        self, parent: str, alias: str, page_size: int, page_token: str
    ) -> Page[AliasMove]:
        v = field_rules.Violations()
        model_id = v.collect(lambda: names.parse_model(parent, "parent"), "")
        if alias:
            v.collect(lambda: names.check_id(alias, "alias", "alias"), "")
        fingerprint = pagination.query_fingerprint("ListAliasHistory", parent, alias)
        limit, after = pagination.check_page(v, page_size, page_token, fingerprint, (int,))
        v.raise_if_any()
        async with self._db.connection() as conn:
            if await store.get_model(conn, model_id) is None:
                raise _model_not_found(model_id)
            rows = await store.list_alias_history(
                conn, model_id, alias=alias, before_id=int(str(after[0])) if after else None, limit=limit + 1
            )
        token = pagination.encode_page_token(fingerprint, (rows[limit - 1].id,)) if len(rows) > limit else ""
        return Page(tuple(rows[:limit]), token)

    # ---- resolution

    async def resolve_alias(self, name: str) -> Resolution:
        model_id, alias = names.parse_alias(name, "alias")

        async def load() -> tuple[Resolution, int] | None:
            async with self._db.connection() as conn:
                found = await store.version_of_alias(conn, model_id, alias)
            return None if found is None else (Resolution(*found), found[1])

        resolution = await self._resolutions.read(("alias", model_id, alias), load)
        if resolution is None:
            raise _alias_not_found(model_id, alias)
        if resolution.version.state is VersionState.ARCHIVED:
            raise FailedPrecondition(
                f"{name} points to {resolution.version.name}, which is ARCHIVED",
                reason=ErrorReason.ERROR_REASON_VERSION_ARCHIVED,
                metadata={"resource": resolution.version.name},
            )
        return resolution

    async def resolve_nothing(self) -> Resolution:
        raise InvalidArgument.field("alias", "set either alias or constraints to say how to choose a version")

    async def resolve_constraints(self, constraints: Constraints) -> Resolution:
        c = constraints
        key = (
            "constraints",
            c.model_id,
            c.provider,
            c.required_capabilities,
            c.min_context_window,
            c.max_input_price,
            c.max_output_price,
            tuple(sorted(c.labels.items())),
        )

        async def load() -> tuple[Resolution, int] | None:
            async with self._db.connection() as conn:
                found = await store.best_match(conn, constraints)
            return None if found is None else (Resolution(*found), found[1])

        # The common case, a match, is one indexed statement (cached). Only when nothing matches are the
        # candidates loaded, to say for each why not; resolution.choose is the reference the SQL is
        # tested against, and it has the last word should they ever disagree.
        resolution = await self._resolutions.read(key, load)
        if resolution is not None:
            return resolution
        async with (
            self._db.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            candidates = await store.ready_versions(conn, model_id=constraints.model_id, limit=MAX_CANDIDATES)
            revision, _ = await store.current_revision(conn)
        best, rejections = choose(candidates, constraints)
        if best is not None:
            log.error("constraint resolution in SQL found nothing, but %s matches %s", best.name, constraints)
            return Resolution(best, revision)
        raise NoMatchingModel(rejections, len(candidates))

    # ---- watch

    async def watch(self, start_revision: int) -> AsyncIterator[Change | Progress]:
        """Every change from start_revision on (inclusive; 0: from now) in revision order, with a progress
        mark when idle."""
        async for event in changes.watch_changes(
            self._db,
            self._feed,
            start_revision=start_revision,
            resource_types=tuple(SNAPSHOT_TYPES),
            progress_interval=self._progress_interval,
        ):
            if isinstance(event, changes.ProgressMark):
                yield Progress(event.revision)
                continue
            snapshot_type = SNAPSHOT_TYPES[event.resource_type]
            snapshot = None if event.snapshot is None else from_json(snapshot_type, event.snapshot)
            yield Change(event.revision, event.kind, event.resource, event.change_time, snapshot)


class NoMatchingModel(NotFound):
    """No READY version satisfies the constraints; `rejections` say why, candidate by candidate."""

    reason = reason_name(ErrorReason.ERROR_REASON_NO_MATCHING_MODEL)

    def __init__(self, rejections: list[Any], candidate_count: int) -> None:
        super().__init__(
            f"no READY version satisfies the constraints ({candidate_count} considered); see the rejections",
            metadata={"candidate_count": str(candidate_count)},
        )
        self.rejections = tuple(rejections)
        self.candidate_count = candidate_count
