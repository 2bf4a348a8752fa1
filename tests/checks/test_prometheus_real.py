"""PrometheusCheck against a real Prometheus (the Debian binary) scraping an exporter the test drives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from checks.base import CheckDeps
from checks.prometheus import PrometheusCheck
from monitor.config import parse_config
from monitor.evaluation import CheckEvaluator
from monitor.models import CheckResult, Level
from monitor.runner import run_check
from tests.fakes.prometheus import HOST, PrometheusServer
from tests.fakes.servers import client_session

SCRAPE_S = 1
# How long a moved gauge may take to show in a query: a scrape, plus slack for a busy machine.
SEEN_WITHIN_S = 10.0


@dataclass
class Exporter:
    """A prometheus_client exporter on a loopback port, with the gauge the test moves."""

    port: int
    cpu: Gauge


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    cpu = Gauge("app_cpu_usage_pct", "CPU usage of the app's machines", ["machine"], registry=registry)
    cpu.labels(machine="m1").set(0)
    server, thread = start_http_server(0, addr=HOST, registry=registry)
    try:
        yield Exporter(server.server_port, cpu)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter) -> Iterator[PrometheusServer]:
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s"},
        "scrape_configs": [{"job_name": "app", "static_configs": [{"targets": [f"{HOST}:{exporter.port}"]}]}],
    }
    with PrometheusServer(config) as server:
        server.wait_for('up{job="app"} == 1', timeout_s=20)  # polls: the first scrape is in
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as opened:
        yield opened


def monitor_toml(prometheus_url: str) -> str:
    # A runbook's CPU row (70/90), and the check's query written as a Fly.io one is: a ratio of
    # sums, with the characters a query string must encode (+ { } ' = ~).
    return f"""
[thresholds.cpu_pct]
warning = 70
critical = 90

[[checks]]
name = "backend-machines"
type = "prometheus"
url = "{prometheus_url}"
headers = {{ Authorization = "Bearer ${{PROM_TOKEN}}" }}
interval = "5s"
timeout = "5s"
queries = [
  {{ metric = "cpu_pct", promql = "max(app_cpu_usage_pct{{job='app', machine=~'m.*'}}) + 0" }},
  {{ metric = "disk_pct", promql = "app_disk_usage_pct{{job='app'}}" }},
]
"""


async def run_until(check: PrometheusCheck, evaluator: CheckEvaluator, cpu_pct: float) -> CheckResult:
    """Runs the check (each run evaluated) until Prometheus has scraped the gauge's new value."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        result = await run_check(check)
        evaluator.observe(result, time.monotonic())
        if result.samples.get("cpu_pct") == cpu_pct or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_a_gauge_moving_through_the_cpu_row_goes_ok_warning_critical(
    prometheus: PrometheusServer, exporter: Exporter, session: aiohttp.ClientSession
) -> None:
    config = parse_config(monitor_toml(prometheus.url), {"PROM_TOKEN": "prom-token-9c1d"})
    check = PrometheusCheck(config.checks[0], CheckDeps(http=session))
    evaluator = CheckEvaluator("backend-machines", config.rows_for("backend-machines"))
    gauge = exporter.cpu.labels(machine="m1")

    levels = []
    for value in (35.0, 82.5, 96.0):
        gauge.set(value)
        result = await run_until(check, evaluator, value)
        assert result.samples.get("cpu_pct") == value, result
        # The disk metric is not exported: no sample, and the run still succeeds.
        assert result.up
        assert result.reason == "disk_pct: no data"
        assert "disk_pct" not in result.samples
        assert 0 < result.samples["query_ms"] < result.latency_ms + 1
        levels.append(evaluator.levels()["cpu_pct"])

    assert levels == [Level.OK, Level.WARNING, Level.CRITICAL]
    assert check.target() == f"{HOST}:{prometheus.port}"


@pytest.mark.parametrize(
    ("promql", "reason"),
    [
        ("app_cpu_usage_pct{job='app'} or vector(1)", "cpu_pct: query returned 2 series"),
        ("app_cpu_usage_pct{job='app'}[1m]", "cpu_pct: query returned a range vector"),
        ("0 / 0", "cpu_pct: value is NaN"),
        ("1 / 0", "cpu_pct: value is +Inf"),
        ("max(app_cpu_usage_pct", "cpu_pct: status 400: bad_data: "),
    ],
    ids=["two-series", "range-vector", "nan", "inf", "parse-error"],
)
async def test_real_answers_that_fail_the_run(
    prometheus: PrometheusServer, session: aiohttp.ClientSession, promql: str, reason: str
) -> None:
    config = parse_config(
        f'[[checks]]\nname = "m"\ntype = "prometheus"\nurl = "{prometheus.url}"\n'
        f'queries = [{{ metric = "cpu_pct", promql = "{promql}" }}]\n',
        {},
    )

    result = await run_check(PrometheusCheck(config.checks[0], CheckDeps(http=session)))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith(reason), result.reason
