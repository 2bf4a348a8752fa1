"""examples/: one config per runbook (SPEC section 10), valid, carrying the runbook's table, alert
policy and section links, with every secret taken from the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import EXAMPLES, RUNBOOKS, heading_anchors

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.toml"))
SECRET_KEYS = {"routing_key", "password", "api_token", "webhook_url", "dsn"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
# Runbooks with a "Key Metrics to Monitor" table of warning/critical numbers: which threshold row
# carries each of its measurable rows (CPU, memory and disk are machine metrics, not checks).
TABLE_ROWS = {
    "tynebase.toml": {
        "API Response Time (p95)": "latency_p95_ms",
        "Error Rate": "error_rate_pct",
        "Database Connections": "connections_pct",
    },
    "fly-app.toml": {
        "Response time": "latency_p95_ms",
        "Error rate": "error_rate_pct",
        "Active connections": "connections_pct",
    },
}
# Runbooks that define maintenance windows: 000 (2-4 AM, announced), 002 (monthly, 2-4 hours),
# 003 (its "Maintenance Windows" table).
WITH_MAINTENANCE = {"tynebase.toml", "nextjs-supabase.toml", "fly-app.toml"}


def runbook_of(example: Path) -> Path:
    header = re.match(r"(?:#.*\n)+", example.read_text())
    match = re.search(r"runbooks/(\S+\.txt)", header.group(0) if header else "")
    assert match, f"{example.name}: the header comment must name its runbook (runbooks/NNN_....txt)"
    return RUNBOOKS / match.group(1)


def raw(example: Path) -> dict[str, Any]:
    return tomllib.loads(example.read_text())


def dummy_env(example: Path) -> dict[str, str]:
    """A plausible value for every ${VAR} the example needs (those with a default need none)."""
    env = {}
    for name, default in _VAR.findall(example.read_text()):
        if default:
            continue
        if name.endswith("DATABASE_URL") or name.endswith("_DSN"):
            env[name] = "postgresql://monitoring:dummy@db.invalid:5432/app"
        elif name.endswith("_URL"):
            env[name] = "https://hooks.invalid/dummy"
        else:
            env[name] = "dummy-" + name.lower()
    return env


def validate(example: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "PAGERDUTY", "SLACK", "SMTP"))
    }
    return subprocess.run(
        [sys.executable, "-m", "monitor", "validate", "-c", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def test_one_example_per_runbook() -> None:
    runbooks = sorted(p.name for p in RUNBOOKS.glob("*.txt"))
    assert runbooks, f"no runbooks in {RUNBOOKS}"
    assert sorted(runbook_of(e).name for e in EXAMPLE_FILES) == runbooks


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_monitor_validate_passes(example: Path) -> None:
    result = validate(example, dummy_env(example))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_secrets_come_from_the_environment(example: Path) -> None:
    """Without its variables the config is rejected, naming each: nothing secret is in the file."""
    needed = dummy_env(example)
    result = validate(example, {})
    assert result.returncode == 2
    for name in needed:
        assert f"environment variable {name} is not set" in result.stdout
    for where, value in _secret_values(raw(example)):
        assert value == "" or _VAR.search(value), f"{where} is written in clear: use ${{VAR}}"
    for url in re.findall(r"[a-z]+://[^\s\"']+", example.read_text()):
        assert not re.match(r"[a-z]+://[^/@$]+:[^/@$]+@", url), f"credentials in {url}"


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_runbook_links_point_at_sections_of_its_runbook(example: Path) -> None:
    anchors = heading_anchors(runbook_of(example).read_text(errors="replace"))
    checks = raw(example)["checks"]
    assert checks
    for check in checks:
        assert "runbook" in check, f"{check['name']}: no runbook link"
        anchor = check["runbook"].rpartition("#")[2]
        assert anchor in anchors, f"{check['name']}: no section #{anchor} in {runbook_of(example).name}"


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_alert_policy_pages_critical_now_and_warnings_in_business_hours(example: Path) -> None:
    config = raw(example)
    types = {name: n["type"] for name, n in config["notifiers"].items()}
    routes = {
        r.get("match", {}).get("severity"): r for r in config["routes"] if "severity" in r.get("match", {})
    }
    critical, warning = routes["critical"], routes["warning"]
    assert "pagerduty" in {types[n] for n in critical["notify"]}
    assert critical.get("when", "always") == "always"
    assert warning["when"] == "business_hours"
    assert {types[n] for n in warning["notify"]} <= {"slack", "email"}
    assert "business_hours" in config


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_maintenance_windows_where_the_runbook_defines_them(example: Path) -> None:
    assert bool(raw(example).get("maintenance")) == (example.name in WITH_MAINTENANCE)


@pytest.mark.parametrize("name", sorted(TABLE_ROWS))
def test_threshold_table_row_by_row(name: str) -> None:
    """The runbook's "Key Metrics to Monitor" numbers are the example's warning/critical values."""
    example = EXAMPLES / name
    table = _key_metrics_table(runbook_of(example).read_text(errors="replace"))
    thresholds = raw(example)["thresholds"]
    for metric, row in TABLE_ROWS[name].items():
        warning, critical = table[metric]
        assert (thresholds[row]["warning"], thresholds[row]["critical"]) == (warning, critical), metric


def _key_metrics_table(text: str) -> dict[str, tuple[float, float]]:
    """Rows of the table under "Key Metrics to Monitor": metric -> (warning, critical) numbers."""
    section = text.split("Key Metrics to Monitor", 1)[1]
    rows: dict[str, tuple[float, float]] = {}
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.search(r"\d", cells[-1]) or set(cells[0]) <= {"-"}:
            continue
        numbers = [float(re.search(r"(\d+(?:\.\d+)?)", c).group(1)) for c in cells[-2:]]  # type: ignore[union-attr]
        rows[cells[0]] = (numbers[0], numbers[1])
    return rows


def _secret_values(config: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for i, check in enumerate(config.get("checks", [])):
        found += [(f"checks[{i}].dsn", check["dsn"])] if "dsn" in check else []
        found += [(f"checks[{i}].headers.{k}", v) for k, v in check.get("headers", {}).items()]
    for name, notifier in config.get("notifiers", {}).items():
        found += [(f"notifiers.{name}.{k}", v) for k, v in notifier.items() if k in SECRET_KEYS]
    if "api_token" in config.get("monitor", {}):
        found.append(("monitor.api_token", config["monitor"]["api_token"]))
    return found
