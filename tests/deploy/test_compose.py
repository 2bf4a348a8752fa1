"""deploy/docker-compose.yml: `docker-compose config` (the Debian binary, no engine needed) accepts it,
and its pieces fit: mounts exist, Prometheus finds the daemon, Grafana finds Prometheus and the
dashboard, the daemon's config is valid with the environment compose gives it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import load_config
from tests.deploy.helpers import DEPLOY, ROOT
from tests.fakes.prometheus import promtool

COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_HA = DEPLOY / "docker-compose.ha.yml"  # an override: the stack with an HA pair
PROMETHEUS_HA = DEPLOY / "prometheus" / "prometheus-ha.yml"
SERVICES = {"monitor", "prometheus", "alertmanager", "grafana", "postgres"}


def docker_compose() -> str:
    found = shutil.which("docker-compose") or "/usr/bin/docker-compose"
    assert Path(found).exists(), "docker-compose missing: scripts/test installs the Debian package"
    return found


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    return compose_config(COMPOSE)


@pytest.fixture(scope="module")
def resolved_ha() -> dict[str, Any]:
    return compose_config(COMPOSE, COMPOSE_HA)


def compose_config(*files: Path) -> dict[str, Any]:
    """`docker-compose config`: the files as Compose reads them, with variables and paths resolved."""
    # No engine, no user settings, no variables from the caller: what a fresh checkout sees.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    result = subprocess.run(
        [docker_compose(), *(arg for f in files for arg in ("--file", str(f))), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(result.stdout)
    for service in config["services"].values():
        service["volumes"] = [_long_volume(v) for v in service.get("volumes", [])]
        service["ports"] = [_long_port(p) for p in service.get("ports", [])]
    return config


def _long_volume(volume: str | dict[str, Any]) -> dict[str, Any]:
    """docker-compose 1.x prints `source:target:mode`, Compose v2 the long form: read both."""
    if isinstance(volume, dict):
        return volume
    source, target, *_ = volume.split(":")
    return {"type": "bind" if source.startswith("/") else "volume", "source": source, "target": target}


def _long_port(port: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(port, dict):
        return port
    parts = port.split("/")[0].split(":")
    return {"host_ip": parts[0] if len(parts) == 3 else None, "published": parts[-2], "target": parts[-1]}


def test_compose_config_accepts_the_stack(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == SERVICES


def test_monitor_is_built_from_the_dockerfile_and_hardened(resolved: dict[str, Any]) -> None:
    monitor = resolved["services"]["monitor"]
    assert Path(monitor["build"]["context"]) == ROOT
    assert (ROOT / monitor["build"].get("dockerfile", "Dockerfile")).is_file()
    assert monitor["read_only"] is True
    assert "/tmp" in monitor["tmpfs"]
    assert monitor["cap_drop"] == ["ALL"]
    assert any(v["target"] == "/var/lib/monitor" and v["type"] == "volume" for v in monitor["volumes"])
    assert any(v["target"] == "/etc/monitor/monitor.toml" for v in monitor["volumes"])
    assert monitor["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_ports_are_published_on_loopback_only(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_every_bind_mount_exists(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']} does not exist"


def test_prometheus_scrapes_the_monitor_service(resolved: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    [target] = job["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert host in resolved["services"]
    listen = _monitor_toml()["monitor"]["listen"]
    assert listen.endswith(f":{port}")
    [alertmanager] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager.partition(":")[0] in resolved["services"]
    prometheus = resolved["services"]["prometheus"]
    mounted = {v["target"] for v in prometheus["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"} <= mounted


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(resolved: dict[str, Any]) -> None:
    grafana = resolved["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in resolved["services"]
    dashboard = json.loads((DEPLOY / "grafana" / "monitor.json").read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == datasource["uid"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "monitor.yml").read_text())["providers"]
    folder = provider["options"]["path"]
    assert any(
        target.startswith(folder + "/") and source.name == "monitor.json" for target, source in mounts.items()
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in mounts


def test_the_daemon_config_is_valid_with_the_environment_compose_gives_it(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    environment = resolved["services"]["monitor"]["environment"]
    assert (
        environment["MONITOR_STATE"].startswith("postgresql://")
        and "@postgres:5432/" in environment["MONITOR_STATE"]
    )
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "validate", "-c", str(DEPLOY / "compose" / "monitor.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **{k: str(v) for k, v in environment.items()}},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_single_stack_runs_one_replica(resolved: dict[str, Any]) -> None:
    environment = resolved["services"]["monitor"]["environment"]
    assert load_config(DEPLOY / "compose" / "monitor.toml", environment).cluster.mode == "single"


# ---------------------------------------------------------------- the HA pair override


def test_ha_pair_is_two_replicas_of_one_config_on_postgresql(resolved_ha: dict[str, Any]) -> None:
    services = resolved_ha["services"]
    assert set(services) == SERVICES | {"monitor-b"}
    replicas = [services["monitor"], services["monitor-b"]]
    configs = []
    for replica in replicas:
        assert replica["read_only"] is True and replica["cap_drop"] == ["ALL"] and "/tmp" in replica["tmpfs"]
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        [mount] = [v for v in replica["volumes"] if v["target"] == "/etc/monitor/monitor.toml"]
        assert Path(mount["source"]).is_file()
        configs.append(load_config(mount["source"], {k: str(v) for k, v in replica["environment"].items()}))
    assert [c.cluster.mode for c in configs] == ["ha", "ha"]
    [state] = {str(c.monitor.state) for c in configs}  # one shared store
    assert state.startswith("postgresql://") and "@postgres:5432/" in state
    published = [p["published"] for r in replicas for p in r["ports"]]
    assert len(set(published)) == 2  # each replica's API on its own loopback port
    assert services["monitor-b"]["image"] == services["monitor"]["image"]


def test_ha_prometheus_scrapes_both_replicas(resolved_ha: dict[str, Any]) -> None:
    prometheus = resolved_ha["services"]["prometheus"]
    [mount] = [v for v in prometheus["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml"]
    assert Path(mount["source"]) == PROMETHEUS_HA
    config = yaml.safe_load(PROMETHEUS_HA.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    port = _monitor_toml()["monitor"]["listen"].rpartition(":")[2]
    assert set(job["static_configs"][0]["targets"]) == {f"monitor:{port}", f"monitor-b:{port}"}
    result = promtool("check", "config", str(PROMETHEUS_HA))
    assert result.returncode == 0, result.stdout + result.stderr
    # The rest of the scrape config is the single stack's.
    single = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert [j for j in config["scrape_configs"] if j["job_name"] != "monitor"] == [
        j for j in single["scrape_configs"] if j["job_name"] != "monitor"
    ]


def _monitor_toml() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((DEPLOY / "compose" / "monitor.toml").read_text())
