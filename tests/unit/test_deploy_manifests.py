"""deploy/: the Kubernetes manifests are valid against the API's schemas and run the server as documented.

The schemas come bundled with kubernetes-validate (no cluster, no network). Strict validation also refuses a
field the API does not know, so a misspelt field fails here instead of being dropped by the API server.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from packaging.requirements import Requirement

from modelplane.server.cli import SERVE_SETTINGS, build_parser
from modelplane.server.health import LIVENESS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
# The oldest Kubernetes the manifests are written for (the preStop `sleep` action is on by default from
# 1.30), and the newest whose schemas the validator bundles.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

Manifest = dict[str, Any]


def load_manifests(folder: Path) -> list[Manifest]:
    """Every object the kustomization in `folder` applies; fails on a file it forgets or names wrongly."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, (
        "kustomization.yaml must list every manifest in its folder, and only those"
    )
    return [
        doc for name in listed for doc in yaml.safe_load_all((folder / name).read_text()) if doc is not None
    ]


def validate_all(manifests: list[Manifest]) -> None:
    """Raises kubernetes_validate.ValidationError for the first object a Kubernetes version would refuse."""
    for version in KUBERNETES_VERSIONS:
        for manifest in manifests:
            kubernetes_validate.validate(manifest, version, strict=True)


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return load_manifests(MANIFESTS)


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def kind_and_name(manifest: Manifest) -> tuple[str, str]:
    return manifest["kind"], manifest["metadata"]["name"]


def container(deployment: Manifest, name: str, *, init: bool = False) -> Manifest:
    pod = deployment["spec"]["template"]["spec"]
    found: list[Manifest] = [c for c in pod["initContainers" if init else "containers"] if c["name"] == name]
    assert len(found) == 1
    return found[0]


def test_every_manifest_is_valid_for_each_kubernetes_version(manifests: list[Manifest]) -> None:
    assert {m["kind"] for m in manifests} == {
        "ServiceAccount",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    validate_all(manifests)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # A named port where the kubelet's gRPC probe takes only a number.
        (("spec", "template", "spec", "containers", 0, "readinessProbe", "grpc", "port"), "grpc"),
        # A misspelt field: strict validation refuses what the API server would silently drop.
        (("spec", "template", "spec", "containers", 0, "securityContext", "readOnlyRootFilesystems"), True),
        (("spec", "replicas"), "three"),
    ],
)
def test_a_broken_copy_of_the_manifests_fails_validation(
    tmp_path: Path, path: tuple[str | int, ...], value: object
) -> None:
    folder = tmp_path / "kubernetes"
    shutil.copytree(MANIFESTS, folder)
    deployment_file = folder / "deployment.yaml"
    deployment = yaml.safe_load(deployment_file.read_text())
    broken = copy.deepcopy(deployment)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    deployment_file.write_text(yaml.safe_dump(broken))
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_all(load_manifests(folder))


def test_a_file_left_out_of_the_kustomization_fails(tmp_path: Path) -> None:
    folder = tmp_path / "kubernetes"
    shutil.copytree(MANIFESTS, folder)
    (folder / "forgotten.yaml").write_text((MANIFESTS / "service.yaml").read_text())
    with pytest.raises(AssertionError, match="must list every manifest"):
        load_manifests(folder)


def test_the_server_serves_every_interface_with_auth_and_flags_serve_accepts(
    manifests: list[Manifest],
) -> None:
    deployment = one(manifests, "Deployment", "modelplane")
    server = container(deployment, "modelplane")
    args = build_parser().parse_args(server["args"])
    assert args.command == "serve"
    assert args.address == "0.0.0.0:50051"
    assert not args.no_auth
    assert not args.insecure
    # Pinned: the default counts the node's cores, not the pod's.
    assert args.workers == 1
    # Beyond loopback the metrics endpoint needs the explicit flag, or `serve` refuses to start.
    assert args.metrics_address == "0.0.0.0:9090"
    assert args.metrics_insecure
    # The database URL comes from the Secret, through the environment variable `serve` reads.
    assert args.database_url is None
    (url,) = [e for e in server["env"] if e["name"] == "MODELPLANE_DATABASE_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "modelplane-database", "key": "url"}
    one(manifests, "Secret", "modelplane-database")
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}


def test_migrations_run_in_an_init_container_before_the_server(manifests: list[Manifest]) -> None:
    deployment = one(manifests, "Deployment", "modelplane")
    migrate = container(deployment, "migrate", init=True)
    assert build_parser().parse_args(migrate["args"]).command == "migrate"
    assert migrate["image"] == container(deployment, "modelplane")["image"]
    assert migrate["env"] == [
        e for e in container(deployment, "modelplane")["env"] if e["name"] == "MODELPLANE_DATABASE_URL"
    ]
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_probes_ask_grpc_health_for_readiness_and_liveness(
    manifests: list[Manifest],
) -> None:
    server = container(one(manifests, "Deployment", "modelplane"), "modelplane")
    assert server["readinessProbe"]["grpc"] == {"port": 50051}
    assert server["livenessProbe"]["grpc"] == {"port": 50051, "service": LIVENESS}


def test_pods_run_as_non_root_on_a_read_only_root_filesystem(manifests: list[Manifest]) -> None:
    pod = one(manifests, "Deployment", "modelplane")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for each in pod["containers"] + pod["initContainers"]:
        context = each["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(each["resources"]["requests"])
    hosts = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert hosts == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_services_and_budget_select_the_servers_pods(manifests: list[Manifest]) -> None:
    labels = one(manifests, "Deployment", "modelplane")["spec"]["template"]["metadata"]["labels"]
    headless = one(manifests, "Service", "modelplane-headless")
    cluster_ip = one(manifests, "Service", "modelplane")
    budget = one(manifests, "PodDisruptionBudget", "modelplane")
    assert headless["spec"]["clusterIP"] == "None"
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    for service in (headless, cluster_ip):
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_image_build_installs_every_requirement_of_the_locked_hatchling() -> None:
    """deploy/Dockerfile cuts the build backend's entries out of dev.lock by name: a hatchling release with
    a new dependency must be added there, or the image's wheel stage fails."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (names,) = re.findall(r"\^\(([a-z|-]+)\)==", dockerfile)
    needed = {"hatchling"} | {
        Requirement(line).name
        for line in importlib.metadata.requires("hatchling") or []
        if Requirement(line).marker is None or Requirement(line).marker.evaluate({"python_version": "3.11"})  # type: ignore[union-attr]
    }
    assert set(names.split("|")) == needed
    locked = set(re.findall(r"^([a-z0-9-]+)==", (ROOT / "requirements" / "dev.lock").read_text(), re.M))
    assert needed <= locked
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which does not exist"


def apply_json_patch(document: Manifest, operations: list[dict[str, Any]]) -> Manifest:
    """RFC 6902's `add` and `replace`, all the tls component uses; a path that is not there fails."""
    patched = copy.deepcopy(document)
    for operation in operations:
        *parents, last = operation["path"].split("/")[1:]
        target: Any = patched
        for step in parents:
            target = target[int(step)] if isinstance(target, list) else target[step]
        if operation["op"] == "add" and isinstance(target, list):
            assert last == "-", operation["path"]
            target.append(operation["value"])
        elif operation["op"] == "add" or (operation["op"] == "replace" and last in target):
            target[last] = operation["value"]
        else:
            raise AssertionError(f"cannot {operation['op']} {operation['path']}")
    return patched


def tls_patch() -> list[dict[str, Any]]:
    """The operations the tls component applies to the Deployment, and to nothing else."""
    component = yaml.safe_load((MANIFESTS / "tls" / "kustomization.yaml").read_text())
    (patch,) = component["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": "modelplane"}
    operations: list[dict[str, Any]] = yaml.safe_load((MANIFESTS / "tls" / patch["path"]).read_text())
    return operations


def test_the_tls_component_gives_a_valid_deployment_serving_the_secret(manifests: list[Manifest]) -> None:
    deployment = apply_json_patch(one(manifests, "Deployment", "modelplane"), tls_patch())
    validate_all([deployment])
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    one(manifests, "Secret", volume["secret"]["secretName"])
    server = container(deployment, "modelplane")
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == "tls"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    # serve reads these variables as --tls-cert and --tls-key.
    assert {"MODELPLANE_TLS_CERT", "MODELPLANE_TLS_KEY"} <= {setting.env for setting in SERVE_SETTINGS}
    assert env["MODELPLANE_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["MODELPLANE_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
    for probe in ("readinessProbe", "livenessProbe"):
        assert "grpc" not in server[probe]
        assert f"{mount['mountPath']}/" in server[probe]["exec"]["command"][2]


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="needs kubectl, whose kustomize renders the folder"
)
def test_kubectl_kustomize_renders_what_these_tests_validate(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    """The tests above read the files and apply the tls patch themselves; kustomize must agree with them."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copytree(MANIFESTS, overlay / "base")
    (overlay / "kustomization.yaml").write_text("resources: [base]\ncomponents: [base/tls]\n")
    for folder, components in ((overlay / "base", False), (overlay, True)):
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=False, timeout=60
        )
        assert rendered.returncode == 0, rendered.stderr
        objects = list(yaml.safe_load_all(rendered.stdout))
        for each in objects:
            # The one thing kustomization.yaml adds: its common label.
            assert each["metadata"]["labels"].pop("app.kubernetes.io/part-of") == "modelplane"
        expected = copy.deepcopy(manifests)
        if components:
            deployment = one(expected, "Deployment", "modelplane")
            expected[expected.index(deployment)] = apply_json_patch(deployment, tls_patch())
        assert sorted(objects, key=kind_and_name) == sorted(expected, key=kind_and_name)
