"""`monitor once` on each example gives a value for every row of its runbook table (issue 14).

One real Prometheus scrapes two local exporters every second: one with Fly.io's metric names and
labels (`fly_instance_*`, `fly_edge_*`, `app=`), one with node_exporter's (Supabase's metrics
endpoint). The examples take their Prometheus, app and database URLs from the environment; here
they point at that Prometheus, a loopback HTTP server and a PostgreSQL database of the test's own.
Checks whose target is a public host named in the example itself are left out (`--check`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from monitor.config import Config, parse_config
from tests.deploy.helpers import EXAMPLES
from tests.deploy.test_example_rows import ROWS
from tests.deploy.test_examples import dummy_env
from tests.fakes.postgres import PostgresCluster
from tests.fakes.prometheus import HOST, PrometheusServer
from tests.fakes.servers import LoopbackServers, json_handler

pytestmark = pytest.mark.timeout(120)

# Checks of public hosts written in the examples (no variable to move them): not run here.
PUBLIC = {
    "tynebase.toml": {"collab-tcp", "collab-ws", "frontend", "supabase-rest"},
    "tessa.toml": {"openai-status"},
}
# What each machine of the exporter does per second; the queries' answers follow from it.
CPU_BUSY = {"tynebase-backend": 0.4, "tynebase-collab": 0.2, "app-name": 0.5}  # of one CPU-second
# Per second at the edge: answers by status, and how many took at most `le` seconds.
RESPONSES = {"200": 49.0, "503": 1.0}
BUCKETS = [("0.1", 40.0), ("0.25", 45.0), ("0.5", 50.0), ("+Inf", 50.0)]  # p95: 0.25 + 2.5/5 * 0.25


class FlyMetrics(Collector):
    """Fly.io's names at a steady load; counters grow with time, so rate() has a slope.

    Exposed untyped: prometheus_client would add `_total` to a counter, and Fly.io's names have none."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        t = time.monotonic() - self.started + 1
        cpu = UnknownMetricFamily("fly_instance_cpu", "CPU seconds by mode", labels=["app", "cpu", "mode"])
        total = GaugeMetricFamily("fly_instance_memory_mem_total", "memory", labels=["app"])
        available = GaugeMetricFamily("fly_instance_memory_mem_available", "memory", labels=["app"])
        blocks = GaugeMetricFamily("fly_instance_filesystem_blocks", "blocks", labels=["app"])
        free = GaugeMetricFamily("fly_instance_filesystem_blocks_free", "blocks", labels=["app"])
        for app, busy in CPU_BUSY.items():
            cpu.add_metric([app, "0", "idle"], (1 - busy) * t)
            cpu.add_metric([app, "0", "user"], busy * t)
            total.add_metric([app], 4e9)
            available.add_metric([app], 1e9)  # memory_pct 75
            blocks.add_metric([app], 1000)
            free.add_metric([app], 300)  # disk_pct 70
        total.add_metric(["another-app"], 4e9)  # 99% used: a query that missed its `app=` would see it
        available.add_metric(["another-app"], 4e7)
        responses = UnknownMetricFamily("fly_edge_http_responses_count", "answers", labels=["app", "status"])
        latency = HistogramMetricFamily("fly_edge_http_response_time_seconds", "answer time", labels=["app"])
        for app in ("tynebase-backend", "app-name"):
            for status, per_s in RESPONSES.items():
                responses.add_metric([app, status], per_s * t)
            latency.add_metric([app], [(le, n * t) for le, n in BUCKETS], sum_value=10 * t)
        yield from (cpu, total, available, blocks, free, responses, latency)


class NodeMetrics(Collector):
    """node_exporter's memory and filesystem names, as Supabase's metrics endpoint has them."""

    def collect(self) -> Iterable[Metric]:
        total = GaugeMetricFamily("node_memory_MemTotal_bytes", "memory")
        total.add_metric([], 8e9)
        available = GaugeMetricFamily("node_memory_MemAvailable_bytes", "memory")
        available.add_metric([], 2e9)  # memory_pct 75
        size = GaugeMetricFamily("node_filesystem_size_bytes", "fs", labels=["fstype", "mountpoint"])
        avail = GaugeMetricFamily("node_filesystem_avail_bytes", "fs", labels=["fstype", "mountpoint"])
        size.add_metric(["ext4", "/"], 100e9)
        avail.add_metric(["ext4", "/"], 40e9)  # disk_pct 60
        size.add_metric(["tmpfs", "/run"], 1e9)  # full, but the query leaves tmpfs out
        avail.add_metric(["tmpfs", "/run"], 0)
        yield from (total, available, size, avail)


EXPECTED = {  # (example, check) -> the samples the exporters' numbers give
    ("tynebase.toml", "backend-machines"): {"cpu_pct": 40, "memory_pct": 75, "disk_pct": 70},
    ("tynebase.toml", "collab-machines"): {"cpu_pct": 20, "memory_pct": 75, "disk_pct": 70},
    ("tynebase.toml", "backend-traffic"): {"http_error_rate_pct": 2, "http_p95_ms": 375},
    ("fly-app.toml", "app-machines"): {"cpu_pct": 50, "memory_pct": 75},
    ("fly-app.toml", "app-traffic"): {"http_error_rate_pct": 2, "http_p95_ms": 375},
    ("nextjs-supabase.toml", "database-machine"): {"memory_pct": 75, "disk_pct": 60},
}


@dataclass
class Peers:
    prometheus_url: str
    app_url: str
    database_url: str


@contextlib.contextmanager
def exporter(collector: Collector) -> Iterator[int]:
    """A prometheus_client exporter of `collector` on a loopback port; yields the port."""
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(0, addr=HOST, registry=registry)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    """One Prometheus for every example: job `fly` (Fly.io's names) and job `supabase` (node's)."""
    with exporter(FlyMetrics()) as fly, exporter(NodeMetrics()) as node:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"{HOST}:{port}"]}]}
                for job, port in (("fly", fly), ("supabase", node))
            ],
        }
        with PrometheusServer(config) as server:
            # rate() needs two scrapes of a counter; the node job's gauges need one.
            server.wait_for("rate(fly_instance_cpu[5m])", timeout_s=30)
            server.wait_for('up{job="supabase"} == 1', timeout_s=30)
            yield server


@pytest.fixture
async def peers(prometheus: PrometheusServer, pg_cluster: PostgresCluster) -> AsyncIterator[Peers]:
    """The app's endpoints on loopback, answering what each example expects; the tables the
    examples' queries read."""
    ok = json_handler({"status": "ok", "uptime": 7})
    routes = {
        "/health": ok,
        "/health/database": ok,
        "/api/health": ok,
        "/api/selftest": ok,
        "/api/monitoring/health": json_handler(
            {
                "status": "ok",
                "database": "connected",
                "supabase": "connected",
                "pool": {"checked_out": 3, "pool_size": 15},
            }
        ),
    }
    async with pg_cluster.database("examples_once") as name, LoopbackServers() as servers:
        dsn = pg_cluster.dsn(database=name)
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                "create table audit_logs (created_at timestamptz);"
                "insert into audit_logs select now() - interval '100 days' from generate_series(1, 3);"
                "create table failed_login_attempts (created_at timestamptz);"
                "insert into failed_login_attempts select now() from generate_series(1, 7);"
            )
        finally:
            await connection.close()
        yield Peers(prometheus.url, await servers.http(routes), dsn)


def example_config(example: str) -> Config:
    return parse_config((EXAMPLES / example).read_text(), dummy_env(EXAMPLES / example))


def environment(example: str, peers: Peers) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return {
        **clean,
        **dummy_env(EXAMPLES / example),
        "FLY_PROMETHEUS_URL": peers.prometheus_url,
        "PROMETHEUS_URL": peers.prometheus_url,
        "APP_URL": peers.app_url,
        "TYNEBASE_API_URL": peers.app_url,
        "TESSA_URL": peers.app_url,
        "DATABASE_URL": peers.database_url,
    }


async def monitor_once(example: str, peers: Peers) -> dict[str, dict[str, Any]]:
    run = [c.name for c in example_config(example).checks if c.name not in PUBLIC.get(example, set())]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "once",
        "--json",
        "-c",
        str(EXAMPLES / example),
        *(arg for name in run for arg in ("--check", name)),
        env=environment(example, peers),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, 1, 2), out.decode()  # 3 would be a config error
    return {c["name"]: c for c in json.loads(out)["checks"]}


async def test_every_row_of_every_example_gets_a_value(peers: Peers) -> None:
    examples = sorted(ROWS)
    results = dict(
        zip(examples, await asyncio.gather(*(monitor_once(e, peers) for e in examples)), strict=True)
    )

    for example, rows in ROWS.items():
        config, checks = example_config(example), results[example]
        for row, (metric, *_) in rows.items():
            values = [
                c["samples"][metric]
                for name, c in checks.items()
                if metric in config.rows_for(name) and metric in c["samples"]
            ]
            assert values, f"{example}: {row!r} ({metric}) has no value: {checks}"
            assert all(isinstance(v, int | float) and math.isfinite(v) for v in values), (
                example,
                row,
                values,
            )

    # The Fly.io and node queries compute what the exporters' numbers give.
    for (example, name), expected in EXPECTED.items():
        check = results[example][name]
        assert check["up"] is True and check["reason"] is None, check
        got = {metric: check["samples"][metric] for metric in expected}
        assert got == pytest.approx(expected, rel=1e-3), (example, name)
