"""Each example monitors every row of its runbook's metric table and alert configuration (issue 14):
a check that produces the row's metric, and a threshold row for that check with the runbook's
numbers. Rows that cannot be measured are left out here with the reason (the example says it too)."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.config import Config, parse_config
from tests.deploy.helpers import EXAMPLES
from tests.deploy.test_examples import dummy_env

# Built-in samples of every check run (and their aggregates over a row's window).
_BUILT_IN = {"up", "latency_ms", "latency_p95_ms", "latency_p99_ms", "error_rate_pct", "availability_pct"}
_TYPE_SAMPLES = {
    "http": {"status_code", "body_bytes", "tls_days_left"},
    "tcp": {"connect_ms"},
    "websocket": {"handshake_ms", "roundtrip_ms"},
    "postgres": {
        "connections",
        "connections_pct",
        "long_running_queries",
        "idle_in_transaction",
        "blocked_queries",
        "in_recovery",
        "replication_lag_s",
        "database_size_mb",
    },
    "heartbeat": {"since_last_s"},
    "prometheus": {"query_ms"},
}

Row = tuple[str, float | None, float | None, str]  # metric, warning, critical, direction

ROWS: dict[str, dict[str, Row]] = {
    # runbooks/000 "Key Metrics to Monitor" and "Alert Configuration".
    "tynebase.toml": {
        "API Response Time (p95), health checks": ("latency_p95_ms", 500, 1000, "above"),
        "API Response Time (p95), traffic": ("http_p95_ms", 500, 1000, "above"),
        "Error Rate, health checks": ("error_rate_pct", 1, 5, "above"),
        "Error Rate, traffic": ("http_error_rate_pct", 1, 5, "above"),
        "CPU Usage": ("cpu_pct", 70, 90, "above"),
        "Memory Usage": ("memory_pct", 80, 95, "above"),
        "Database Connections": ("connections_pct", 80, 95, "above"),
        "Disk Usage": ("disk_pct", 80, 90, "above"),
        "Service down (health check fails)": ("up", None, 1, "below"),
    },
    # runbooks/003 "Key Metrics to Monitor" (no disk row).
    "fly-app.toml": {
        "Response time, health checks": ("latency_p95_ms", 500, 2000, "above"),
        "Response time, traffic": ("http_p95_ms", 500, 2000, "above"),
        "Error rate, health checks": ("error_rate_pct", 1, 5, "above"),
        "Error rate, traffic": ("http_error_rate_pct", 1, 5, "above"),
        "Memory usage": ("memory_pct", 70, 90, "above"),
        "CPU usage": ("cpu_pct", 70, 90, "above"),
        "Active connections": ("connections_pct", 80, 95, "above"),
    },
    # runbooks/002 "Key Metrics" (targets: warnings) and "Alerting Rules" (critical lines). The
    # traffic's own error rate and p95 are left out: Vercel has no Prometheus-compatible query
    # API. "Database connection issues" is the database check's `up`. Memory and disk have no
    # numbers in the runbook: the example's own.
    "nextjs-supabase.toml": {
        "Uptime": ("availability_pct", 99.9, None, "below"),
        "Response Time / Slow response times": ("latency_p95_ms", 300, 500, "above"),
        "Error Rate / High error rates": ("error_rate_pct", 0.1, 1, "above"),
        "Health check failures": ("up", None, 1, "below"),
        "High memory usage": ("memory_pct", 80, 95, "above"),
        "Disk space warnings": ("disk_pct", 80, None, "above"),
    },
    # runbooks/004 "Key Metrics to Monitor". Response times and error rate come from "Vercel
    # Analytics or Sentry", neither with a Prometheus-compatible query API: the health-check rows
    # only. Retention: leftover rows, and the cleanup job's heartbeat (HEARTBEATS).
    "vercel-python-api.toml": {
        "Database Connection Pool": ("pool_checked_out", 11, 14, "above"),
        "API Response Times": ("latency_p95_ms", 2000, None, "above"),
        "Error Rate": ("error_rate_pct", 1, 5, "above"),
        "Retention Policy Compliance": ("rows_past_retention", 0, None, "above"),
    },
    # runbooks/001 has no metric table: its "Daily Health Check" and issue lines. Its traffic
    # metrics and CPU/memory are left out: no hosting provider or metrics source is named, and
    # "High CPU/Memory Usage" give no numbers.
    "tessa.toml": {
        "API latency (p95 <2 seconds; >5 seconds an incident)": ("latency_p95_ms", 2000, 5000, "above"),
        "Check error rate (should be <1%)": ("error_rate_pct", 1, 5, "above"),
        "Login Failures Spike": ("failed_logins_15m", 50, 200, "above"),
    },
}

# Backups and scheduled jobs the runbook mentions: heartbeat check name -> period (seconds).
HEARTBEATS: dict[str, dict[str, float]] = {
    "tynebase.toml": {"backup-verification": 7 * 86400},  # "Backup Verification: Weekly"
    "fly-app.toml": {"backup-verification": 86400},  # "Database backup verification | Daily"
    "nextjs-supabase.toml": {"nightly-backup": 86400},  # "Manual Backup": supabase db dump
    "vercel-python-api.toml": {"retention-cleanup": 86400},  # "Retention cleanup fails"
    "tessa.toml": {"nightly-backup": 86400},  # Daily Health Check: "Check backup status"
}


def _config(name: str) -> Config:
    path = EXAMPLES / name
    return parse_config(path.read_text(), dummy_env(path))


def produces(check: Any) -> set[str]:
    """The metrics a check's runs produce, from its type and its configuration."""
    metrics = set(_BUILT_IN) | _TYPE_SAMPLES.get(check.type, set())
    if check.type == "http":
        metrics |= set(getattr(check, "metrics", {}) or {})
    if check.type in ("prometheus", "postgres"):
        metrics |= {q.metric for q in getattr(check, "queries", []) or []}
    return metrics


def test_every_example_has_a_table() -> None:
    assert sorted(ROWS) == sorted(p.name for p in EXAMPLES.glob("*.toml"))
    assert sorted(HEARTBEATS) == sorted(ROWS)


@pytest.mark.parametrize(
    ("name", "row"), [(n, r) for n, rows in sorted(ROWS.items()) for r in rows], ids=lambda v: str(v)
)
def test_row_has_a_check_and_the_runbook_numbers(name: str, row: str) -> None:
    metric, warning, critical, direction = ROWS[name][row]
    config = _config(name)
    checks = [c for c in config.checks if metric in produces(c)]
    assert checks, f"{row}: no check produces {metric}"
    with_row = [c.name for c in checks if metric in config.rows_for(c.name)]
    assert with_row, f"{row}: no threshold row {metric} for {[c.name for c in checks]}"
    for check in with_row:
        got = config.rows_for(check)[metric]
        assert (got.warning, got.critical, got.direction) == (warning, critical, direction), (row, check)


@pytest.mark.parametrize(
    ("name", "check"), [(n, c) for n, hb in sorted(HEARTBEATS.items()) for c in hb], ids=lambda v: str(v)
)
def test_scheduled_job_is_a_heartbeat(name: str, check: str) -> None:
    config = _config(name)
    heartbeat = config.check(check)
    assert heartbeat.type == "heartbeat"
    assert heartbeat.period == HEARTBEATS[name][check]
    assert config.rows_for(check)["up"].critical == 1


@pytest.mark.parametrize("name", ["tynebase.toml", "fly-app.toml"])
def test_fly_metrics_come_from_flys_own_names(name: str) -> None:
    """CPU, memory, (disk) and the traffic through the metric names Fly.io's Prometheus has."""
    promql = {q.metric: q.promql for c in _config(name).checks if c.type == "prometheus" for q in c.queries}
    assert "fly_instance_cpu" in promql["cpu_pct"]
    assert {"fly_instance_memory_mem_total", "fly_instance_memory_mem_available"} <= set(
        promql["memory_pct"].replace("{", " ").replace("(", " ").split()
    )
    if "disk_pct" in promql:
        assert "fly_instance_filesystem_blocks_free" in promql["disk_pct"]
        assert "fly_instance_filesystem_blocks{" in promql["disk_pct"]
    assert "fly_edge_http_responses_count" in promql["http_error_rate_pct"]
    assert "fly_edge_http_response_time_seconds_bucket" in promql["http_p95_ms"]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_traffic_and_health_check_rows_are_told_apart(name: str) -> None:
    """A prometheus check never feeds the health-check rows, nor an http check the traffic ones."""
    config = _config(name)
    for check in config.checks:
        rows = config.rows_for(check.name)
        if check.type in ("prometheus", "heartbeat"):
            assert "latency_p95_ms" not in rows and "error_rate_pct" not in rows, check.name
        if check.type == "http":
            assert not produces(check) & {"http_p95_ms", "http_error_rate_pct"}, check.name
