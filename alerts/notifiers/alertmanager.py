"""Alertmanager notifier: POST {url}/api/v2/alerts, one alert named `monitor_<metric>` per notification."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from alerts.notifiers.base import (
    STORM_EVENTS,
    Delivery,
    HttpNotifierConfig,
    Notification,
    Notifier,
    Sent,
    format_number,
    iso,
    require_http_url,
)
from monitor.models import MaskedUrl

API_PATH = "/api/v2/alerts"
OWN_LABELS = ("alertname", "check", "metric", "severity")


class AlertmanagerConfig(HttpNotifierConfig):
    type: Literal["alertmanager"]
    url: MaskedUrl = Field(repr=False)  # repr would show its userinfo and query

    _url = field_validator("url")(require_http_url)


def alertname(metric: str) -> str:
    """`monitor_up`, `monitor_latency_p95_ms`: one name per kind of breach, as Prometheus rule
    names are, so that Alertmanager's usual `group_by: [alertname]` gathers the same breach
    across checks (all the checks that are down, in one group)."""
    return f"monitor_{metric}"


def label_name(key: str) -> str:
    """A valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become `_`."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return f"_{name}" if not name or name[0].isdigit() else name


def labels(n: Notification) -> dict[str, str]:
    """alertname, check, metric, severity, then the check's labels (renamed to valid names, never
    overriding those four, empty values dropped as Prometheus does). Severity being a label, a
    warning that turns critical is a new alert there; the warning one, no longer sent, ends on
    its own at Alertmanager's `resolve_timeout`."""
    out = {label_name(k): v for k, v in n.labels.items() if v and label_name(k) not in OWN_LABELS}
    out.update(alertname=alertname(n.metric), check=n.check, metric=n.metric, severity=n.severity)
    return out


def annotations(n: Notification) -> dict[str, str]:
    """`summary` is the notification's summary; `description` spells the facts out. A resolve
    says what recovered, not a comparison that reads like a breach."""
    op = "<" if n.direction == "below" else ">"
    threshold = f"{n.severity} threshold {op} {format_number(n.threshold)}"
    what = f"{n.check} ({n.check_type}{', ' + n.target if n.target else ''})"
    if n.event == "resolved":
        description = f"{what}: {n.metric} recovered ({format_number(n.value)}, {threshold})"
        if n.duration_text:
            description += f" after {n.duration_text}"
        description += f"; breaching since {iso(n.started_at)}"
        if n.resolved_at is not None:
            description += f" until {iso(n.resolved_at)}"
    else:
        value = format_number(n.value)
        description = f"{what}: {n.metric} is {value}, {threshold}, since {iso(n.started_at)}"
    if n.reason:
        description += f"; last failure: {n.reason}"
    out = {"summary": n.summary, "description": description}
    if n.runbook:
        out["runbook_url"] = n.runbook
    return out


def build_alerts(n: Notification) -> list[dict[str, Any]]:
    """The `postableAlerts` body: a list holding this notification's alert. `startsAt` is when
    the breach began; a resolve sets `endsAt` to the resolve time; a firing alert has none, so
    Alertmanager ends it after its `resolve_timeout` (5m by default) unless it is sent again, as
    Prometheus does every evaluation: give routes to this notifier a `repeat` shorter than that,
    or raise `resolve_timeout`."""
    if n.event in STORM_EVENTS:
        return build_storm_alerts(n)
    alert: dict[str, Any] = {
        "labels": labels(n),
        "annotations": annotations(n),
        "startsAt": iso(n.started_at),
    }
    if n.event == "resolved":
        alert["endsAt"] = iso(n.resolved_at if n.resolved_at is not None else n.created_at)
    return [alert]


def build_storm_alerts(n: Notification) -> list[dict[str, Any]]:
    """One alert for the whole storm, `alertname="monitor_storm"`, labelled with the storm's id;
    ended (`endsAt`) when the storm is over."""
    alert: dict[str, Any] = {
        "labels": {"alertname": "monitor_storm", "severity": "critical", "storm": n.alert_id},
        "annotations": {"summary": n.summary, "description": n.summary},
        "startsAt": iso(n.started_at),
    }
    if n.event == "storm_over":
        alert["endsAt"] = iso(n.resolved_at if n.resolved_at is not None else n.created_at)
    return [alert]


def alerts_url(base: str) -> str:
    """`{url}/api/v2/alerts`, keeping a path prefix (Alertmanager behind `--web.route-prefix`)
    and any query string of the configured URL."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + API_PATH, fragment=""))


class AlertmanagerNotifier(Notifier):
    type = "alertmanager"
    config_model = AlertmanagerConfig
    config: AlertmanagerConfig

    async def send(self, notification: Notification) -> Delivery:
        # Answers: 200 accepted, 400 a rejected alert (permanent), 5xx retry: classify_http.
        if notification.event == "acknowledged":
            return Sent()  # no counterpart: Alertmanager's own acknowledgement is a silence
        return await self.post_json(alerts_url(self.config.url), build_alerts(notification))
