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

from tests.deploy.helpers import DEPLOY, ROOT

COMPOSE = DEPLOY / "docker-compose.yml"
SERVICES = {"monitor", "prometheus", "alertmanager", "grafana", "postgres"}


def docker_compose() -> str:
    found = shutil.which("docker-compose") or "/usr/bin/docker-compose"
    assert Path(found).exists(), "docker-compose missing: scripts/test installs the Debian package"
    return found


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """`docker-compose config`: the file as Compose reads it, with variables and paths resolved."""
    # No engine, no user settings, no variables from the caller: what a fresh checkout sees.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    result = subprocess.run(
        [docker_compose(), "--file", str(COMPOSE), "config"],
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


def _monitor_toml() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((DEPLOY / "compose" / "monitor.toml").read_text())
