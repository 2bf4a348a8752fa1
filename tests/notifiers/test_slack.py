"""Slack: the Block Kit message (the runbooks' incident template) and what the webhook receives."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from alerts.notifiers.base import Sent
from alerts.notifiers.slack import SlackConfig, SlackNotifier, build_message
from tests.fakes.receivers import Receivers, Reply, slack_problems
from tests.notifiers.samples import RUNBOOK, latency_warning, notification


def _fields(message: dict[str, Any]) -> dict[str, str]:
    """Section fields as {title: value} (`*Title*\\nvalue`)."""
    out = {}
    for block in message["blocks"]:
        for field in block.get("fields", []):
            title, _, value = field["text"].partition("\n")
            out[title.strip("*")] = value
    return out


def _header(message: dict[str, Any]) -> str:
    return next(b["text"]["text"] for b in message["blocks"] if b["type"] == "header")


def _buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_critical_follows_the_incident_template() -> None:
    message = build_message(notification("firing"))
    assert slack_problems(message) == []
    assert "CRITICAL" in message["text"] and "backend-api" in message["text"]
    assert message["text"] == "\N{LARGE RED CIRCLE} CRITICAL: backend-api: up 0 < 1 (status 503)"
    assert _header(message) == "\N{LARGE RED CIRCLE} CRITICAL: backend-api"
    fields = _fields(message)
    assert fields["Severity"] == "Critical"
    assert fields["Component"] == "backend-api (http)"
    assert fields["Impact"] == "`up 0 &lt; 1`: status 503"
    assert fields["Status"] == "Firing, not acknowledged"
    assert fields["Started"].startswith("<!date^1795000000^")
    assert fields["Started"].endswith("|2026-11-18T11:06:40.000Z>")
    assert fields["Target"] == "backend.example.com"
    [button] = _buttons(message)
    assert button["url"] == RUNBOOK
    assert button["style"] == "danger"


def test_warning_looks_different_from_critical() -> None:
    message = build_message(latency_warning())
    assert slack_problems(message) == []
    assert message["text"].startswith("\N{LARGE ORANGE CIRCLE} WARNING: backend-api")
    assert _header(message) == "\N{LARGE ORANGE CIRCLE} WARNING: backend-api"
    assert _fields(message)["Severity"] == "Warning"
    assert _fields(message)["Impact"] == "`latency_p95_ms 734 &gt; 500`"  # no reason, no colon
    assert "style" not in _buttons(message)[0]


def _headline(message: dict[str, Any]) -> str:
    """The first section's text: the line under the header."""
    return next(b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b)


def test_resolved_says_what_recovered_and_after_how_long() -> None:
    message = build_message(notification("resolved"))
    assert slack_problems(message) == []
    assert message["text"] == (
        "\N{WHITE HEAVY CHECK MARK} RESOLVED (critical): "
        "backend-api: up recovered (1, threshold 1) after 4m 12s"
    )
    assert _header(message) == "\N{WHITE HEAVY CHECK MARK} RESOLVED: backend-api"
    assert _headline(message) == "*backend-api: up recovered (1, threshold 1) after 4m 12s*"
    fields = _fields(message)
    assert fields["Impact"] == "`up recovered (1, threshold 1)`"
    assert fields["Status"] == "Resolved after 4m 12s"
    assert fields["Resolved"].endswith("|2026-11-18T11:10:52.000Z>")
    assert "&lt;" not in str(message["blocks"]) and "<" not in message["text"]


def test_resolved_without_a_duration() -> None:
    message = build_message(notification("resolved", resolved_at=None))
    assert slack_problems(message) == []
    assert message["text"] == (
        "\N{WHITE HEAVY CHECK MARK} RESOLVED (critical): backend-api: up recovered (1, threshold 1)"
    )
    assert _headline(message) == "*backend-api: up recovered (1, threshold 1)*"
    assert _fields(message)["Status"] == "Resolved"
    assert "None" not in str(message)


def test_acknowledged_is_a_short_message() -> None:
    message = build_message(notification("acknowledged"))
    assert slack_problems(message) == []
    assert "acknowledged by alice" in message["text"]
    assert "critical" in message["text"]
    assert [b["type"] for b in message["blocks"]] == ["section", "context"]
    assert "acknowledged by *alice*: _looking at the load balancer_" in message["blocks"][0]["text"]["text"]


def test_flapping_and_test_are_marked() -> None:
    flapping = build_message(notification("flapping"))
    test = build_message(notification("test"))
    assert slack_problems(flapping) == [] and slack_problems(test) == []
    assert "FLAPPING" in flapping["text"] and "notifications held" in flapping["text"]
    assert "TEST" in test["text"] and "no action needed" in test["text"]
    assert "TEST" in _header(test)


def test_mrkdwn_values_are_escaped() -> None:
    message = build_message(notification(reason="<!channel> & <http://evil|click>", labels={"a": "<b>"}))
    text = str(message["blocks"])
    assert "<!channel>" not in text and "<http://evil" not in text
    assert "&lt;!channel&gt; &amp; &lt;http://evil|click&gt;" in _fields(message)["Impact"]


def test_runbook_that_is_not_a_link_goes_to_the_context() -> None:
    message = build_message(notification(runbook="see wiki page Backend/Outage"))
    assert _buttons(message) == []
    assert "runbook: see wiki page Backend/Outage" in message["blocks"][-1]["elements"][0]["text"]
    assert slack_problems(message) == []


def test_limits_hold_for_huge_values() -> None:
    message = build_message(notification(check="c" * 300, reason="r" * 5000, labels={"k": "v" * 4000}))
    assert slack_problems(message) == []


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValidationError) as info:
        SlackConfig.model_validate({"type": "slack", "webhook_url": "hooks.slack.com/services/T/B/SECRET"})
    assert "SECRET" not in str(info.value)


async def test_webhook_receives_the_message(
    receivers: Receivers, http_session: aiohttp.ClientSession
) -> None:
    slack = await receivers.start(default=Reply(200, body="ok"), validate=slack_problems)
    url = f"{slack.url}/services/T000/B000/XXXXXXXX"
    notifier = SlackNotifier("team-chat", SlackConfig(type="slack", webhook_url=url), http_session)
    assert await notifier.send(notification("firing")) == Sent()
    [request] = await slack.wait_for(1)
    assert slack.problems == []
    assert request.path == "/services/T000/B000/XXXXXXXX"
    assert request.json == build_message(notification("firing"))
