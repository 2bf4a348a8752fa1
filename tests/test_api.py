"""The HTTP interface of an in-process daemon: /metrics, /healthz, /readyz, /api/v1/checks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import parse_config
from monitor.daemon import Daemon

SPEC_METRICS = (
    "monitor_check_up",
    "monitor_check_duration_seconds",
    "monitor_check_runs_total",
    "monitor_check_value",
    "monitor_alert_state",
    "monitor_scheduler_lag_seconds",
    "monitor_config_reloads_total",
    "monitor_build_info",
)


@pytest.fixture
async def tcp_port() -> AsyncIterator[int]:
    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def daemon(tcp_port: int) -> AsyncIterator[Daemon]:
    config = parse_config(
        f"""
        [monitor]
        listen = "127.0.0.1:0"
        state = "memory"
        api_token = "api-secret-token"
        [[checks]]
        name = "collab-tcp"
        type = "tcp"
        host = "127.0.0.1"
        port = {tcp_port}
        interval = "0.2s"
        labels = {{ team = "collab" }}
        """.replace("\n        ", "\n"),
        {},
    )
    d = Daemon(config, registry=CollectorRegistry())
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


async def get(daemon: Daemon, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def wait_for_run(daemon: Daemon) -> None:
    deadline = time.monotonic() + 10
    while daemon.runtimes["collab-tcp"].last is None:
        assert time.monotonic() < deadline, "the check never ran"
        await asyncio.sleep(0.05)


async def test_healthz_and_readyz(daemon: Daemon) -> None:
    assert await get(daemon, "/healthz") == (200, '{"status": "ok"}')
    status, body = await get(daemon, "/readyz")
    assert status == 200 and "ready" in body


async def test_readyz_is_503_when_the_store_is_unreachable(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> bool:
        return False

    monkeypatch.setattr(daemon.store, "ping", down)
    status, body = await get(daemon, "/readyz")
    assert status == 503
    assert "state store unreachable" in body


async def test_metrics_names_are_the_spec_names(daemon: Daemon) -> None:
    await wait_for_run(daemon)
    status, text = await get(daemon, "/metrics")
    assert status == 200
    for name in SPEC_METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert 'monitor_check_up{check="collab-tcp",type="tcp"} 1.0' in text
    assert 'monitor_check_runs_total{check="collab-tcp",result="success",type="tcp"}' in text
    assert 'monitor_check_value{check="collab-tcp",metric="connect_ms"}' in text
    assert "api-secret-token" not in text


async def test_checks_api_shape(daemon: Daemon) -> None:
    await wait_for_run(daemon)
    status, text = await get(daemon, "/api/v1/checks")
    assert status == 200
    body = json.loads(text)
    assert body["status"] == "ok"
    (check,) = body["checks"]
    assert check["name"] == "collab-tcp"
    assert check["type"] == "tcp"
    assert check["up"] is True
    assert check["reason"] is None
    assert check["duration_ms"] > 0
    assert check["last_run"].endswith("Z")
    assert check["samples"]["up"] == 1 and "connect_ms" in check["samples"]
    assert check["states"] == {"up": "ok"}
    assert check["suppressed"] is None
    assert check["interval_s"] == 0.2
    assert "api-secret-token" not in text
