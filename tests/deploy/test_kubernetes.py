"""deploy/kubernetes: every manifest validates against the Kubernetes API schemas (kubernetes-validate,
strict), the Prometheus Operator objects against their schemas, and the pieces fit together."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.helpers import DEPLOY

K8S = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).parent / "schemas"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule.schema.json",
}
LAYOUTS = ("single", "ha")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def layout(name: str) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k deploy/kubernetes/NAME` creates (resources followed by hand)."""
    objects: list[dict[str, Any]] = []

    def walk(directory: Path) -> None:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            target = (directory / resource).resolve()
            if target.is_dir():
                walk(target)
            else:
                objects.extend(documents(target))

    walk(K8S / name)
    return objects


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in manifest_files():
        for doc in documents(path):
            if doc["kind"] in {"Deployment", "StatefulSet"}:
                out.append((f"{path.relative_to(K8S)}:{doc['kind']}", doc["spec"]["template"]))
    return out


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates(path: Path) -> None:
    for doc in documents(path):
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            jsonschema.validate(doc, json.loads(CRD_SCHEMAS[key].read_text()))
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = one(documents(K8S / "single" / "deployment.yaml"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # capital S: not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    monitor = one(documents(K8S / "base" / "servicemonitor.yaml"), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            monitor, json.loads(CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")].read_text())
        )


def test_every_manifest_belongs_to_a_layout_except_the_secret_example() -> None:
    used = set()
    for directory in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(directory.read_text())["resources"]:
            target = (directory.parent / resource).resolve()
            assert target.exists(), f"{directory}: {resource} does not exist"
            used.add(target)
    orphans = [p.relative_to(K8S) for p in manifest_files() if p.resolve() not in used]
    assert orphans == [Path("secret.example.yaml")]


# ---------------------------------------------------------------- what the issue asks of them


def test_single_is_one_deployment_with_its_state_on_a_volume() -> None:
    objects = layout("single")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two pagers at once
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
    assert one(objects, "PersistentVolumeClaim")["metadata"]["name"] == claim
    mounts = {
        m["mountPath"]: m["name"]
        for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["/var/lib/monitor"] == "state"
    assert "/var/lib/monitor/" in one(objects, "ConfigMap")["data"]["monitor.toml"]


def test_ha_is_a_statefulset_of_pairs_with_a_disruption_budget() -> None:
    objects = layout("ha")
    statefulset = one(objects, "StatefulSet")
    assert statefulset["spec"]["replicas"] % 2 == 0
    headless = [o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [statefulset["spec"]["serviceName"]]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _selects(pdb["spec"]["selector"]["matchLabels"], statefulset["spec"]["template"])
    config = one(objects, "ConfigMap")["data"]["monitor.toml"]
    assert 'mode = "ha"' in config and "${MONITOR_STATE_DSN}" in config


@pytest.mark.parametrize("name,template", pod_specs(), ids=[n for n, _ in pod_specs()])
def test_pods_run_non_root_on_a_read_only_root_filesystem(name: str, template: dict[str, Any]) -> None:
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's `monitor` user
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] >= 10  # the daemon's SIGTERM budget
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/etc/monitor"} <= mounts  # the only writable scratch, and the config
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert "cpu" not in container["resources"].get("limits", {}), "CPU throttling delays checks"


@pytest.mark.parametrize("name", LAYOUTS)
def test_service_and_servicemonitor_reach_the_pods(name: str) -> None:
    objects = layout(name)
    workload = next(o for o in objects if o["kind"] in {"Deployment", "StatefulSet"})
    pod = workload["spec"]["template"]
    assert _selects(workload["spec"]["selector"]["matchLabels"], pod)
    [service] = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "monitor"]
    assert _selects(service["spec"]["selector"], pod)
    port_names = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    servicemonitor = one(objects, "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in servicemonitor["spec"]["selector"]["matchLabels"].items())
    assert {e["port"] for e in servicemonitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    # The job label is the Service's name: what the rules and the dashboard select.
    assert service["metadata"]["name"] == "monitor" and "jobLabel" not in servicemonitor["spec"]


def test_prometheusrule_carries_the_rules_file() -> None:
    rule = one(documents(K8S / "base" / "prometheusrule.yaml"), "PrometheusRule")
    rules_file = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "monitor.rules.yml").read_text())
    assert rule["spec"] == rules_file, "regenerate base/prometheusrule.yaml from the rules file"


# ---------------------------------------------------------------- the config and its secrets


@pytest.mark.parametrize("name", LAYOUTS)
def test_configmap_is_a_valid_monitor_toml_fed_by_the_secret(name: str, tmp_path: Path) -> None:
    objects = layout(name)
    text = one(objects, "ConfigMap")["data"]["monitor.toml"]
    secret = one(documents(K8S / "secret.example.yaml"), "Secret")["stringData"]
    workload = next(o for o in objects if o["kind"] in {"Deployment", "StatefulSet"})
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [secret_name()]
    required = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    assert required <= set(secret) | set(env), f"not in the Secret: {required - set(secret) - set(env)}"
    config = tmp_path / "monitor.toml"
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **secret, **env, **({"MONITOR_SHARD": "1/2"} if name == "ha" else {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def secret_name() -> str:
    return one(documents(K8S / "secret.example.yaml"), "Secret")["metadata"]["name"]


def test_secret_example_holds_placeholders_only() -> None:
    secret = one(documents(K8S / "secret.example.yaml"), "Secret")
    assert "data" not in secret  # base64 would hide what is in it
    for key, value in secret["stringData"].items():
        assert re.search(r"replace|REPLACE|example", value), f"{key} looks like a real secret"


def test_ha_replicas_take_their_shard_from_the_pod_ordinal(tmp_path: Path) -> None:
    """The StatefulSet's shell line, run by /bin/sh as in the image, with a stand-in `monitor`."""
    container = one(layout("ha"), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    fake = tmp_path / "monitor"
    fake.write_text('#!/bin/sh\necho "shard=$MONITOR_SHARD args=$*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    seen = {}
    for ordinal in range(4):
        result = subprocess.run(
            [*container["command"], *container["args"]],
            capture_output=True,
            text=True,
            timeout=10,
            env={
                "PATH": f"{tmp_path}:/usr/bin:/bin",
                "HOSTNAME": f"monitor-ha-{ordinal}",
                "MONITOR_SHARDS": "2",
            },
        )
        assert result.returncode == 0, result.stderr
        seen[ordinal] = result.stdout.strip()
    assert seen == {
        0: "shard=0/2 args=run",
        1: "shard=1/2 args=run",
        2: "shard=0/2 args=run",
        3: "shard=1/2 args=run",
    }


def _selects(selector: dict[str, str], pod_template: dict[str, Any]) -> bool:
    labels = pod_template["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())
