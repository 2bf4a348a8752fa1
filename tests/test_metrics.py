"""The per-check families of /metrics as a scrape reads them, after runs recorded by the daemon."""

from __future__ import annotations

import textwrap

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from checks import CheckDeps
from monitor.config import parse_config
from monitor.daemon import CheckRuntime, Daemon, build_runtimes
from monitor.models import CheckResult
from tests.fakes.clock import FakeClock

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

CONFIG = textwrap.dedent(
    """
    [[checks]]
    name = "backend-api"
    type = "http"
    url = "http://127.0.0.1:9/health"
    interval = "10s"
    """
)


def scrape(daemon: Daemon) -> Samples:
    text = "".join(daemon.metrics_text())
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def recorded(*results: CheckResult) -> tuple[Daemon, CheckRuntime]:
    clock = FakeClock()
    config = parse_config(CONFIG, {})
    daemon = Daemon(config, clock=clock, registry=CollectorRegistry())
    daemon.runtimes = build_runtimes(config, CheckDeps(http=None))  # type: ignore[arg-type]
    rt = daemon.runtimes["backend-api"]
    for result in results:
        await daemon._record(rt, result, clock.now())
        clock.advance(10)
    return daemon, rt


async def test_value_keeps_the_last_value_of_a_sample_the_latest_run_lacks() -> None:
    """A refused connection has no status code: the last one seen stays exported."""
    ok = CheckResult.success(12.5, status_code=200.0, body_bytes=33.0)
    down = CheckResult.failure("connection refused", 0.75)
    daemon, _ = await recorded(ok, down)
    samples = scrape(daemon)
    check = {"check": "backend-api"}
    assert value(samples, "monitor_check_up", type="http", **check) == 0
    assert value(samples, "monitor_check_value", metric="up", **check) == 0
    assert value(samples, "monitor_check_value", metric="latency_ms", **check) == 0.75
    assert value(samples, "monitor_check_value", metric="status_code", **check) == 200
    assert value(samples, "monitor_check_value", metric="body_bytes", **check) == 33
    # A later run with the sample replaces it.
    await daemon._record(
        daemon.runtimes["backend-api"], CheckResult.failure("status 503", 3.0, status_code=503.0), 1
    )
    assert value(scrape(daemon), "monitor_check_value", metric="status_code", **check) == 503


async def test_counters_histogram_and_alert_state() -> None:
    runs = [
        CheckResult.success(4.0, status_code=200.0),  # 4 ms: le=0.01
        CheckResult.success(40.0, status_code=200.0),  # le=0.05
        CheckResult.failure("timeout after 10s", 10_000.0, outcome="timeout"),  # le=10
        CheckResult.failure("status 503", 2.0, outcome="failure", status_code=503.0),
        CheckResult.failure("odd", 1.0, outcome="plugin-specific"),  # not a SPEC result: a failure
    ]
    daemon, _ = await recorded(*runs)
    daemon._skipped("backend-api")
    samples = scrape(daemon)
    labels = {"check": "backend-api", "type": "http"}
    runs_total = {
        r: value(samples, "monitor_check_runs_total", result=r, **labels)
        for r in ("success", "failure", "timeout", "error", "skipped")
    }
    assert runs_total == {"success": 2, "failure": 2, "timeout": 1, "error": None, "skipped": 1}
    bucket = "monitor_check_duration_seconds_bucket"
    assert value(samples, bucket, le="0.01", **labels) == 3  # 4 ms, 2 ms, 1 ms
    assert value(samples, bucket, le="0.05", **labels) == 4
    assert value(samples, bucket, le="5.0", **labels) == 4
    assert value(samples, bucket, le="10.0", **labels) == 5
    assert value(samples, bucket, le="+Inf", **labels) == 5
    assert value(samples, "monitor_check_duration_seconds_count", **labels) == 5
    assert value(samples, "monitor_check_duration_seconds_sum", **labels) == 10.047
    # Three failed runs in a row: the built-in `up` row (trigger_after 2) is critical.
    assert value(samples, "monitor_alert_state", check="backend-api", metric="up") == 2


async def test_alert_state_returns_to_zero_when_the_row_resolves() -> None:
    down = CheckResult.failure("connection refused", 1.0)
    daemon, rt = await recorded(down, down, down)
    assert value(scrape(daemon), "monitor_alert_state", check="backend-api", metric="up") == 2
    await daemon._record(rt, CheckResult.success(5.0), 100)
    assert value(scrape(daemon), "monitor_alert_state", check="backend-api", metric="up") == 0
    assert value(scrape(daemon), "monitor_check_up", check="backend-api", type="http") == 1
