"""The daemon end to end: `monitor run` and `monitor once` as processes, against real loopback peers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import ServerConnection, serve

from tests.fakes.postgres import PostgresCluster

MONITOR = [sys.executable, "-m", "monitor"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Peers:
    """One loopback peer per check type; the HTTP one can be switched to 503 or stopped."""

    http_port: int
    tcp_port: int
    ws_port: int
    pg_dsn: str
    http_status: list[int]
    stop_http: Callable[[], Awaitable[None]]


@pytest.fixture
async def peers(pg_cluster: PostgresCluster) -> AsyncIterator[Peers]:
    status = [200]

    async def health(_: web.Request) -> web.Response:
        body = {"status": "ok" if status[0] == 200 else "degraded", "uptime": 12345}
        return web.json_response(body, status=status[0])

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]

    async def on_tcp(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    tcp = await asyncio.start_server(on_tcp, "127.0.0.1", 0)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send("pong" if "ping" in str(message) else message)

    ws_server = await serve(echo, "127.0.0.1", 0)
    stopped = False

    async def stop_http() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await runner.cleanup()

    try:
        yield Peers(
            http_port=http_port,
            tcp_port=tcp.sockets[0].getsockname()[1],
            ws_port=ws_server.sockets[0].getsockname()[1],
            pg_dsn=pg_cluster.dsn(),
            http_status=status,
            stop_http=stop_http,
        )
    finally:
        ws_server.close()
        await ws_server.wait_closed()
        tcp.close()
        await tcp.wait_closed()
        await stop_http()


def write_config(tmp_path: Path, peers: Peers, listen_port: int, interval: str = "1s") -> Path:
    text = f"""
[monitor]
listen = "127.0.0.1:{listen_port}"
state = "sqlite:///{tmp_path}/state.db"
default_interval = "{interval}"
default_timeout = "1s"
log_format = "json"

[thresholds.latency_p95_ms]
warning = 500
critical = 1000
window = "1m"

[[checks]]
name = "database"
type = "postgres"
dsn = "${{TEST_DATABASE_URL}}"

[[checks]]
name = "backend-api"
type = "http"
url = "http://127.0.0.1:{peers.http_port}/health"
expect_json = {{ status = "ok" }}
metrics = {{ uptime_s = "uptime" }}
depends_on = ["database"]
runbook = "https://wiki.example.com/runbook#issue-1-backend-api-not-responding"

[[checks]]
name = "collab-tcp"
type = "tcp"
host = "127.0.0.1"
port = {peers.tcp_port}

[[checks]]
name = "collab-ws"
type = "websocket"
url = "ws://127.0.0.1:{peers.ws_port}"
send = '{{"type":"ping"}}'
expect = "pong"
"""
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    return path


def env_with(peers: Peers) -> dict[str, str]:
    return {**os.environ, "TEST_DATABASE_URL": peers.pg_dsn}


async def poll(
    url: str, accept: Callable[[Any], bool], deadline_s: float = 20.0, as_json: bool = True
) -> Any:
    """GET `url` until `accept(body)` holds; returns that body, or fails with the last one seen."""
    last: Any = None
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            try:
                async with session.get(url) as resp:
                    last = await (resp.json() if as_json else resp.text())
                    if resp.status == 200 and accept(last):
                        return last
            except (aiohttp.ClientError, json.JSONDecodeError):
                pass
            await asyncio.sleep(0.2)
    pytest.fail(f"{url}: condition not met within {deadline_s}s; last response: {last}")


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def up_values(metrics_text: str) -> dict[str, float]:
    return {
        dict(labels)["check"]: value
        for (name, labels), value in scrape(metrics_text).items()
        if name == "monitor_check_up"
    }


async def test_run_exports_metrics_detects_a_stopped_target_and_stops_on_sigterm(
    tmp_path: Path, peers: Peers
) -> None:
    port = free_port()
    config = write_config(tmp_path, peers, port)
    proc = await asyncio.create_subprocess_exec(
        *MONITOR,
        "run",
        "-c",
        str(config),
        env=env_with(peers),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await poll(f"{base}/readyz", lambda body: body["status"] == "ready")
        metrics = await poll(f"{base}/metrics", lambda text: len(up_values(text)) == 4, as_json=False)
        assert up_values(metrics) == {
            "database": 1,
            "backend-api": 1,
            "collab-tcp": 1,
            "collab-ws": 1,
        }
        values = scrape(metrics)
        assert values[("monitor_check_value", (("check", "backend-api"), ("metric", "uptime_s")))] == 12345
        assert values[("monitor_build_info", (("version", "0.1.0"),))] == 1
        assert (
            "monitor_check_runs_total",
            (("check", "collab-tcp"), ("result", "success"), ("type", "tcp")),
        ) in values
        assert any(name == "monitor_scheduler_lag_seconds_count" and v > 0 for (name, _), v in values.items())
        assert any(
            name == "monitor_check_value"
            and dict(labels) == {"check": "database", "metric": "connections_pct"}
            for (name, labels) in values
        )

        # The HTTP target goes away: up drops to 0 at once, the state turns critical after
        # trigger_after (2) failed runs, pending in between.
        await peers.stop_http()
        metrics = await poll(
            f"{base}/metrics", lambda text: up_values(text).get("backend-api") == 0, as_json=False
        )
        assert up_values(metrics)["collab-tcp"] == 1
        view = await poll(
            f"{base}/api/v1/checks",
            lambda body: (
                next(c for c in body["checks"] if c["name"] == "backend-api")["states"].get("up")
                == "critical"
            ),
        )
        api = next(c for c in view["checks"] if c["name"] == "backend-api")
        assert api["up"] is False
        assert "refused" in api["reason"]
        assert view["status"] == "critical"
        runs = scrape(await poll(f"{base}/metrics", lambda _: True, as_json=False))
        failures = runs[
            (
                "monitor_check_runs_total",
                (("check", "backend-api"), ("result", "failure"), ("type", "http")),
            )
        ]
        assert failures >= 2
        state = runs[("monitor_alert_state", (("check", "backend-api"), ("metric", "up")))]
        assert state == 2
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - started < 10
    logs = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any(e["msg"] == "check down" and e.get("check") == "backend-api" for e in logs)
    assert peers.pg_dsn not in out.decode() + err.decode()


async def run_once(config: Path, peers: Peers, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *MONITOR,
        "once",
        "-c",
        str(config),
        *args,
        env=env_with(peers),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_once_prints_all_four_and_follows_nagios_exit_codes(tmp_path: Path, peers: Peers) -> None:
    config = write_config(tmp_path, peers, free_port())
    code, out = await run_once(config, peers)
    assert code == 0, out
    for name in ("database", "backend-api", "collab-tcp", "collab-ws"):
        assert name in out
    assert out.startswith("MONITOR OK - 4 of 4 checks ok | ")

    code, out = await run_once(config, peers, "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "ok"
    by_name = {c["name"]: c for c in result["checks"]}
    assert set(by_name) == {"database", "backend-api", "collab-tcp", "collab-ws"}
    assert all(c["up"] is True and c["reason"] is None for c in by_name.values())
    assert by_name["backend-api"]["samples"]["status_code"] == 200
    assert by_name["collab-ws"]["samples"]["roundtrip_ms"] >= 0
    assert by_name["database"]["states"]["connections_pct"] == "ok"
    assert result["checks"][0]["name"] == "database"  # dependencies first

    peers.http_status[0] = 503
    code, out = await run_once(config, peers, "--json")
    assert code == 2, out
    api = next(c for c in json.loads(out)["checks"] if c["name"] == "backend-api")
    assert api["reason"] == "status 503"
    assert api["states"]["up"] == "critical"  # no trigger_after in `once`

    code, out = await run_once(config, peers, "--check", "collab-tcp")
    assert code == 0 and "collab-tcp" in out and "backend-api" not in out

    code, out = await run_once(config, peers, "--json", "--check", "nope")
    assert code == 3
    assert json.loads(out) == {"status": "unknown", "errors": ['--check: unknown check "nope"']}


async def test_once_invalid_config_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[checks]]\nname = "x"\ntype = "http"\nurl = "nope"\n')
    proc = await asyncio.create_subprocess_exec(
        *MONITOR, "once", "--json", "-c", str(path), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 3
    body = json.loads(out)
    assert body["status"] == "unknown"
    assert body["errors"][0].startswith("checks[0].url")


async def test_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[monitor]\nlistne = "x"\n')
    proc = await asyncio.create_subprocess_exec(
        *MONITOR,
        "run",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert "monitor.listne: unknown key" in err.decode()


async def test_default_config_runs_and_watches_itself(tmp_path: Path) -> None:
    """The README's promise: `monitor run` on the shipped monitor.toml works on a fresh machine."""
    text = (Path(__file__).parent.parent / "monitor.toml").read_text()
    port = free_port()
    text = text.replace("9100", str(port))
    for duration in ('"15s"', '"30s"', '"10s"', '"2s"'):  # timeouts too: none may exceed its interval
        text = text.replace(duration, '"1s"')
    (tmp_path / "monitor.toml").write_text(text)
    proc = await asyncio.create_subprocess_exec(
        *MONITOR,
        "run",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "MONITOR_CONFIG"},
    )
    try:
        body = await poll(
            f"http://127.0.0.1:{port}/api/v1/checks",
            lambda b: len(b["checks"]) == 3 and all(c["up"] for c in b["checks"]),
        )
        assert body["status"] == "ok"
        assert (tmp_path / "monitor-state.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
