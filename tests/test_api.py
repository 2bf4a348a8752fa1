"""The HTTP interface of an in-process daemon: /metrics, /healthz, /readyz, /api/v1/checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

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


@contextlib.asynccontextmanager
async def running(toml: str) -> AsyncIterator[Daemon]:
    """An in-process daemon on a free loopback port, with in-memory state and its own registry."""
    head = '[monitor]\nlisten = "127.0.0.1:0"\nstate = "memory"\n'
    daemon = Daemon(parse_config(head + textwrap.dedent(toml), {}), registry=CollectorRegistry())
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture
async def daemon(tcp_port: int) -> AsyncIterator[Daemon]:
    async with running(
        f"""\
        api_token = "api-secret-token"
        [[checks]]
        name = "collab-tcp"
        type = "tcp"
        host = "127.0.0.1"
        port = {tcp_port}
        interval = "0.2s"
        labels = {{ team = "collab" }}
        """
    ) as d:
        yield d


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
    assert 'monitor_check_runs_total{check="collab-tcp",type="tcp",result="success"} ' in text
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


@pytest.fixture
async def failing_daemon() -> AsyncIterator[Daemon]:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        async with running(
            f"""\
            api_token = "api-secret-token"
            [thresholds.up]
            trigger_after = 1
            [[checks]]
            name = "database"
            type = "tcp"
            host = "127.0.0.1"
            port = {port}
            interval = "0.2s"
            runbook = "https://wiki.example.com/runbook#database"
            labels = {{ team = "data" }}
            """
        ) as d:
            yield d


async def call(
    daemon: Daemon, method: str, path: str, token: str | None = None, body: object = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"http://127.0.0.1:{daemon.bound_port}{path}", json=body, headers=headers
        ) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text and resp.content_type == "application/json" else text


async def firing_alert(daemon: Daemon) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        _, body = await call(daemon, "GET", "/api/v1/alerts")
        if body["alerts"] and body["alerts"][0]["state"] == "firing":
            return body["alerts"][0]
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_alerts_list_and_acknowledge(failing_daemon: Daemon) -> None:
    alert = await firing_alert(failing_daemon)
    assert alert["check"] == "database" and alert["metric"] == "up"
    assert alert["severity"] == "critical"
    assert alert["acknowledged"] is False and alert["suppressed"] is None
    assert alert["value"] == 0 and alert["threshold"] == 1
    assert alert["started_at"].endswith("Z") and alert["resolved_at"] is None
    assert "refused" in alert["reason"]
    assert alert["labels"] == {"team": "data"}
    assert alert["runbook"] == "https://wiki.example.com/runbook#database"

    path = f"/api/v1/alerts/{alert['id']}/ack"
    assert (await call(failing_daemon, "POST", path))[0] == 401
    assert (await call(failing_daemon, "POST", path, token="wrong"))[0] == 401
    status, acked = await call(
        failing_daemon, "POST", path, "api-secret-token", {"by": "alice", "comment": "on it"}
    )
    assert status == 200 and acked["acknowledged"] is True and acked["id"] == alert["id"]
    status, again = await call(failing_daemon, "POST", path, "api-secret-token")
    assert status == 200 and again == acked
    assert (await call(failing_daemon, "POST", "/api/v1/alerts/nope/ack", "api-secret-token"))[0] == 404
    status, body = await call(failing_daemon, "POST", path, "api-secret-token", [1, 2])
    assert status == 400 and "JSON object" in body["error"]
    assert (await call(failing_daemon, "GET", "/api/v1/alerts?state=resolved&since=yesterday"))[0] == 400
    status, body = await call(
        failing_daemon, "GET", "/api/v1/alerts?state=resolved&since=2026-01-01T00:00:00Z"
    )
    assert status == 200 and body == {"alerts": []}


async def test_silences_crud_and_validation(failing_daemon: Daemon) -> None:
    token = "api-secret-token"
    new = {"checks": ["data*"], "end": "2099-01-01T00:00:00Z", "comment": "migration"}
    assert (await call(failing_daemon, "POST", "/api/v1/silences", body=new))[0] == 401
    status, silence = await call(failing_daemon, "POST", "/api/v1/silences", token, new)
    assert status == 201
    assert silence["checks"] == ["data*"] and silence["end"] == "2099-01-01T00:00:00.000Z"
    assert silence["comment"] == "migration" and silence["start"].endswith("Z")
    status, listed = await call(failing_daemon, "GET", "/api/v1/silences")
    assert status == 200 and listed == {"silences": [silence]}
    _, body = await call(failing_daemon, "GET", "/api/v1/checks")
    assert body["checks"][0]["suppressed"] == "silence"  # "data*" covers "database"
    assert (await call(failing_daemon, "DELETE", f"/api/v1/silences/{silence['id']}", token))[0] == 204
    assert (await call(failing_daemon, "DELETE", f"/api/v1/silences/{silence['id']}", token))[0] == 404
    for bad, message in [
        ({"end": "2099-01-01T00:00:00Z"}, "checks"),
        ({"checks": ["x"]}, "end: required"),
        ({"checks": ["x"], "end": "tomorrow"}, "end: invalid time"),
        ({"checks": ["x"], "end": "2001-01-01T00:00:00Z"}, "end"),
        ({"checks": ["x"], "end": "2099-01-01T00:00:00Z", "chekcs": 1}, "unknown key"),
    ]:
        status, body = await call(failing_daemon, "POST", "/api/v1/silences", token, bad)
        assert status == 400 and message in body["error"], (bad, body)


async def test_write_endpoints_forbidden_without_a_configured_token() -> None:
    async with running('api_token = "${NO_TOKEN:-}"\n') as daemon:
        assert (await call(daemon, "POST", "/api/v1/silences", "anything", {"checks": ["x"]}))[0] == 403
        assert (await call(daemon, "POST", "/api/v1/alerts/x/ack", "anything"))[0] == 403
        assert (await call(daemon, "POST", "/api/v1/alerts/x/ack"))[0] == 403


async def test_status_page(failing_daemon: Daemon) -> None:
    await firing_alert(failing_daemon)
    status, page = await call(failing_daemon, "GET", "/")
    assert status == 200
    assert "<h1>monitor</h1>" in page and '<span class="pill s-critical">critical</span>' in page
    assert '<div class="name">database</div>' in page and "connection refused" in page
    assert "api-secret-token" not in page
