"""HTTP notifiers through a real loopback proxy: `proxy = "env"` (the default) with HTTPS_PROXY
set, a configured proxy URL, and the TLS keys (the receivers' CA given as `tls_ca`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from alerts.notifiers.base import Notifier, Retry, Sent
from alerts.notifiers.pagerduty import PagerDutyConfig, PagerDutyNotifier
from alerts.notifiers.slack import SlackConfig, SlackNotifier
from alerts.notifiers.webhook import WebhookConfig, WebhookNotifier
from tests.fakes.proxy import LoopbackProxy, set_proxy_environment
from tests.fakes.servers import LoopbackServers, refused_port, tls_server_context
from tests.notifiers.samples import notification

pytestmark = pytest.mark.usefixtures("fresh_proxy_environment")


@pytest.fixture
async def servers() -> AsyncIterator[LoopbackServers]:
    async with LoopbackServers() as started:
        yield started


async def https_receiver(servers: LoopbackServers, tls_ca: trustme.CA, bodies: list[Any]) -> str:
    async def receive(request: web.Request) -> web.StreamResponse:
        bodies.append(json.loads(await request.read()))
        return web.json_response({"status": "success"}, status=202)

    return await servers.http({"/hook": receive}, ssl_context=tls_server_context(tls_ca))


async def test_pagerduty_slack_and_webhook_go_through_https_proxy(
    servers: LoopbackServers,
    tls_ca: trustme.CA,
    tls_ca_file: str,
    http_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies: list[Any] = []
    base = await https_receiver(servers, tls_ca, bodies)
    async with LoopbackProxy() as proxy:
        set_proxy_environment(monkeypatch, HTTPS_PROXY=proxy.url, NO_PROXY="elsewhere.example")
        notifiers: list[Notifier] = [
            PagerDutyNotifier(
                "oncall",
                PagerDutyConfig.model_validate(
                    {
                        "type": "pagerduty",
                        "routing_key": "R0UTINGKEY",
                        "url": f"{base}/hook",
                        "tls_ca": tls_ca_file,
                    }
                ),
                http_session,
            ),
            SlackNotifier(
                "chat",
                SlackConfig.model_validate(
                    {"type": "slack", "webhook_url": f"{base}/hook", "tls_ca": tls_ca_file}
                ),
                http_session,
            ),
            WebhookNotifier(
                "hook",
                WebhookConfig.model_validate(
                    {"type": "webhook", "url": f"{base}/hook", "tls_ca": tls_ca_file}
                ),
                http_session,
            ),
        ]
        deliveries = [await n.send(notification()) for n in notifiers]

    assert deliveries == [Sent(), Sent(), Sent()]
    authority = base.removeprefix("https://")
    assert [(r.method, r.target) for r in proxy.requests] == [("CONNECT", authority)] * 3
    assert bodies[0]["routing_key"] == "R0UTINGKEY"
    assert "blocks" in bodies[1]
    assert bodies[2]["alert"]["check"] == notification().check


async def test_no_proxy_or_proxy_none_goes_direct(
    servers: LoopbackServers,
    tls_ca: trustme.CA,
    tls_ca_file: str,
    http_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies: list[Any] = []
    base = await https_receiver(servers, tls_ca, bodies)
    async with LoopbackProxy() as proxy:
        set_proxy_environment(monkeypatch, HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1")
        bypassed = WebhookConfig.model_validate(
            {"type": "webhook", "url": f"{base}/hook", "tls_ca": tls_ca_file}
        )
        assert await WebhookNotifier("a", bypassed, http_session).send(notification()) == Sent()
        set_proxy_environment(monkeypatch, HTTPS_PROXY=proxy.url)
        direct = WebhookConfig.model_validate(
            {"type": "webhook", "url": f"{base}/hook", "tls_ca": tls_ca_file, "proxy": None}
        )
        assert await WebhookNotifier("b", direct, http_session).send(notification()) == Sent()
        # TOML has no null: "none" is how a config file says it.
        spelled = WebhookConfig.model_validate(
            {"type": "webhook", "url": f"{base}/hook", "tls_ca": tls_ca_file, "proxy": "none"}
        )
        assert spelled.proxy is None
        assert await WebhookNotifier("c", spelled, http_session).send(notification()) == Sent()
        through = WebhookConfig.model_validate(
            {"type": "webhook", "url": f"{base}/hook", "tls_ca": tls_ca_file}
        )
        assert await WebhookNotifier("d", through, http_session).send(notification()) == Sent()
    assert [r.method for r in proxy.requests] == ["CONNECT"]  # only the one left at "env"
    assert len(bodies) == 4


async def test_an_untrusted_receiver_fails_without_tls_ca(
    servers: LoopbackServers, tls_ca: trustme.CA, http_session: aiohttp.ClientSession
) -> None:
    base = await https_receiver(servers, tls_ca, [])
    config = WebhookConfig.model_validate({"type": "webhook", "url": f"{base}/hook", "proxy": None})
    delivery = await WebhookNotifier("hook", config, http_session).send(notification())
    assert isinstance(delivery, Retry) and delivery.reason.startswith("TLS verify failed")


async def test_a_refused_proxy_is_a_retry_naming_it(http_session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        config = WebhookConfig.model_validate(
            {
                "type": "webhook",
                "url": "https://hooks.example.com/x",
                "proxy": f"http://u:s3cretpw@127.0.0.1:{port}",
            }
        )
        assert config.model_dump()["proxy"] == f"http://***@127.0.0.1:{port}"
        delivery = await WebhookNotifier("hook", config, http_session).send(notification())
    assert delivery == Retry(f"proxy 127.0.0.1:{port}: connection refused")
