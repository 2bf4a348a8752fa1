"""Every HTTP notifier against a scripted receiver: status -> outcome, network faults, and no secret
in any delivery reason or log record, whatever the receiver echoes back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import pytest

from alerts.notifiers.alertmanager import AlertmanagerConfig, AlertmanagerNotifier
from alerts.notifiers.base import Delivery, Failed, Notifier, Retry, Sent, deliver
from alerts.notifiers.pagerduty import PagerDutyConfig, PagerDutyNotifier
from alerts.notifiers.slack import SlackConfig, SlackNotifier
from alerts.notifiers.webhook import WebhookConfig, WebhookNotifier
from tests.fakes.receivers import (
    Receivers,
    Reply,
    Validator,
    alertmanager_problems,
    pagerduty_problems,
    slack_problems,
    webhook_problems,
)
from tests.fakes.servers import refused_port
from tests.notifiers.samples import notification

ROUTING_KEY = "R0UTINGKEYsecret0123456789abcdef"
SLACK_TOKEN = "SLACKSECRETxoxo0123456789"
HOOK_PASSWORD = "HOOKPASSsecret42"
HOOK_QUERY = "QUERYSECRET7777"
HOOK_HEADER = "HEADERSECRET9999"
AM_PASSWORD = "AMPASSsecret31337"


@dataclass(frozen=True)
class Kind:
    """How to build one notifier type against a receiver at `base` (http://127.0.0.1:port)."""

    make: Callable[[str, str, aiohttp.ClientSession], Notifier]  # (base, timeout, session)
    validate: Validator
    secrets: tuple[str, ...]


def _pagerduty(base: str, timeout: str, http: aiohttp.ClientSession) -> Notifier:
    config = PagerDutyConfig.model_validate(
        {"type": "pagerduty", "routing_key": ROUTING_KEY, "url": f"{base}/v2/enqueue", "timeout": timeout}
    )
    return PagerDutyNotifier("oncall", config, http)


def _slack(base: str, timeout: str, http: aiohttp.ClientSession) -> Notifier:
    url = f"{base}/services/T0AAAA/B0BBBB/{SLACK_TOKEN}"
    config = SlackConfig.model_validate({"type": "slack", "webhook_url": url, "timeout": timeout})
    return SlackNotifier("team-chat", config, http)


def _webhook(base: str, timeout: str, http: aiohttp.ClientSession) -> Notifier:
    host = base.removeprefix("http://")
    config = WebhookConfig.model_validate(
        {
            "type": "webhook",
            "url": f"http://hook:{HOOK_PASSWORD}@{host}/hook?token={HOOK_QUERY}",
            "headers": {"X-Api-Key": HOOK_HEADER},
            "timeout": timeout,
        }
    )
    return WebhookNotifier("hook", config, http)


def _alertmanager(base: str, timeout: str, http: aiohttp.ClientSession) -> Notifier:
    host = base.removeprefix("http://")
    config = AlertmanagerConfig.model_validate(
        {"type": "alertmanager", "url": f"http://am:{AM_PASSWORD}@{host}", "timeout": timeout}
    )
    return AlertmanagerNotifier("am", config, http)


KINDS = {
    "pagerduty": Kind(_pagerduty, pagerduty_problems, (ROUTING_KEY,)),
    "slack": Kind(_slack, slack_problems, (SLACK_TOKEN,)),
    "webhook": Kind(_webhook, webhook_problems, (HOOK_PASSWORD, HOOK_QUERY, HOOK_HEADER)),
    "alertmanager": Kind(_alertmanager, alertmanager_problems, (AM_PASSWORD,)),
}

# id: (reply, outcome, reason, Retry.after_s)
STATUSES: dict[str, tuple[Reply, type[Delivery], str | None, float | None]] = {
    "200": (Reply(200, body="ok"), Sent, None, None),
    "202": (Reply(202, body={"status": "success"}), Sent, None, None),
    "429-retry-after": (Reply(429, headers={"Retry-After": "7"}), Retry, "HTTP 429", 7.0),
    "500": (Reply(500, body="internal error"), Retry, "HTTP 500: internal error", None),
    "503": (Reply(503), Retry, "HTTP 503", None),
    "400": (Reply(400, body="invalid_payload"), Failed, "HTTP 400: invalid_payload", None),
    "401": (Reply(401), Failed, "HTTP 401", None),
    "404": (Reply(404, body="no_service"), Failed, "HTTP 404: no_service", None),
}

CASES = [(kind, status) for kind in KINDS for status in STATUSES]


@pytest.mark.parametrize(("kind", "status"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
async def test_status_to_outcome(
    kind: str, status: str, receivers: Receivers, http_session: aiohttp.ClientSession
) -> None:
    reply, outcome, reason, after_s = STATUSES[status]
    receiver = await receivers.start([reply], validate=KINDS[kind].validate)
    notifier = KINDS[kind].make(receiver.url, "5s", http_session)

    delivery = await deliver(notifier, notification())

    assert receiver.problems == []
    assert len(receiver.requests) == 1  # exactly one attempt
    assert isinstance(delivery, outcome), delivery
    if isinstance(delivery, Retry | Failed):
        assert delivery.reason == reason
    if isinstance(delivery, Retry):
        assert delivery.after_s == after_s


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
async def test_connection_refused_retries(kind: str, http_session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        notifier = KINDS[kind].make(f"http://127.0.0.1:{port}", "5s", http_session)
        delivery = await deliver(notifier, notification())
    assert delivery == Retry("connection refused")  # the checks' wording (monitor.neterrors)


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
async def test_hanging_receiver_times_out(
    kind: str, receivers: Receivers, http_session: aiohttp.ClientSession
) -> None:
    receiver = await receivers.start(default=Reply.hang())
    notifier = KINDS[kind].make(receiver.url, "200ms", http_session)
    delivery = await deliver(notifier, notification())
    assert delivery == Retry("timeout after 200ms")


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
async def test_no_secret_in_reasons_or_logs(
    kind: str,
    receivers: Receivers,
    http_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = KINDS[kind]
    echo = await receivers.start([Reply.echo_request(404), Reply.echo_request(500)])
    hang = await receivers.start(default=Reply.hang())
    deliveries = [
        await deliver(spec.make(echo.url, "5s", http_session), notification()),  # 404 echoing the request
        await deliver(spec.make(echo.url, "5s", http_session), notification()),  # 500 echoing it
        await deliver(spec.make(hang.url, "200ms", http_session), notification()),
    ]
    with refused_port() as port:
        deliveries.append(
            await deliver(spec.make(f"http://127.0.0.1:{port}", "5s", http_session), notification())
        )

    # A bug whose exception message quotes the request: deliver() logs it, redacted.
    notifier = spec.make(echo.url, "5s", http_session)

    def explode(url: str, **kwargs: object) -> None:
        raise ValueError(f"cannot post to {url} with {kwargs}")

    monkeypatch.setattr(http_session, "post", explode)
    deliveries.append(await deliver(notifier, notification()))

    reasons = [d.reason for d in deliveries if isinstance(d, Retry | Failed)]
    assert len(reasons) == 5
    assert "***" in reasons[0] and "***" in reasons[1]  # the secrets were echoed, and masked
    assert "notifier raised" in caplog.text and "***" in caplog.text
    for secret in spec.secrets:
        for reason in reasons:
            assert secret not in reason
        assert secret not in caplog.text
        assert secret not in repr(notifier.config)
        assert secret not in notifier.config.model_dump_json()
