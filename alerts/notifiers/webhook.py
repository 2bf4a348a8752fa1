"""Generic JSON webhook notifier: one POST per notification, a versioned body (SPEC section 5)."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field, field_validator

from alerts.notifiers.base import (
    STORM_EVENTS,
    Delivery,
    Notification,
    Notifier,
    NotifierConfig,
    iso,
    require_http_url,
)
from monitor.models import MaskedUrl, Secret

VERSION = "1"
ID_HEADER = "X-Monitor-Notification-Id"


class WebhookConfig(NotifierConfig):
    type: Literal["webhook"]
    url: MaskedUrl = Field(repr=False)  # repr would show its userinfo and query
    headers: dict[str, Secret] = {}

    _url = field_validator("url")(require_http_url)


def build_body(n: Notification) -> dict[str, Any]:
    """`status` is "resolved" for a resolve, else "firing" (an acknowledged or flapping alert
    still fires; a test reads as a firing alert); `event` says which notification this is.
    `summary`, `acknowledged_by` and `note` are always there (null when they do not apply), so
    that receivers can rely on one shape. A storm has a body of its own (build_storm_body)."""
    if n.event in STORM_EVENTS:
        return build_storm_body(n)
    return {
        "version": VERSION,
        "status": "resolved" if n.event == "resolved" else "firing",
        "event": n.event,
        "summary": n.summary,
        "acknowledged_by": n.acknowledged_by,
        "note": n.note,
        "alert": n.alert_fields(),
    }


def notification_id(n: Notification) -> str:
    """The same for every send of one notification (a retry, or a new leader sending it again after
    a takeover), so that a receiver can drop a repeat; another notification gets another id."""
    made = f"{n.alert_id}\0{n.event}\0{n.created_at!r}"
    return hashlib.sha256(made.encode()).hexdigest()[:32]


def build_storm_body(n: Notification) -> dict[str, Any]:
    """`event` is "storm" for the whole storm: `status` "firing" at its start and each repeat,
    "resolved" when it is over (`storm.checks` then lists those still down). `alert` is null:
    the storm stands for many alerts."""
    return {
        "version": VERSION,
        "status": "resolved" if n.event == "storm_over" else "firing",
        "event": "storm",
        "summary": n.summary,
        "acknowledged_by": None,
        "note": None,
        "alert": None,
        "storm": {
            "id": n.alert_id,
            "started_at": iso(n.started_at),
            "ended_at": iso(n.resolved_at),
            "count": n.storm_count,
            "checks": list(n.storm_checks),
            "window_s": n.storm_window_s,
        },
    }


class WebhookNotifier(Notifier):
    type = "webhook"
    config_model = WebhookConfig
    config: WebhookConfig

    async def send(self, notification: Notification) -> Delivery:
        headers = {key: value.get_secret_value() for key, value in self.config.headers.items()}
        headers[ID_HEADER] = notification_id(notification)
        return await self.post_json(self.config.url, build_body(notification), headers)
