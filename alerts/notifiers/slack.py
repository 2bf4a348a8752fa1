"""Slack incoming-webhook notifier: Block Kit laid out as the runbooks' incident template."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator

from alerts.notifiers.base import (
    STORM_EVENTS,
    Delivery,
    HttpNotifierConfig,
    Notification,
    Notifier,
    format_number,
    iso,
    require_http_url,
)
from monitor.models import Secret
from monitor.text import shorten

# Slack answers 200 "ok"; errors are 4xx with a short code (invalid_payload, no_service...), 429
# with Retry-After when rate limited, or 5xx ("Sending messages using incoming webhooks"): all
# classify_http's rule.
# Block Kit limits ("Reference: blocks"): beyond them Slack rejects the whole message.
HEADER_MAX = 150
TEXT_MAX = 3000
FIELD_MAX = 2000
BUTTON_TEXT_MAX = 75
URL_MAX = 3000

# (emoji, word) per event; firing uses the severity's pair. Critical and warning differ in colour
# and word so that a glance at the channel tells them apart. Unicode rather than `:shortcodes:`,
# so that Slack-compatible receivers (Mattermost, Rocket.Chat) show them too.
BADGES = {
    "critical": ("\N{LARGE RED CIRCLE}", "CRITICAL"),
    "warning": ("\N{LARGE ORANGE CIRCLE}", "WARNING"),
    "resolved": ("\N{WHITE HEAVY CHECK MARK}", "RESOLVED"),
    "acknowledged": ("\N{EYES}", "ACKNOWLEDGED"),
    "flapping": ("\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}", "FLAPPING"),
    "test": ("\N{TEST TUBE}", "TEST"),
    "storm": ("\N{THUNDER CLOUD AND RAIN}", "STORM"),
    "storm_over": ("\N{WHITE HEAVY CHECK MARK}", "STORM OVER"),
}


class SlackConfig(HttpNotifierConfig):
    type: Literal["slack"]
    webhook_url: Secret

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        require_http_url(value.get_secret_value())
        return value


def escape(text: str) -> str:
    """Slack mrkdwn needs `&`, `<` and `>` escaped ("Formatting text for app surfaces")."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _badge(n: Notification) -> tuple[str, str]:
    return BADGES[n.severity if n.event == "firing" else n.event]


def _date(ts: float) -> str:
    """A time each reader sees in their own timezone, with RFC 3339 UTC as the fallback."""
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time_secs}}|{iso(ts)}>"


def _field(title: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": shorten(f"*{title}*\n{value}", FIELD_MAX)}


def _is_link(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in ("http", "https") and len(url) <= URL_MAX  # type: ignore[arg-type]


def fallback_text(n: Notification) -> str:
    """`text`: what notifications and screen readers show; names the severity and the check."""
    emoji, word = _badge(n)
    if n.event == "firing":
        return f"{emoji} {word}: {n.summary}"
    if n.event == "resolved":
        return f"{emoji} {word} ({n.severity}): {n.summary}"
    if n.event == "acknowledged":
        who = n.acknowledged_by or "someone"
        return f"{emoji} {word} ({n.severity}): {n.check} {n.metric}, acknowledged by {who}"
    if n.event == "flapping":
        return f"{emoji} {word} ({n.severity}): {n.summary}; notifications held"
    return f"{emoji} {word} ({n.severity}): {n.summary}; a test from monitor, no action needed"


def _impact(n: Notification) -> str:
    if n.event == "resolved":
        return f"`{escape(n.recovery)}`"
    impact = f"`{escape(n.comparison)}`"
    return f"{impact}: {escape(n.reason)}" if n.reason else impact


def _status(n: Notification) -> str:
    if n.event == "resolved":
        return f"Resolved after {n.duration_text}" if n.duration_text else "Resolved"
    if n.event == "flapping":
        return "Flapping: notifications held" + (f" ({escape(n.note)})" if n.note else "")
    if n.event == "test":
        return "Test: no action needed"
    return "Firing, not acknowledged"


def _fields(n: Notification) -> list[dict[str, str]]:
    fields = [
        _field("Severity", n.severity.capitalize()),
        _field("Component", f"{escape(n.check)} ({escape(n.check_type)})"),
        _field("Impact", _impact(n)),
        _field("Status", _status(n)),
        _field("Started", _date(n.started_at)),
    ]
    if n.event == "resolved" and n.resolved_at is not None:
        fields.append(_field("Resolved", _date(n.resolved_at)))
    if n.threshold is not None:
        fields.append(_field("Threshold", f"{n.direction} {format_number(n.threshold)}"))
    if n.target:
        fields.append(_field("Target", escape(n.target)))
    return fields


def _context(n: Notification) -> dict[str, Any]:
    parts = [f"alert `{escape(n.alert_id)}`"]
    if n.labels:
        parts.append(" ".join(f"`{escape(k)}={escape(v)}`" for k, v in sorted(n.labels.items())))
    if n.runbook and not _is_link(n.runbook):
        parts.append(f"runbook: {escape(n.runbook)}")
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": shorten(" · ".join(parts), TEXT_MAX)}]}


def _runbook_button(n: Notification) -> list[dict[str, Any]]:
    if not _is_link(n.runbook):
        return []
    button = {
        "type": "button",
        "text": {"type": "plain_text", "text": "Open runbook", "emoji": True},
        "url": n.runbook,
        "action_id": "runbook",
    }
    if n.event == "firing" and n.severity == "critical":
        button["style"] = "danger"
    return [{"type": "actions", "elements": [button]}]


def _header(n: Notification) -> dict[str, Any]:
    emoji, word = _badge(n)
    text = shorten(f"{emoji} {word}: {n.check}", HEADER_MAX)
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def build_message(n: Notification) -> dict[str, Any]:
    """The incoming-webhook body: `text` fallback plus Block Kit `blocks`. Firing: the incident
    template's fields (Severity, Component, Impact, Status, Started) and a runbook button;
    resolved adds the duration; acknowledged is one short line."""
    if n.event in STORM_EVENTS:
        return build_storm_message(n)
    if n.event == "acknowledged":
        who = escape(n.acknowledged_by or "someone")
        what = f"*{escape(n.check)}* `{escape(n.metric)}` ({n.severity})"
        line = f"{_badge(n)[0]} {what} acknowledged by *{who}*"
        if n.note:
            line += f": _{escape(n.note)}_"
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": shorten(line, TEXT_MAX)}},
            _context(n),
        ]
        return {"text": fallback_text(n), "blocks": blocks}

    if n.event == "test":
        headline = f"*[TEST] {escape(n.summary)}*\nA test notification from monitor: no action needed."
    else:
        headline = f"*{escape(n.summary)}*"
    blocks = [
        _header(n),
        {"type": "section", "text": {"type": "mrkdwn", "text": shorten(headline, TEXT_MAX)}},
        {"type": "section", "fields": _fields(n)},
        *_runbook_button(n),
        _context(n),
    ]
    return {"text": fallback_text(n), "blocks": blocks}


def build_storm_message(n: Notification) -> dict[str, Any]:
    """One message for the whole storm: its summary (the count and the first checks), and when
    it began."""
    emoji, word = BADGES[n.event]
    began = f"began {_date(n.started_at)}"
    if n.resolved_at is not None:
        began += f", over {_date(n.resolved_at)}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{emoji} {word}", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{escape(n.summary)}*"[:TEXT_MAX]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": began}]},
    ]
    return {"text": f"{emoji} {word}: {n.summary}"[:TEXT_MAX], "blocks": blocks}


class SlackNotifier(Notifier):
    type = "slack"
    config_model = SlackConfig
    config: SlackConfig

    async def send(self, notification: Notification) -> Delivery:
        return await self.post_json(self.config.webhook_url.get_secret_value(), build_message(notification))
