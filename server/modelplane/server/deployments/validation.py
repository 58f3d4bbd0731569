"""Names and field rules of the deployment manager's inputs; each broken rule is reported with its path.

Each `check_*` of a request collects every violation of it into one field_rules.Violations and raises
once (INVALID_ARGUMENT naming every bad field) before the service reads or writes anything.
"""

from __future__ import annotations

import re

from modelplane.server.deployments import gate_rules
from modelplane.server.deployments.domain import (
    FULL_WEIGHT_BP,
    DeploymentFields,
    Endpoint,
    RollbackMode,
    RollbackSpec,
    RolloutSpec,
    RolloutStrategy,
)
from modelplane.server.errors import InvalidArgument, shown
from modelplane.server.field_rules import Violations, check_labels, check_mask, check_request_id, check_text
from modelplane.server.registry import names

_DEPLOYMENT = re.compile(r"deployments/(?P<deployment>[^/]+)")
_ROLLOUT = re.compile(r"deployments/(?P<deployment>[^/]+)/rollouts/(?P<rollout>[^/]+)")
_ADDRESS = re.compile(r"\S{1,512}")
MAX_ENDPOINTS = 256
MAX_STEPS = 100
MAX_STEP_SECONDS = 30 * 24 * 3600.0
MAX_ROLLBACK_INTERVAL = 24 * 3600.0
MAX_ROUTING_KEY = 1024
MAX_REASON = 1000
UPDATE_MASK = frozenset({"description", "labels", "traffic.stable.endpoints"})
# ReportEndpointHealth keeps reports for addresses no slot lists (endpoints of a rollout about to start),
# at most as many as one rollout may have, for at most a day: a caller cannot grow the table without bound.
MAX_UNLISTED_HEALTH_REPORTS = MAX_ENDPOINTS
UNLISTED_HEALTH_REPORT_SECONDS = 24 * 3600


def parse_deployment(name: str, path: str) -> str:
    """The deployment id of "deployments/{deployment}"."""
    match = _DEPLOYMENT.fullmatch(name)
    if not match:
        raise InvalidArgument.field(
            path, f"{shown(name)} is not a deployment name; expected deployments/{{deployment}}"
        )
    return names.check_id(match["deployment"], path, "deployment id")


def parse_rollout(name: str, path: str) -> tuple[str, int]:
    """(deployment id, rollout number) of "deployments/{deployment}/rollouts/{n}"."""
    match = _ROLLOUT.fullmatch(name)
    number = match["rollout"] if match else ""
    if not match or not names.NUMBER.fullmatch(number) or int(number) < 1:
        raise InvalidArgument.field(
            path, f"{shown(name)} is not a rollout name; expected deployments/{{deployment}}/rollouts/{{n}}"
        )
    return names.check_id(match["deployment"], path, "deployment id"), int(number)


def check_address(v: Violations, path: str, address: str) -> None:
    if not _ADDRESS.fullmatch(address):
        v.add(path, "must be 1 to 512 characters without whitespace, e.g. '10.0.0.7:8000'")


def check_endpoints(v: Violations, path: str, endpoints: tuple[Endpoint, ...]) -> None:
    if not endpoints:
        v.add(path, "is required: at least one endpoint")
    if len(endpoints) > MAX_ENDPOINTS:
        v.add(path, f"has {len(endpoints)} endpoints; at most {MAX_ENDPOINTS} are allowed")
    seen: set[str] = set()
    for i, endpoint in enumerate(endpoints):
        check_address(v, f"{path}[{i}].address", endpoint.address)
        if endpoint.address in seen:
            v.add(f"{path}[{i}].address", f"{shown(endpoint.address)} is listed twice")
        seen.add(endpoint.address)
        check_labels(v, f"{path}[{i}].labels", endpoint.labels)


def check_version_of(v: Violations, path: str, version: str, model_id: str) -> int | None:
    """The version number when `version` names a version of model_id; a violation otherwise."""
    parsed = v.collect(lambda: names.parse_version(version, path), None)
    if parsed is None:
        return None
    owner, number = parsed
    if owner != model_id:
        v.add(path, f"must be a version of models/{model_id}, not of models/{owner}")
        return None
    return number


def check_deployment(deployment_id: str, fields: DeploymentFields, request_id: str) -> tuple[str, int]:
    """Checks a new deployment; returns its model id and its stable version's number."""
    v = Violations()
    if not names.ID_PATTERN.fullmatch(deployment_id):
        v.add(
            "deployment_id",
            f"{shown(deployment_id)} is not valid: use 1 to 63 lower-case letters, digits or '-'",
        )
    if not names.ID_PATTERN.fullmatch(fields.environment):
        v.add(
            "deployment.environment",
            "is required: the environment's name (also the alias moved on success), e.g. 'prod'",
        )
    model_id = v.collect(lambda: names.parse_model(fields.model, "deployment.model"), "")
    number = None
    stable_path = "deployment.traffic.stable.model_version"
    if model_id:
        number = check_version_of(v, stable_path, fields.stable_version, model_id)
    else:
        v.collect(lambda: names.parse_version(fields.stable_version, stable_path), None)
    check_endpoints(v, "deployment.traffic.stable.endpoints", fields.stable_endpoints)
    if fields.stable_weight_bp not in (0, FULL_WEIGHT_BP):
        v.add(
            "deployment.traffic.stable.weight_bp",
            "must be 0 or 10000: a new deployment's stable slot takes all the traffic;"
            " start a rollout to split it",
        )
    if fields.canary_given:
        v.add("deployment.traffic.canary", "must be unset: a canary comes from StartRollout")
    check_text(v, "deployment.description", fields.description, 4000)
    check_labels(v, "deployment.labels", fields.labels)
    check_request_id(request_id, v)
    v.raise_if_any()
    assert number is not None
    return model_id, number


def check_rollout(v: Violations, spec: RolloutSpec) -> None:
    """Every rule of a StartRollout / PlanRollout spec but one: that the target is a version of the
    deployment's model (`rollout_target`), which needs the deployment."""
    v.extend(spec.refused)
    v.collect(lambda: names.parse_version(spec.target_version, "rollout.target_version"), None)
    check_endpoints(v, "rollout.endpoints", spec.endpoints)
    if spec.strategy is None:
        v.add("rollout.strategy", "is required: CANARY, BLUE_GREEN or IMMEDIATE")
    elif spec.strategy is RolloutStrategy.CANARY:
        if not spec.steps:
            v.add("rollout.steps", "is required for CANARY: at least one step")
        if len(spec.steps) > MAX_STEPS:
            v.add("rollout.steps", f"has {len(spec.steps)} steps; at most {MAX_STEPS} are allowed")
        previous = 0
        for i, step in enumerate(spec.steps):
            path = f"rollout.steps[{i}]"
            if not 1 <= step.weight_bp <= FULL_WEIGHT_BP:
                v.add(f"{path}.weight_bp", f"must be 1 to {FULL_WEIGHT_BP} basis points")
            elif step.weight_bp <= previous:
                v.add(f"{path}.weight_bp", f"must be above the previous step's weight ({previous})")
            else:
                # Only a weight in range raises the bar: one bad step does not make the next one wrong.
                previous = step.weight_bp
            if step.duration is not None and not 0 < step.duration <= MAX_STEP_SECONDS:
                v.add(f"{path}.duration", "must be more than 0 and at most 30 days")
    elif spec.steps:
        v.add("rollout.steps", f"must be empty for {spec.strategy.name}: only CANARY has steps")
    check_text(v, "rollout.reason", spec.reason, MAX_REASON)
    gate_rules.check_analysis(v, spec)


def check_rollout_request(parent: str, spec: RolloutSpec, request_id: str) -> tuple[Violations, str]:
    """The violations of a StartRollout / PlanRollout request found without the deployment, and the
    deployment's id ("" when the parent is malformed); the caller adds `rollout_target`'s, then raises."""
    v = Violations()
    deployment_id = v.collect(lambda: parse_deployment(parent, "parent"), "")
    check_rollout(v, spec)
    check_request_id(request_id, v)
    return v, deployment_id


def rollout_target(v: Violations, spec: RolloutSpec, model_id: str) -> int | None:
    """The target version's number when it is a version of model_id; a violation otherwise (none when the
    target is malformed: check_rollout named it)."""
    parsed = v.collect(lambda: names.parse_version(spec.target_version, "rollout.target_version"), None)
    if parsed is None:
        return None
    owner, number = parsed
    if owner != model_id:
        v.add("rollout.target_version", f"must be a version of models/{model_id}, not of models/{owner}")
        return None
    return number


def check_control(
    name: str, reason: str, request_id: str, rollback: RollbackSpec | None = None
) -> tuple[str, int]:
    """A request acting on a rollout (promote, pause, resume, roll back, abort): the rollout's
    (deployment id, number)."""
    v = Violations()
    deployment_id, number = v.collect(lambda: parse_rollout(name, "name"), ("", 0))
    if rollback is not None:
        _check_rollback(v, rollback)
    check_text(v, "reason", reason, MAX_REASON)
    check_request_id(request_id, v)
    v.raise_if_any()
    return deployment_id, number


def _interval_ok(interval: float | None) -> bool:
    return interval is not None and 0 < interval <= MAX_ROLLBACK_INTERVAL


def _check_rollback(v: Violations, spec: RollbackSpec) -> None:
    v.extend(spec.refused)
    if spec.mode is None:
        v.add("mode", "is required: INSTANT or STEPPED")
    elif spec.mode is RollbackMode.INSTANT and spec.interval is not None:
        v.add("step_interval", "must be unset for an INSTANT rollback")
    elif spec.mode is RollbackMode.STEPPED and not spec.refused and not _interval_ok(spec.interval):
        v.add("step_interval", "is required for STEPPED: more than 0, at most 1 day")


def parse_rollout_target(version: str) -> tuple[str, int]:
    return names.parse_version(version, "rollout.target_version")


def parse_model_filter(model: str) -> str:
    """The model id of ListDeployments' `model` field; empty for all models."""
    return names.parse_model(model, "model") if model else ""


def check_update(
    name: str, fields: DeploymentFields, paths: frozenset[str], request_id: str
) -> tuple[str, frozenset[str]]:
    """(deployment id, the fields to update)."""
    v = Violations()
    deployment_id = v.collect(lambda: parse_deployment(name, "deployment.name"), "")
    paths = v.collect(lambda: check_mask(paths, UPDATE_MASK), paths & UPDATE_MASK)
    if "description" in paths:
        check_text(v, "deployment.description", fields.description, 4000)
    if "labels" in paths:
        check_labels(v, "deployment.labels", fields.labels)
    if "traffic.stable.endpoints" in paths:
        check_endpoints(v, "deployment.traffic.stable.endpoints", fields.stable_endpoints)
    check_request_id(request_id, v)
    v.raise_if_any()
    return deployment_id, paths


def check_report_health(deployment: str, address: str, request_id: str) -> str:
    """The deployment's id."""
    v = Violations()
    deployment_id = v.collect(lambda: parse_deployment(deployment, "deployment"), "")
    check_address(v, "address", address)
    check_request_id(request_id, v)
    v.raise_if_any()
    return deployment_id


def check_resolve_route(deployment: str, routing_key: str) -> str:
    """The deployment's id."""
    v = Violations()
    deployment_id = v.collect(lambda: parse_deployment(deployment, "deployment"), "")
    if len(routing_key) > MAX_ROUTING_KEY:
        v.add("routing_key", f"must be at most {MAX_ROUTING_KEY} characters")
    v.raise_if_any()
    return deployment_id
