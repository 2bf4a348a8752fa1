"""A storm of many checks failing at once stays cheap (SPEC section 12): the transitions of one
round reach the store in a few transactions, the outbox holds one storm row per notifier, the
logs say it once, and the API counts the alerts without a view of each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from alerts.model import AlertState, Suppression
from monitor import api
from monitor.api import build_app
from monitor.config import parse_config
from monitor.daemon import Daemon
from tests.alerts.harness import down
from tests.alerts.test_storm import NIGHT, POLICY, _checks

N = 300  # more than one slice of the API's encoding, fewer than one store round (ROUND_MAX)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon on SQLite state with its store writer running, its checks never scheduled:
    the test hands it the runs' results, all of a round at once, as the scheduler would."""
    state = f'[monitor]\nstate = "sqlite:///{tmp_path / "state.db"}"\n'
    config = parse_config(state + POLICY + _checks(N), {})
    daemon = Daemon(config, registry=CollectorRegistry())
    await daemon.store.open()
    daemon.store.start()
    try:
        yield daemon
    finally:
        await daemon._close()


def commits(daemon: Daemon) -> float:
    value = daemon.metrics.registry.get_sample_value("monitor_store_commits_total")
    assert value is not None
    return value


async def fail_round(daemon: Daemon, now: float) -> None:
    """Every check's run ends at once, refused (the scheduler starts them as tasks of their own)."""
    await asyncio.gather(
        *(daemon._record(rt, down("connection refused"), now) for rt in daemon.runtimes.values())
    )


async def test_a_storm_round_is_a_few_transactions_and_one_outbox_row_per_notifier(daemon: Daemon) -> None:
    now = NIGHT.timestamp()
    await fail_round(daemon, now)  # all pending: a storm already, nothing stored yet
    assert daemon.alerts.storm is not None
    before = commits(daemon)
    await fail_round(daemon, now + 60)  # all firing at once, swallowed by the storm
    assert commits(daemon) - before <= 4  # not one per alert
    stored = await daemon.store.load_alerts(active=True)
    alerts = [d for d in stored if d.get("kind") != "storm"]
    assert len(alerts) == N
    assert {(d["state"], d["suppressed"]) for d in alerts} == {(AlertState.FIRING, Suppression.STORM)}
    assert [d["kind"] for d in stored if d.get("kind") == "storm"] == ["storm"]
    rows = await daemon.store.pending()  # the outbox's workers are not running: nothing sent yet
    assert sorted((r.notifier, r.payload["event"], r.payload["storm_count"]) for r in rows) == [
        ("oncall", "storm", N),
        ("team-chat", "storm", N),
    ]


async def test_a_storm_is_logged_once_not_a_line_per_check(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = NIGHT.timestamp()
    await fail_round(daemon, now)
    await fail_round(daemon, now + 60)
    messages = [r.getMessage() for r in caplog.records]
    guard = daemon.config.alerts.storm
    assert guard is not None
    # Those down before the storm began have their line; no check after it, and no alert firing.
    assert messages.count("check down") == guard.checks + 1
    assert "alert firing" not in messages
    assert messages.count("storm began") == 1 and messages.count("storm notified") == 1


async def test_the_api_counts_a_storm_and_lists_it_in_slices(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "_JSON_SLICE_ITEMS", 7)  # many slices, one of them short
    now = NIGHT.timestamp()
    await fail_round(daemon, now)
    async with TestClient(TestServer(build_app(daemon))) as client:
        counted = await client.get("/api/v1/alerts", params={"metric": "up", "count": "true"})
        assert counted.status == 200
        assert await counted.json() == {"count": N, "pending": N, "warning": 0, "critical": 0}
        await fail_round(daemon, now + 60)
        counted = await client.get("/api/v1/alerts", params={"metric": "up", "count": "true"})
        assert await counted.json() == {"count": N, "pending": 0, "warning": 0, "critical": N}
        other = await client.get("/api/v1/alerts", params={"metric": "latency_ms", "count": "true"})
        assert (await other.json())["count"] == 0
        listed = await client.get("/api/v1/alerts", params={"metric": "up"})
        assert listed.status == 200 and listed.content_type == "application/json"
        body = await listed.json()
        assert list(body) == ["alerts", "storm"]
        assert body["storm"]["checks"] == N and len(body["storm"]["first"]) == min(N, 20)
        assert sorted(a["check"] for a in body["alerts"]) == sorted(daemon.runtimes)
        assert {(a["state"], a["suppressed"]) for a in body["alerts"]} == {("firing", "storm")}
        for params, error in (
            ({"count": "yes"}, 'count: "true" or "false"'),
            ({"count": "true", "state": "resolved"}, "count: only alerts not resolved are counted"),
        ):
            bad = await client.get("/api/v1/alerts", params=params)
            assert bad.status == 400 and await bad.json() == {"error": error}
