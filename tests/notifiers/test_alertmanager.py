"""Alertmanager: the postable alert, and a round trip through the real Alertmanager's own API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from alerts.notifiers.alertmanager import (
    AlertmanagerConfig,
    AlertmanagerNotifier,
    alerts_url,
    build_alerts,
)
from alerts.notifiers.base import Failed, Sent
from tests.fakes.alertmanager import Alertmanager
from tests.fakes.receivers import Receivers, alertmanager_problems
from tests.notifiers.samples import RUNBOOK, notification


def test_firing_alert() -> None:
    [alert] = build_alerts(notification("firing"))
    assert alert == {
        "labels": {
            "alertname": "monitor_up",
            "check": "backend-api",
            "metric": "up",
            "severity": "critical",
            "team": "backend",
            "component": "api",
        },
        "annotations": {
            "summary": "backend-api: up 0 < 1 (status 503)",
            "description": "backend-api (http, backend.example.com): up is 0, critical threshold < 1, "
            "since 2026-11-18T11:06:40.000Z; last failure: status 503",
            "runbook_url": RUNBOOK,
        },
        "startsAt": "2026-11-18T11:06:40.000Z",
    }
    assert alertmanager_problems([alert]) == []


def test_resolved_alert_ends() -> None:
    [alert] = build_alerts(notification("resolved"))
    assert alert["endsAt"] == "2026-11-18T11:10:52.000Z"
    assert alert["startsAt"] == "2026-11-18T11:06:40.000Z"
    assert alert["annotations"] == {
        "summary": "backend-api: up recovered (1, threshold 1) after 4m 12s",
        "description": "backend-api (http, backend.example.com): up recovered (1, critical threshold < 1) "
        "after 4m 12s; breaching since 2026-11-18T11:06:40.000Z until 2026-11-18T11:10:52.000Z",
        "runbook_url": RUNBOOK,
    }
    assert alertmanager_problems([alert]) == []


def test_resolved_alert_without_a_duration() -> None:
    [alert] = build_alerts(notification("resolved", resolved_at=None))
    assert alert["endsAt"] == "2026-11-18T11:10:52.000Z"  # when the resolve was made
    assert alert["annotations"]["summary"] == "backend-api: up recovered (1, threshold 1)"
    assert alert["annotations"]["description"] == (
        "backend-api (http, backend.example.com): up recovered (1, critical threshold < 1); "
        "breaching since 2026-11-18T11:06:40.000Z"
    )


def test_check_labels_are_made_valid_and_never_override() -> None:
    n = notification(labels={"k8s-namespace": "prod", "9lives": "x", "severity": "low", "empty": ""})
    [alert] = build_alerts(n)
    assert alert["labels"]["k8s_namespace"] == "prod"
    assert alert["labels"]["_9lives"] == "x"
    assert alert["labels"]["severity"] == "critical"
    assert "empty" not in alert["labels"]
    assert alertmanager_problems([alert]) == []


def test_no_runbook_no_runbook_url() -> None:
    [alert] = build_alerts(notification(runbook=None))
    assert "runbook_url" not in alert["annotations"]


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        ("https://ops.example.com/alertmanager/", "https://ops.example.com/alertmanager/api/v2/alerts"),
        ("https://u:p@am.example.com?tenant=a", "https://u:p@am.example.com/api/v2/alerts?tenant=a"),
    ],
    ids=["plain", "slash", "prefix", "auth-and-query"],
)
def test_alerts_url(base: str, expected: str) -> None:
    assert alerts_url(base) == expected


async def test_acknowledged_is_a_no_op(receivers: Receivers, http_session: aiohttp.ClientSession) -> None:
    am = await receivers.start()
    notifier = AlertmanagerNotifier("am", AlertmanagerConfig(type="alertmanager", url=am.url), http_session)
    assert await notifier.send(notification("acknowledged")) == Sent()
    assert am.requests == []


# ---------------------------------------------------------------- the real Alertmanager


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    with Alertmanager(Path(tmp_path_factory.mktemp("alertmanager"))) as am:
        yield am


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_real_alertmanager_fires_then_resolves(
    alertmanager: Alertmanager, http_session: aiohttp.ClientSession
) -> None:
    check = f"api-{uuid.uuid4().hex[:8]}"  # the module's Alertmanager is shared: one check per test
    now = time.time()
    notifier = AlertmanagerNotifier(
        "am", AlertmanagerConfig(type="alertmanager", url=alertmanager.url), http_session
    )
    firing = notification(
        "firing", check=check, started_at=now - 120, created_at=now, labels={"team": "backend"}
    )
    assert await notifier.send(firing) == Sent()

    [alert] = await asyncio.to_thread(alertmanager.alerts, check=check)
    assert alert["labels"] == {
        "alertname": "monitor_up",
        "check": check,
        "metric": "up",
        "severity": "critical",
        "team": "backend",
    }
    assert alert["annotations"]["summary"] == f"{check}: up 0 < 1 (status 503)"
    assert alert["annotations"]["runbook_url"] == RUNBOOK
    assert "status 503" in alert["annotations"]["description"]
    assert alert["status"]["state"] == "active"
    assert _parse(alert["startsAt"]).timestamp() == pytest.approx(now - 120, abs=0.001)
    assert _parse(alert["endsAt"]).timestamp() > now  # still firing (until resolve_timeout)

    resolved = notification(
        "resolved",
        check=check,
        started_at=now - 120,
        created_at=now + 0.1,
        resolved_at=now,
        labels={"team": "backend"},
    )
    assert await notifier.send(resolved) == Sent()
    assert await asyncio.to_thread(alertmanager.alerts, check=check) == []  # no longer active


async def test_real_alertmanager_accepts_odd_check_labels(
    alertmanager: Alertmanager, http_session: aiohttp.ClientSession
) -> None:
    check = f"odd-{uuid.uuid4().hex[:8]}"
    notifier = AlertmanagerNotifier(
        "am", AlertmanagerConfig(type="alertmanager", url=f"{alertmanager.url}/"), http_session
    )
    n = notification(check=check, started_at=time.time(), labels={"k8s-namespace": "prod", "": "x"})
    assert await notifier.send(n) == Sent()
    [alert] = await asyncio.to_thread(alertmanager.alerts, check=check)
    assert alert["labels"]["k8s_namespace"] == "prod"


async def test_real_alertmanager_rejection_is_permanent(
    alertmanager: Alertmanager, http_session: aiohttp.ClientSession
) -> None:
    """What Alertmanager answers an invalid alert (here: a bad label name sent by hand) is a 400."""
    notifier = AlertmanagerNotifier(
        "am", AlertmanagerConfig(type="alertmanager", url=alertmanager.url), http_session
    )
    delivery = await notifier.post_json(
        f"{alertmanager.url}/api/v2/alerts", [{"labels": {"alertname": "x", "bad-name": "v"}}]
    )
    assert isinstance(delivery, Failed)
    assert delivery.reason.startswith("HTTP 400")
