"""Each notifier's payload for a storm (SPEC section 12): one notification for many checks down."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from alerts.model import Storm
from alerts.notifiers import alertmanager, email, pagerduty, slack, webhook
from alerts.notifiers.base import Notification
from tests.fakes.receivers import alertmanager_problems, pagerduty_problems, slack_problems, webhook_problems
from tests.notifiers.samples import T0

NAMES = [f"svc-{i:02d}" for i in range(40)]
SUMMARY = "storm: 40 checks down in 1m: " + ", ".join(NAMES[:20]) + ", ... and 20 more"


def storm(event: str = "storm", names: list[str] = NAMES) -> Notification:
    s = Storm(0, T0, members=dict.fromkeys(names))
    if event == "storm_over":
        s.over_at = T0 + 600
    return s.notification(event, T0 + 60, 60.0)  # type: ignore[arg-type]


def test_summary_names_the_count_and_the_first_20_checks() -> None:
    n = storm()
    assert n.summary == SUMMARY
    assert n.subject == f"[STORM] {SUMMARY}"
    many = storm(names=[f"c{i}" for i in range(2814)])
    assert many.summary.startswith("storm: 2,814 checks down in 1m: c0, c1, ")
    assert many.summary.endswith(", c19, ... and 2,794 more")
    over = storm("storm_over", NAMES[:3])
    assert over.summary == "storm over: 3 checks still down: svc-00, svc-01, svc-02"
    assert storm("storm_over", []).summary == "storm over: no check still down"


def test_notification_round_trips_through_the_outbox_json() -> None:
    n = storm()
    assert Notification.from_json(n.to_json()) == n


@pytest.mark.parametrize(
    ("event", "action"), [("storm", "trigger"), ("storm_over", "resolve")], ids=["start", "over"]
)
def test_pagerduty_one_incident_for_the_storm(event: str, action: str) -> None:
    body = pagerduty.build_event(storm(event), "key")
    assert pagerduty_problems(body) == []
    assert body["event_action"] == action
    assert body["dedup_key"] == "storm-0-2026-11-18T11:06:40.000Z"
    assert body["payload"]["custom_details"]["checks_down"] == 40
    if event == "storm":
        assert body["payload"]["summary"] == SUMMARY


def test_slack_one_message() -> None:
    body = slack.build_message(storm())
    assert slack_problems(body) == []
    assert "STORM" in body["text"] and "40 checks down" in body["text"]
    over = slack.build_message(storm("storm_over", NAMES[:2]))
    assert slack_problems(over) == []
    assert "STORM OVER" in over["text"] and "svc-00, svc-01" in over["text"]


@pytest.mark.parametrize(
    ("event", "status"), [("storm", "firing"), ("storm_over", "resolved")], ids=["start", "over"]
)
def test_webhook_event_storm_with_status(event: str, status: str) -> None:
    body = webhook.build_body(storm(event))
    assert webhook_problems(body) == []
    assert (body["event"], body["status"], body["alert"]) == ("storm", status, None)
    assert body["storm"]["count"] == 40
    assert body["storm"]["checks"] == NAMES[:20]
    assert body["storm"]["id"] == "storm-0-2026-11-18T11:06:40.000Z"
    assert (body["storm"]["ended_at"] is None) is (event == "storm")


def test_alertmanager_one_monitor_storm_alert() -> None:
    [alert] = alertmanager.build_alerts(storm())
    assert alertmanager_problems([alert]) == []
    assert alert["labels"]["alertname"] == "monitor_storm"
    assert alert["annotations"]["summary"] == SUMMARY
    assert "endsAt" not in alert
    [ended] = alertmanager.build_alerts(storm("storm_over", NAMES[:2]))
    assert ended["endsAt"] == "2026-11-18T11:16:40.000Z"
    assert ended["labels"] == alert["labels"]  # the same alert, ended


def test_email_one_mail() -> None:
    config = email.EmailConfig.model_validate(
        {
            "type": "email",
            "host": "smtp.example.com",
            "from": "monitor@example.com",
            "to": ["ops@example.com"],
        }
    )
    msg = email.build_message(storm(), config)
    parsed = message_from_bytes(msg.as_bytes(), policy=default_policy)
    assert parsed["Subject"] == f"[STORM] {SUMMARY}"
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Checks down:" in text and "40" in text and "svc-19" in text
    html_part = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "svc-00" in html_part
