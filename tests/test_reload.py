"""Config reload: a valid change is adopted keeping unchanged checks' state; an invalid one is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import load_config
from monitor.daemon import Daemon
from tests.test_daemon_e2e import free_port, poll

BASE = """
[monitor]
listen = "127.0.0.1:{port}"
state = "memory"
[[checks]]
name = "keep"
type = "tcp"
host = "127.0.0.1"
port = {target}
interval = "0.2s"
"""
EXTRA = """
[[checks]]
name = "{name}"
type = "tcp"
host = "127.0.0.1"
port = {target}
interval = "0.2s"
"""


@pytest.fixture
async def target() -> AsyncIterator[int]:
    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_reload_adopts_changes_and_keeps_unchanged_checks(tmp_path: Path, target: int) -> None:
    path = tmp_path / "monitor.toml"
    text = BASE.format(port=0, target=target) + EXTRA.format(name="old", target=target)
    path.write_text(text)
    daemon = Daemon(load_config(path), registry=CollectorRegistry(), config_path=str(path))
    await daemon.start()
    try:
        kept = daemon.runtimes["keep"]
        path.write_text(BASE.format(port=0, target=target) + EXTRA.format(name="new", target=target))
        assert await daemon.reload()
        assert set(daemon.runtimes) == {"keep", "new"}
        assert daemon.runtimes["keep"] is kept  # same schedule, history and evaluation state
        assert set(daemon.scheduler.jobs()) == {"keep", "new"}
        assert daemon.metrics.config_reloads.labels("success")._value.get() == 1

        path.write_text(text.replace('interval = "0.2s"', 'interval = "soon"'))
        assert not await daemon.reload()
        assert set(daemon.runtimes) == {"keep", "new"}  # the old config keeps running
        assert daemon.metrics.config_reloads.labels("failure")._value.get() == 1
    finally:
        await daemon.stop()


def runs_total(metrics: str, check: str) -> float:
    """All runs of `check` counted in a /metrics text (0 when it has no series)."""
    prefix = f'monitor_check_runs_total{{check="{check}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(prefix))


async def test_reload_keeps_a_redefined_checks_counters_and_drops_a_removed_checks_series(
    tmp_path: Path, target: int
) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(BASE.format(port=0, target=target) + EXTRA.format(name="old", target=target))
    daemon = Daemon(load_config(path), registry=CollectorRegistry(), config_path=str(path))
    await daemon.start()
    url = f"http://127.0.0.1:{daemon.bound_port}/metrics"
    try:
        text = await poll(
            url, lambda t: runs_total(t, "keep") >= 3 and runs_total(t, "old") >= 1, as_json=False
        )
        before = runs_total(text, "keep")
        redefined = BASE.format(port=0, target=target).replace('interval = "0.2s"', 'interval = "0.3s"')
        path.write_text(redefined)
        assert await daemon.reload()
        assert daemon.runtimes["keep"].check.config.interval == 0.3
        text = "".join(daemon.metrics_text())
        assert runs_total(text, "keep") >= before  # a counter that went down would read as a reset
        assert 'check="old"' not in text
        await poll(url, lambda t: runs_total(t, "keep") > before, as_json=False)
    finally:
        await daemon.stop()


async def test_sighup_with_a_broken_file_keeps_serving(tmp_path: Path, target: int) -> None:
    port = free_port()
    path = tmp_path / "monitor.toml"
    path.write_text(BASE.format(port=port, target=target))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "run",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await poll(f"{url}/readyz", lambda body: body["status"] == "ready")
        path.write_text(BASE.format(port=port, target=target) + "[[checks]]\nname = 'Bad Name'\n")
        proc.send_signal(signal.SIGHUP)
        await poll(
            f"{url}/metrics",
            lambda text: 'monitor_config_reloads_total{result="failure"} 1.0' in text,
            as_json=False,
        )
        path.write_text(BASE.format(port=port, target=target) + EXTRA.format(name="added", target=target))
        proc.send_signal(signal.SIGHUP)
        body = await poll(
            f"{url}/api/v1/checks", lambda b: {c["name"] for c in b["checks"]} == {"keep", "added"}
        )
        assert body["status"] in ("ok", "unknown")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    log = out.decode()
    assert "config reload rejected" in log, log
    assert "checks[1].type: required key missing" in log, log
