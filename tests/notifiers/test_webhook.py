"""Webhook: the versioned JSON body and the configured (secret) headers."""

from __future__ import annotations

import aiohttp
import pytest

from alerts.notifiers.base import Sent
from alerts.notifiers.webhook import WebhookConfig, WebhookNotifier, build_body
from tests.fakes.receivers import Receivers, webhook_problems
from tests.notifiers.samples import RUNBOOK, notification


def test_firing_body() -> None:
    body = build_body(notification("firing"))
    assert body == {
        "version": "1",
        "status": "firing",
        "event": "firing",
        "summary": "backend-api: up 0 < 1 (status 503)",
        "acknowledged_by": None,
        "note": None,
        "alert": {
            "id": "3f2a9c1e7b5d4e60",
            "check": "backend-api",
            "metric": "up",
            "severity": "critical",
            "value": 0.0,
            "threshold": 1.0,
            "started_at": "2026-11-18T11:06:40.000Z",
            "resolved_at": None,
            "reason": "status 503",
            "labels": {"team": "backend", "component": "api"},
            "runbook": RUNBOOK,
        },
    }
    assert webhook_problems(body) == []


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ("firing", "firing"),
        ("resolved", "resolved"),
        ("acknowledged", "firing"),
        ("flapping", "firing"),
        ("test", "firing"),
    ],
    ids=["firing", "resolved", "acknowledged", "flapping", "test"],
)
def test_status_and_event(event: str, status: str) -> None:
    body = build_body(notification(event))
    assert (body["status"], body["event"]) == (status, event)
    assert webhook_problems(body) == []


def test_resolved_sets_resolved_at() -> None:
    body = build_body(notification("resolved"))
    assert body["alert"]["resolved_at"] == "2026-11-18T11:10:52.000Z"
    assert body["summary"] == "backend-api: up recovered (1, threshold 1) after 4m 12s"
    assert (body["alert"]["value"], body["alert"]["reason"]) == (1.0, None)


def test_acknowledged_says_by_whom() -> None:
    body = build_body(notification("acknowledged"))
    assert (body["acknowledged_by"], body["note"]) == ("alice", "looking at the load balancer")


async def test_headers_are_sent(receivers: Receivers, http_session: aiohttp.ClientSession) -> None:
    hook = await receivers.start(validate=webhook_problems)
    config = WebhookConfig.model_validate(
        {"type": "webhook", "url": f"{hook.url}/monitor", "headers": {"Authorization": "Bearer t0ken"}}
    )
    assert config.model_dump()["headers"] == {"Authorization": "***"}
    notifier = WebhookNotifier("hook", config, http_session)
    assert await notifier.send(notification("resolved")) == Sent()
    [request] = await hook.wait_for(1)
    assert hook.problems == []
    assert request.path == "/monitor"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.json == build_body(notification("resolved"))
