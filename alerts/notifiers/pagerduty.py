"""PagerDuty Events API v2 notifier: one event per notification, deduplicated on the alert id."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from alerts.notifiers.base import (
    STORM_EVENTS,
    Delivery,
    HttpNotifierConfig,
    Notification,
    Notifier,
    iso,
    require_http_url,
)
from monitor.models import MaskedUrl, Secret
from monitor.text import shorten

# Answers (PagerDuty "Events API v2 overview", response codes): 202 accepted, 400 invalid event
# (permanent), 429 throttled and 5xx retry: exactly classify_http's rule.
ACTIONS = {
    "firing": "trigger",
    "flapping": "trigger",
    "test": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
    "storm": "trigger",
    "storm_over": "resolve",
}
SUMMARY_MAX = 1024  # PagerDuty truncates longer summaries; we cut first and say so with "…"
DEDUP_KEY_MAX = 255


class PagerDutyConfig(HttpNotifierConfig):
    type: Literal["pagerduty"]
    routing_key: Secret
    url: MaskedUrl = Field(default="https://events.pagerduty.com/v2/enqueue", repr=False)

    _url = field_validator("url")(require_http_url)


def dedup_key(n: Notification) -> str:
    """The alert id (stable across restarts). A test gets one of its own, so that it never
    touches a real incident (it stays open in PagerDuty until resolved by hand)."""
    if n.event == "test":
        prefix = n.alert_id if n.alert_id.startswith("monitor-test") else f"monitor-test-{n.alert_id}"
        return f"{prefix[: DEDUP_KEY_MAX - 20]}-{round(n.created_at * 1000)}"
    return n.alert_id[:DEDUP_KEY_MAX]


def summary(n: Notification) -> str:
    text = f"[TEST] {n.summary}" if n.event == "test" else n.summary
    return shorten(text, SUMMARY_MAX)


def custom_details(n: Notification) -> dict[str, Any]:
    """The alert's facts (SPEC section 5), shown as a table on the incident."""
    fields = n.alert_fields()
    return {
        **{key: fields[key] for key in ("check", "metric", "severity", "value", "threshold")},
        "direction": n.direction,
        "since": fields["started_at"],
        **{key: fields[key] for key in ("reason", "labels", "runbook")},
    }


def build_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for one notification. PagerDuty reads `payload` and `links` on
    triggers only; they go with every action anyway, so that each event is complete on its own
    for whatever else reads it (proxies, logs, tests)."""
    if n.event in STORM_EVENTS:
        return build_storm_event(n, routing_key)
    return {
        "routing_key": routing_key,
        "event_action": ACTIONS[n.event],
        "dedup_key": dedup_key(n),
        "payload": {
            "summary": summary(n),
            "source": n.target or n.check,  # PagerDuty requires a non-empty source
            "severity": "info" if n.event == "test" else n.severity,
            "timestamp": iso(n.created_at),  # when monitor generated this event
            "component": n.check,
            "group": n.labels.get("team") or n.check_type,
            "class": n.metric,
            "custom_details": custom_details(n),
        },
        "links": [{"href": n.runbook, "text": "Runbook"}] if n.runbook else [],
    }


def build_storm_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """One incident for the whole storm: its dedup_key is the storm's id (`storm-<shard>-<start>`),
    triggered at the start (again, with the new count, at each repeat), resolved when it is over."""
    return {
        "routing_key": routing_key,
        "event_action": ACTIONS[n.event],
        "dedup_key": n.alert_id[:DEDUP_KEY_MAX],
        "payload": {
            "summary": summary(n),
            "source": "monitor",
            "severity": "critical",
            "timestamp": iso(n.created_at),
            "component": "monitor",
            "group": "storm",
            "class": "storm",
            "custom_details": {
                "checks_down": n.storm_count,
                "checks": list(n.storm_checks),
                "window": n.storm_window_s,
                "since": iso(n.started_at),
                "over_at": iso(n.resolved_at),
            },
        },
        "links": [],
    }


class PagerDutyNotifier(Notifier):
    type = "pagerduty"
    config_model = PagerDutyConfig
    config: PagerDutyConfig

    async def send(self, notification: Notification) -> Delivery:
        body = build_event(notification, self.config.routing_key.get_secret_value())
        return await self.post_json(self.config.url, body)
