"""Prometheus config and rules pass promtool; a real Prometheus scrapes `monitor run` and evaluates
every expression of the rules and the dashboard."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    DEPLOY,
    SPEC_METRICS,
    DaemonProcess,
    LoopbackHttp,
    closed_port,
    free_port,
    heading_anchors,
    http_get,
    json_reply,
    metric_names,
)
from tests.fakes.prometheus import PrometheusServer, find, promtool

PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "monitor.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "monitor.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "monitor.json"
RUNBOOK = DEPLOY / "runbook.md"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
RENDER = DEPLOY / "grafana" / "render.py"

# The issue's list: the daemon down, the scheduler lagging, the outbox growing, notifications
# failing, config reload failing.
REQUIRED_ALERTS = {
    "MonitorDown",
    "MonitorSchedulerLagging",
    "MonitorOutboxGrowing",
    "MonitorNotificationsFailing",
    "MonitorConfigReloadFailing",
}
# Panels that must show data on a daemon that runs checks: checks up/down, latency, error rates,
# alert states, scheduler lag (and what else exists on every daemon). "Notifications" is left out:
# it has data only once something was notified.
CORE_PANELS = {
    "Checks up",
    "Checks down",
    "Critical alerts",
    "Warning alerts",
    "Outbox pending",
    "Scheduler lag p99",
    "Check status",
    "Latency p95 per check",
    "Run duration p95 per check",
    "Error rate per check",
    "Runs by result",
    "Alert states",
    "Alerts firing",
    "Outbox",
    "Scheduler lag",
    "Config reloads",
    "Daemons",
}
# What Grafana puts in place of its variables when "All" is selected, and for the intervals.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$check": ".*",
}


def grafana_expr(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    return expr


def load_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


# ---------------------------------------------------------------- promtool, without a server


def test_promtool_checks_the_scrape_config_and_its_rule_files() -> None:
    result = promtool("check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    """deploy/prometheus/tests: each alert fires on its situation and a healthy daemon fires none."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested >= {r["alert"] for r in load_rules()}, "every alert needs a unit test"


def test_rules_cover_the_issue_and_link_their_runbook_section() -> None:
    rules = load_rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    anchors = heading_anchors(RUNBOOK.read_text())
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), rule["alert"]
        anchor = notes["runbook_url"].partition("#")[2]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in deploy/runbook.md"
        assert metric_names(rule["expr"]) <= SPEC_METRICS, rule["alert"]


def test_alertmanager_config_passes_amtool() -> None:
    result = subprocess.run(
        [find("amtool", package="prometheus-alertmanager"), "check-config", str(ALERTMANAGER_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- a real Prometheus


@pytest.fixture(scope="module")
def peers() -> Iterator[LoopbackHttp]:
    """Targets for the daemon's checks, and a webhook receiver for its notifications."""
    flip = [0]

    def flaky(_: Any) -> tuple[int, dict[str, str], bytes]:
        flip[0] += 1
        return json_reply(500 if flip[0] % 3 == 0 else 200, {"status": "ok"})

    def slow(_: Any) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.6)  # over the 500 ms warning of the latency row
        return json_reply(200, {"status": "ok"})

    server = LoopbackHttp(
        {
            "/health": lambda _: json_reply(200, {"status": "ok", "uptime": 42}),
            "/flaky": flaky,
            "/slow": slow,
            "/hook": lambda _: json_reply(200, {}),
        }
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, peers: LoopbackHttp) -> Iterator[DaemonProcess]:
    """`monitor run`: checks up, failing, slow and flaky, at 1 s, notifying a webhook."""
    tmp = tmp_path_factory.mktemp("daemon")
    port = free_port()
    config = tmp / "monitor.toml"
    config.write_text(
        f"""
[monitor]
listen = "127.0.0.1:{port}"
state = "sqlite:///{tmp}/state.db"
default_interval = "1s"
default_timeout = "1s"

[thresholds.latency_p95_ms]
warning = 500
critical = 1000
window = "1m"

[thresholds.error_rate_pct]
warning = 1
critical = 50
window = "1m"

[[checks]]
name = "web"
type = "http"
url = "{peers.url("/health")}"
expect_json = {{ status = "ok" }}
metrics = {{ uptime_s = "uptime" }}

[[checks]]
name = "slow-web"
type = "http"
url = "{peers.url("/slow")}"

[[checks]]
name = "flaky-web"
type = "http"
url = "{peers.url("/flaky")}"

[[checks]]
name = "gone"
type = "tcp"
host = "127.0.0.1"
port = {closed_port()}

[notifiers.hook]
type = "webhook"
url = "{peers.url("/hook")}"

[[routes]]
match = {{}}
notify = ["hook"]
"""
    )
    proc = DaemonProcess(config, port, env={}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def prometheus(daemon: DaemonProcess) -> Iterator[PrometheusServer]:
    """deploy/prometheus/prometheus.yml with its `monitor` job pointed at the daemon, scraping
    every second, with the real rule files; no Alertmanager."""
    config = copy.deepcopy(yaml.safe_load(PROMETHEUS_YML.read_text()))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES.parent / Path(pattern).name) for pattern in config["rule_files"]]
    config.pop("alerting", None)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    job.update(
        scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [f"127.0.0.1:{daemon.port}"]}]
    )
    config["scrape_configs"] = [job]
    with PrometheusServer(config) as server:
        server.wait_for('up{job="monitor"} == 1')
        # Enough samples for rate() and for the rules' `for` clocks to start; the checks have
        # failed twice (the `up` alert fires) and the window metrics exist.
        server.wait_for('count_over_time(up{job="monitor"}[1m]) >= 8', timeout_s=60)
        server.wait_for('monitor_alert_state{check="gone", metric="up"} == 2', timeout_s=30)
        yield server


def test_the_daemon_is_scraped_through_the_shipped_job(prometheus: PrometheusServer) -> None:
    [target] = prometheus.api("targets")["activeTargets"]
    assert target["labels"]["job"] == "monitor"
    assert target["health"] == "up", target.get("lastError")


def test_every_rule_expression_evaluates(prometheus: PrometheusServer) -> None:
    for rule in load_rules():
        prometheus.query(rule["expr"])  # raises with Prometheus' error on a bad expression


def test_rules_evaluate_without_errors_and_a_healthy_daemon_fires_none(prometheus: PrometheusServer) -> None:
    def rules() -> list[dict[str, Any]]:
        return [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]

    deadline = time.monotonic() + 30
    # Prometheus reports 0001-01-01 for a rule it has not evaluated yet.
    while any(r["lastEvaluation"].startswith("0001") for r in rules()) and time.monotonic() < deadline:
        time.sleep(0.5)
    evaluated = rules()
    assert {r["name"] for r in evaluated} == {r["alert"] for r in load_rules()}
    for rule in evaluated:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        assert rule["state"] != "firing", f"{rule['name']} fires on a healthy daemon: {rule['alerts']}"


def test_every_dashboard_expression_parses(prometheus: PrometheusServer) -> None:
    for title, expr in dashboard_targets():
        try:
            prometheus.query(grafana_expr(expr))
        except Exception as exc:
            raise AssertionError(f"panel {title!r}: {exc}") from exc


def test_core_panels_show_data(prometheus: PrometheusServer) -> None:
    targets = dashboard_targets()
    assert {title for title, _ in targets} >= CORE_PANELS, "a core panel was renamed or removed"
    empty = [
        (title, expr)
        for title, expr in targets
        if title in CORE_PANELS and not prometheus.query(grafana_expr(expr))
    ]
    assert not empty, f"panels without data: {empty}"


def test_dashboard_reads_the_daemon_as_it_is(prometheus: PrometheusServer) -> None:
    """Values, not only presence: two checks down-or-flaky, the latency row of the slow check."""
    up = {
        s["metric"]["check"]: float(s["value"][1])
        for s in prometheus.query("max by (check) (monitor_check_up)")
    }
    assert up["web"] == 1 and up["gone"] == 0
    [p95] = prometheus.query('monitor_check_value{check="slow-web", metric="latency_p95_ms"}')
    assert float(p95["value"][1]) > 500
    [down] = prometheus.query(grafana_expr(dict(dashboard_targets())["Checks down"]))
    assert float(down["value"][1]) >= 1


def test_template_variables_find_values(prometheus: PrometheusServer, daemon: DaemonProcess) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((?:(.+), )?(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector, label = match.groups()
        values = prometheus.api(f"label/{label}/values", **{"match[]": grafana_expr(selector)})
        assert values, f"variable ${variable['name']} would be empty"


def test_the_daemon_metrics_pass_promtool_lint(daemon: DaemonProcess) -> None:
    status, body = http_get(f"{daemon.url}/metrics")
    assert status == 200
    result = subprocess.run(
        [find("promtool"), "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_render_script_draws_the_dashboard_from_prometheus(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    out = tmp_path / "dashboard.png"
    result = subprocess.run(
        [
            sys.executable,
            str(RENDER),
            "--prometheus",
            prometheus.url,
            "--range",
            "1m",
            "--scrape-interval",
            "1s",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = {title.strip() for title in result.stdout.partition("no data: ")[2].split(",") if title.strip()}
    assert not empty & CORE_PANELS, f"drawn without data: {empty}"
