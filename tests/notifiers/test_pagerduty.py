"""PagerDuty: the Events API v2 body, field by field, and what a PagerDuty-like receiver gets."""

from __future__ import annotations

import aiohttp
import pytest

from alerts.notifiers.base import Sent
from alerts.notifiers.pagerduty import PagerDutyConfig, PagerDutyNotifier, build_event
from tests.fakes.receivers import Receivers, pagerduty_problems
from tests.notifiers.samples import RUNBOOK, T0, latency_warning, notification

KEY = "R0UTINGKEY0123456789abcdef012345"


def test_firing_event_carries_every_spec_field() -> None:
    body = build_event(notification("firing"), KEY)
    assert body == {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": "3f2a9c1e7b5d4e60",
        "payload": {
            "summary": "backend-api: up 0 < 1 (status 503)",
            "source": "backend.example.com",
            "severity": "critical",
            "timestamp": "2026-11-18T11:07:40.000Z",
            "component": "backend-api",
            "group": "backend",
            "class": "up",
            "custom_details": {
                "check": "backend-api",
                "metric": "up",
                "severity": "critical",
                "value": 0.0,
                "threshold": 1.0,
                "direction": "below",
                "since": "2026-11-18T11:06:40.000Z",
                "reason": "status 503",
                "labels": {"team": "backend", "component": "api"},
                "runbook": RUNBOOK,
            },
        },
        "links": [{"href": RUNBOOK, "text": "Runbook"}],
    }
    assert pagerduty_problems(body) == []


def test_warning_without_reason_team_or_runbook() -> None:
    body = build_event(latency_warning(labels={}, runbook=None, check_type="http"), KEY)
    assert body["payload"]["summary"] == "backend-api: latency_p95_ms 734 > 500"
    assert body["payload"]["severity"] == "warning"
    assert body["payload"]["group"] == "http"  # no team label: the check type
    assert body["payload"]["class"] == "latency_p95_ms"
    assert body["payload"]["custom_details"]["reason"] is None
    assert body["links"] == []  # no runbook, no link
    assert pagerduty_problems(body) == []


@pytest.mark.parametrize(
    ("event", "action"),
    [
        ("firing", "trigger"),
        ("resolved", "resolve"),
        ("acknowledged", "acknowledge"),
        ("flapping", "trigger"),
    ],
    ids=["firing", "resolved", "acknowledged", "flapping"],
)
def test_event_actions_share_the_alert_dedup_key(event: str, action: str) -> None:
    body = build_event(notification(event), KEY)
    assert body["event_action"] == action
    assert body["dedup_key"] == "3f2a9c1e7b5d4e60"
    assert pagerduty_problems(body) == []


def test_resolve_event_says_what_recovered_and_after_how_long() -> None:
    body = build_event(notification("resolved"), KEY)
    assert body["event_action"] == "resolve"
    assert body["dedup_key"] == "3f2a9c1e7b5d4e60"
    payload = body["payload"]
    assert payload["summary"] == "backend-api: up recovered (1, threshold 1) after 4m 12s"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-11-18T11:10:52.000Z"
    assert payload["class"] == "up"
    details = payload["custom_details"]
    assert (details["value"], details["threshold"], details["direction"]) == (1.0, 1.0, "below")
    assert details["reason"] is None
    assert details["since"] == "2026-11-18T11:06:40.000Z"
    assert pagerduty_problems(body) == []

    unknown = build_event(notification("resolved", resolved_at=None), KEY)
    assert unknown["payload"]["summary"] == "backend-api: up recovered (1, threshold 1)"


def test_flapping_summary() -> None:
    body = build_event(notification("flapping"), KEY)
    assert body["payload"]["summary"] == "backend-api: up is flapping (7 state changes in 30m)"
    assert body["payload"]["severity"] == "critical"


def test_test_event_is_marked_info_and_has_its_own_dedup_key() -> None:
    first = build_event(notification("test", created_at=T0 + 1), KEY)
    second = build_event(notification("test", created_at=T0 + 2), KEY)
    assert first["event_action"] == "trigger"
    assert first["payload"]["severity"] == "info"
    assert first["payload"]["summary"].startswith("[TEST] ")
    assert first["dedup_key"] != "3f2a9c1e7b5d4e60"
    assert first["dedup_key"] != second["dedup_key"]
    assert pagerduty_problems(first) == []


def test_long_summary_is_cut_to_pagerduty_limit() -> None:
    body = build_event(notification(reason="x" * 5000), KEY)
    assert len(body["payload"]["summary"]) == 1024
    assert body["payload"]["custom_details"]["reason"] == "x" * 5000


def test_source_falls_back_to_the_check_name() -> None:
    assert build_event(notification(target=""), KEY)["payload"]["source"] == "backend-api"


async def test_receiver_gets_trigger_then_resolve(
    receivers: Receivers, http_session: aiohttp.ClientSession
) -> None:
    pd = await receivers.start(default=202, validate=pagerduty_problems)
    config = PagerDutyConfig(type="pagerduty", routing_key=KEY, url=f"{pd.url}/v2/enqueue")
    notifier = PagerDutyNotifier("oncall", config, http_session)

    assert await notifier.send(notification("firing")) == Sent()
    assert await notifier.send(notification("resolved")) == Sent()

    trigger, resolve = await pd.wait_for(2)
    assert pd.problems == []
    assert (trigger.method, trigger.path) == ("POST", "/v2/enqueue")
    assert trigger.headers["Content-Type"].startswith("application/json")
    assert trigger.json["routing_key"] == KEY
    assert trigger.json["event_action"] == "trigger"
    assert resolve.json["event_action"] == "resolve"
    assert resolve.json["dedup_key"] == trigger.json["dedup_key"]
    assert trigger.json["payload"]["summary"] == "backend-api: up 0 < 1 (status 503)"
    assert resolve.json["payload"]["summary"] == "backend-api: up recovered (1, threshold 1) after 4m 12s"


def test_config_defaults_and_masking() -> None:
    config = PagerDutyConfig.model_validate({"type": "pagerduty", "routing_key": KEY})
    assert config.url == "https://events.pagerduty.com/v2/enqueue"
    assert config.model_dump()["routing_key"] == "***"
    assert KEY not in repr(config)
