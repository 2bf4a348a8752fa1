"""The contract's helpers: classifiers, Retry-After, Notification texts, secret redaction."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from alerts.notifiers.base import (
    Delivery,
    Failed,
    Notification,
    Notifier,
    NotifierConfig,
    Retry,
    Sent,
    classify_http,
    classify_smtp,
    deliver,
    format_number,
    human_duration,
    parse_retry_after,
    redact,
    require_http_url,
)
from alerts.notifiers.webhook import WebhookConfig, WebhookNotifier
from monitor.secrets import secret_values
from tests.fakes.receivers import Receivers, Reply
from tests.notifiers.samples import latency_warning, notification


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Sent),
        (202, Sent),
        (204, Sent),
        (400, Failed),
        (401, Failed),
        (403, Failed),
        (404, Failed),
        (410, Failed),
        (413, Failed),
        (429, Retry),
        (500, Retry),
        (502, Retry),
        (503, Retry),
        (504, Retry),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else v.__name__,
)
def test_classify_http(status: int, outcome: type[Delivery]) -> None:
    assert isinstance(classify_http(status), outcome)


def test_classify_http_reason_and_retry_after() -> None:
    assert classify_http(429, "slow down", "12") == Retry("HTTP 429: slow down", 12.0)
    assert classify_http(400, "  invalid\n payload  ") == Failed("HTTP 400: invalid payload")
    assert len(classify_http(500, "x" * 1000).reason) < 220  # bodies are cut short


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(421, Retry), (450, Retry), (451, Retry), (454, Retry), (535, Failed), (550, Failed), (554, Failed)],
    ids=["421", "450", "451", "454", "535", "550", "554"],
)
def test_classify_smtp(code: int, outcome: type[Delivery]) -> None:
    assert isinstance(classify_smtp(code, "text"), outcome)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("Wed, 18 Nov 2026 11:08:40 GMT", 60.0),  # an HTTP date, 60 s after "now"
        ("Wed, 18 Nov 2026 11:00:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
    ],
    ids=["none", "empty", "seconds", "spaces", "http-date", "past-date", "garbage"],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_795_000_060.0) == expected


def test_notification_texts() -> None:
    firing = notification("firing")
    assert firing.comparison == "up 0 < 1"
    assert firing.summary == "backend-api: up 0 < 1 (status 503)"
    assert firing.subject == "[CRITICAL] backend-api: up 0 < 1 (status 503)"
    assert latency_warning().subject == "[WARNING] backend-api: latency_p95_ms 734 > 500"
    assert latency_warning(value=1234.5).comparison == "latency_p95_ms 1234.5 > 500"
    assert notification("resolved").subject == (
        "[RESOLVED] backend-api: up recovered (1, threshold 1) after 4m 12s"
    )
    assert notification("resolved").duration_text == "4m 12s"
    assert (
        notification("flapping").subject == "[FLAPPING] backend-api: up is flapping (7 state changes in 30m)"
    )
    assert notification("test").tag == "TEST"
    assert notification("acknowledged").tag == "ACKNOWLEDGED"


@pytest.mark.parametrize(
    ("overrides", "summary"),
    [
        ({}, "backend-api: up recovered (1, threshold 1) after 4m 12s"),
        ({"resolved_at": None}, "backend-api: up recovered (1, threshold 1)"),
        ({"value": None}, "backend-api: up recovered (threshold 1) after 4m 12s"),
        ({"value": None, "threshold": None}, "backend-api: up recovered after 4m 12s"),
        (
            {"metric": "latency_p95_ms", "value": 412.5, "threshold": 500.0, "direction": "above"},
            "backend-api: latency_p95_ms recovered (412.5, threshold 500) after 4m 12s",
        ),
        # A reason left on a resolve is not shown: the resolve is not a failure.
        ({"reason": "status 503"}, "backend-api: up recovered (1, threshold 1) after 4m 12s"),
    ],
    ids=["up", "duration-unknown", "no-value", "nothing-measured", "above", "with-reason"],
)
def test_resolved_summary_says_what_recovered_and_after_how_long(
    overrides: dict[str, object], summary: str
) -> None:
    resolved = notification("resolved", **overrides)
    assert resolved.summary == summary
    assert resolved.subject == f"[RESOLVED] {summary}"
    assert "<" not in resolved.summary and ">" not in resolved.summary


def test_notification_round_trips_through_json() -> None:
    n = notification("acknowledged")
    assert Notification.from_json(n.to_json()) == n


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.6, "1m"), (252, "4m 12s"), (3600, "1h"), (7500, "2h 5m"), (273600, "3d 4h")],
    ids=["zero", "round-up", "minutes", "hour", "hours", "days"],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_format_number() -> None:
    assert [format_number(v) for v in (None, 0.0, 1.0, 12.5, 1234.0)] == ["n/a", "0", "1", "12.5", "1234"]


def test_notifier_secrets_cover_every_secret_place(http_session: aiohttp.ClientSession) -> None:
    config = WebhookConfig.model_validate(
        {
            "type": "webhook",
            "url": "https://user:pa55word@hooks.example.com/in?token=abc123",
            "headers": {"Authorization": "Bearer t0k3n"},
        }
    )
    values = secret_values(config)
    assert {"user:pa55word", "pa55word", "token=abc123", "Bearer t0k3n"} <= values
    assert "dXNlcjpwYTU1d29yZA==" in values  # Basic auth made from the userinfo
    assert "/in" not in values  # the path of a plain URL is not secret
    secrets = WebhookNotifier("hook", config, http_session).secrets
    text = "POST /in?token=abc123 Authorization: Bearer t0k3n as user:pa55word, then pa55word"
    assert redact(text, secrets) == "POST /in?*** Authorization: *** as ***, then ***"


def test_secret_url_path_is_secret() -> None:
    class Config(NotifierConfig):
        type: str = "x"
        webhook_url: SecretStr

    secrets = secret_values(Config(webhook_url=SecretStr("https://hooks.slack.com/services/T0/B0/XyZ")))
    assert "/services/T0/B0/XyZ" in secrets
    assert redact("404 for /services/T0/B0/XyZ", secrets) == "404 for ***"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "example.com/hook", "http:///nohost", "https://example.com:99999/", ""],
    ids=["ftp", "no-scheme", "no-host", "bad-port", "empty"],
)
def test_require_http_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="invalid URL") as info:
        require_http_url(url)
    assert url not in str(info.value) or not url


async def test_secret_cut_by_truncation_is_still_masked(
    receivers: Receivers, http_session: aiohttp.ClientSession
) -> None:
    """Reasons keep 200 characters of a body; a secret straddling that edge must not leak in part."""
    secret = "HEADERSECRET-0123456789"
    receiver = await receivers.start([Reply(400, body="x" * 190 + secret + "y" * 100)])
    config = WebhookConfig.model_validate(
        {"type": "webhook", "url": receiver.url, "headers": {"X-Api-Key": secret}}
    )
    delivery = await deliver(WebhookNotifier("hook", config, http_session), notification())
    assert isinstance(delivery, Failed)
    assert "HEADERSEC" not in delivery.reason
    assert "***" in delivery.reason


class _Broken(Notifier):
    type = "broken"
    config_model = NotifierConfig

    async def send(self, notification: Notification) -> Delivery:
        raise RuntimeError("boom")


async def test_a_raising_notifier_retries(http_session: aiohttp.ClientSession) -> None:
    notifier = _Broken("b", NotifierConfig(type="broken"), http_session)
    assert await deliver(notifier, notification()) == Retry("internal error: RuntimeError")
