"""`GET /api/v1/checks/{name}` of an in-process daemon on a fake clock: the check's entry with its
hourly history and uptime; older hours from the store; uptime kept across a restart (SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import parse_config
from monitor.daemon import Daemon
from tests.fakes.clock import FakeClock

HOUR = 3600.0
START = 1_794_988_800.0  # 2026-11-18T08:00:00Z
DOC: dict[str, Any] = json.loads(resources.files("monitor").joinpath("openapi.json").read_text())


def config(state: str, up_port: int, down_port: int) -> str:
    # Intervals of an hour: the scheduler does not run the checks during a test; `run` does.
    return textwrap.dedent(
        f"""\
        [monitor]
        listen = "127.0.0.1:0"
        state = "{state}"
        [thresholds.up]
        trigger_after = 1
        [[checks]]
        name = "web"
        type = "tcp"
        host = "127.0.0.1"
        port = {up_port}
        interval = "1h"
        [[checks]]
        name = "db"
        type = "tcp"
        host = "127.0.0.1"
        port = {down_port}
        interval = "1h"
        """
    )


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[tuple[int, int]]:
    """A port that accepts and one that refuses."""

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    refused = await asyncio.start_server(accept, "127.0.0.1", 0)
    down_port = refused.sockets[0].getsockname()[1]
    refused.close()
    await refused.wait_closed()
    yield server.sockets[0].getsockname()[1], down_port
    server.close()
    await server.wait_closed()


@pytest.fixture
async def ports() -> AsyncIterator[tuple[int, int]]:
    async with listening() as found:
        yield found


@contextlib.asynccontextmanager
async def running(state: str, clock: FakeClock, ports: tuple[int, int]) -> AsyncIterator[Daemon]:
    daemon = Daemon(parse_config(config(state, *ports), {}), clock=clock, registry=CollectorRegistry())
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def get(daemon: Daemon, path: str, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}{path}", params=params) as resp,
    ):
        assert resp.content_type == "application/json"
        body = await resp.json()
    conforms(resp.status, body)
    return resp.status, body


def conforms(status: int, body: Any) -> None:
    """The answer is as monitor/openapi.json describes it."""
    response = DOC["paths"]["/api/v1/checks/{name}"]["get"]["responses"][str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": DOC["components"]})


async def runs(daemon: Daemon, clock: FakeClock, name: str, count: int, every_s: float) -> None:
    for _ in range(count):
        await daemon._run(name)
        clock.advance(every_s)


async def test_one_check_with_its_hours_and_uptime(tmp_path: Path, ports: tuple[int, int]) -> None:
    clock = FakeClock(START)
    async with running(f"sqlite:///{tmp_path / 'state.db'}", clock, ports) as daemon:
        await runs(daemon, clock, "web", 4, 900)  # 08:00, 4 runs
        await runs(daemon, clock, "db", 2, 0)
        clock.advance(HOUR)  # 10:00: nothing at 09:00
        await runs(daemon, clock, "web", 2, 60)

        status, web = await get(daemon, "/api/v1/checks/web")
        assert status == 200
        entry = next(c for c in daemon.checks_view()["checks"] if c["name"] == "web")
        assert {k: v for k, v in web.items() if k not in ("history", "uptime_pct")} == entry
        assert [(h["hour"], h["runs"], h["failures"]) for h in web["history"]] == [
            ("2026-11-18T08:00:00.000Z", 4, 0),
            ("2026-11-18T10:00:00.000Z", 2, 0),
        ]
        for hour in web["history"]:
            assert 0 < hour["latency_p50_ms"] <= hour["latency_p95_ms"] <= hour["latency_max_ms"]
        assert web["uptime_pct"] == {"24h": 100.0, "7d": 100.0, "30d": 100.0}

        status, db = await get(daemon, "/api/v1/checks/db")
        assert db["status"] == "critical" and db["up"] is False
        assert [(h["runs"], h["failures"], h["latency_p95_ms"]) for h in db["history"]] == [(2, 2, None)]
        assert db["uptime_pct"]["24h"] == 0.0

        status, since = await get(daemon, "/api/v1/checks/web", since="2026-11-18T09:30:00Z")
        assert [h["hour"] for h in since["history"]] == ["2026-11-18T10:00:00.000Z"]

        # 30 hours on, 08:00 is no longer held in memory: it is read from the store.
        clock.advance(30 * HOUR)
        await runs(daemon, clock, "web", 1, 0)
        await daemon.run_history.flush()
        status, old = await get(daemon, "/api/v1/checks/web", since="2026-11-18T00:00:00Z")
        assert [(h["hour"][8:16], h["runs"]) for h in old["history"]] == [
            ("18T08:00", 4),
            ("18T10:00", 2),
            ("19T16:00", 1),
        ]
        status, recent = await get(daemon, "/api/v1/checks/web")
        assert [h["hour"][8:16] for h in recent["history"]] == ["19T16:00"]  # default: the last 24 hours

        assert await get(daemon, "/api/v1/checks/nope") == (404, {"error": "no such check: nope"})
        status, error = await get(daemon, "/api/v1/checks/web", since="yesterday")
        assert status == 400 and error["error"].startswith("since: ")


async def test_uptime_survives_a_restart(tmp_path: Path, ports: tuple[int, int]) -> None:
    clock = FakeClock(START)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    async with running(state, clock, ports) as daemon:
        await runs(daemon, clock, "db", 1, 600)
        await runs(daemon, clock, "web", 3, 600)
        before = (await get(daemon, "/api/v1/checks/web"))[1]
        assert before["uptime_pct"] == {"24h": 100.0, "7d": 100.0, "30d": 100.0}
        assert daemon.uptime_pct("db") == {"24h": 0.0, "7d": 0.0, "30d": 0.0}
    # stopped: the open hour was stored at stop, no flush by hand
    async with running(state, clock, ports) as daemon:
        after = (await get(daemon, "/api/v1/checks/web"))[1]
        assert after["history"] == before["history"]
        assert after["uptime_pct"] == before["uptime_pct"]
        assert daemon.uptime_pct("db") == {"24h": 0.0, "7d": 0.0, "30d": 0.0}
        assert daemon.latency_hours("web")[-1] == before["history"][-1]["latency_p95_ms"]
