"""A write the failing state store refuses answers 503 with a JSON error and changes nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.store import Conflict

TOKEN = "store-down-token"


async def test_a_silence_the_failing_store_refuses_is_a_503_and_is_not_listed(tmp_path: Path) -> None:
    db = tmp_path / "state" / "monitor-state.db"
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[monitor]
listen = "127.0.0.1:0"
state = "sqlite:///{db}"
api_token = "{TOKEN}"

[[checks]]
name = "web"
type = "tcp"
host = "127.0.0.1"
port = 9
interval = "30s"
timeout = "1s"
"""
    )
    daemon = Daemon(load_config(config), registry=CollectorRegistry())
    await daemon.start()
    url = f"http://127.0.0.1:{daemon.bound_port}/api/v1/silences"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    silence = {"checks": ["web"], "end": "2099-01-01T00:00:00Z", "comment": "deploy"}
    try:
        async with aiohttp.ClientSession() as http:
            db.unlink()
            db.mkdir()  # the file is gone and a directory stands in its place
            ready = f"http://127.0.0.1:{daemon.bound_port}/readyz"
            deadline = time.monotonic() + 15
            while True:  # the store notices within its file-check period
                async with http.get(ready) as resp:
                    if resp.status == 503:
                        break
                assert time.monotonic() < deadline, "the failing store was not noticed"
                await asyncio.sleep(0.1)
            async with http.post(url, json=silence, headers=auth) as resp:
                assert resp.status == 503, await resp.text()
                body = await resp.json()
            assert body["error"].startswith("state store unavailable: ")
            assert str(db) in body["error"]
            async with http.get(url) as resp:
                assert resp.status == 200
                assert (await resp.json())["silences"] == []
            db.rmdir()
            deadline = time.monotonic() + 15
            while True:  # the store is reopened by the daemon's own retry; then writes work again
                async with http.post(url, json=silence, headers=auth) as resp:
                    if resp.status == 201:
                        made = await resp.json()
                        break
                    assert resp.status == 503, await resp.text()
                assert time.monotonic() < deadline, "the store did not come back"
                await asyncio.sleep(0.2)
            async with http.get(url) as resp:
                assert [s["id"] for s in (await resp.json())["silences"]] == [made["id"]]
    finally:
        await daemon.stop()


async def test_an_ack_that_keeps_conflicting_is_a_409_not_a_500(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(f'[monitor]\nlisten = "127.0.0.1:0"\nstate = "memory"\napi_token = "{TOKEN}"\n')
    daemon = Daemon(load_config(config), registry=CollectorRegistry())

    async def always_changed(alert_id: str, by: str | None, comment: str | None) -> None:
        raise Conflict([alert_id])  # another replica wrote the alert each time it was read again

    daemon.alerts.acknowledge = always_changed  # type: ignore[method-assign]
    await daemon.start()
    url = f"http://127.0.0.1:{daemon.bound_port}/api/v1/alerts/web:up/ack"
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http, http.post(url, headers=auth) as resp:
            assert resp.status == 409
            body = await resp.json()
    finally:
        await daemon.stop()
    assert body == {"error": "the alert changed meanwhile (another replica wrote it): try again"}
