"""The `proxy` key of the http, websocket and prometheus checks, through a real loopback proxy."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from websockets.asyncio.server import ServerConnection

from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.prometheus import PrometheusCheck, PrometheusCheckConfig
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.config import ConfigError, parse_config
from monitor.proxies import ProxyEnvironment
from monitor.runner import run_check
from tests.fakes.proxy import LoopbackProxy, set_proxy_environment
from tests.fakes.servers import LoopbackServers, json_handler, refused_port, tls_server_context

pytestmark = pytest.mark.usefixtures("fresh_proxy_environment")

BASIC = "Basic " + base64.b64encode(b"probe:pr0xy-s3cret").decode()


@pytest.fixture
async def proxy() -> AsyncIterator[LoopbackProxy]:
    async with LoopbackProxy() as started:
        yield started


def http_check(http_session: aiohttp.ClientSession, url: str, **options: Any) -> HttpCheck:
    config = HttpCheckConfig.model_validate({"name": "web", "type": "http", "url": url, **options})
    return HttpCheck(config, CheckDeps(http=http_session))


def with_credentials(proxy: LoopbackProxy) -> str:
    return f"http://probe:pr0xy-s3cret@127.0.0.1:{proxy.port}"


async def test_https_goes_through_connect_with_the_proxy_credentials(
    servers: LoopbackServers, tls_ca: trustme.CA, tls_ca_file: str, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/health": json_handler({"ok": True})}, ssl_context=tls_server_context(tls_ca))
    async with LoopbackProxy(authorization=BASIC) as proxy:
        check = http_check(http_session, f"{base}/health", proxy=with_credentials(proxy), tls_ca=tls_ca_file)
        result = await run_check(check)

    assert result.reason is None
    [connect] = proxy.requests
    assert connect.method == "CONNECT"
    assert connect.target == base.removeprefix("https://")
    assert connect.headers["proxy-authorization"] == BASIC
    assert {"connect_ms", "tls_ms", "ttfb_ms"} <= result.samples.keys()
    # The credentials are a secret: masked in dumps and known to the masking of reasons.
    assert (
        check.config._model.model_validate(
            {"name": "web", "type": "http", "url": base, "proxy": with_credentials(proxy)}
        ).model_dump()["proxy"]
        == f"http://***@127.0.0.1:{proxy.port}"
    )
    assert "pr0xy-s3cret" in check.secrets and BASIC.removeprefix("Basic ") in check.secrets


async def test_plain_http_is_forwarded_in_absolute_form(
    servers: LoopbackServers, proxy: LoopbackProxy, http_session: aiohttp.ClientSession
) -> None:
    seen: list[str] = []

    async def health(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Proxy-Authorization", "none"))
        return web.json_response({"ok": True})

    base = await servers.http({"/health": health})

    result = await run_check(http_check(http_session, f"{base}/health?x=1", proxy=proxy.url))

    assert result.reason is None
    [forwarded] = proxy.requests
    assert (forwarded.method, forwarded.target) == ("GET", f"{base}/health?x=1")
    assert seen == ["none"]


async def test_a_refused_proxy_is_named_in_the_reason(http_session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        result = await run_check(
            http_check(http_session, "https://example.invalid/", proxy=f"http://u:pw12345@127.0.0.1:{port}")
        )
    assert result.reason == f"proxy 127.0.0.1:{port}: connection refused"


async def test_a_proxy_refusing_the_tunnel_gives_its_status(http_session: aiohttp.ClientSession) -> None:
    async with LoopbackProxy(authorization=BASIC) as proxy:
        result = await run_check(http_check(http_session, "https://example.invalid/", proxy=proxy.url))
    assert result.reason == "proxy CONNECT answered 407"


async def test_env_uses_https_proxy_unless_no_proxy_names_the_host(
    servers: LoopbackServers,
    tls_ca: trustme.CA,
    tls_ca_file: str,
    proxy: LoopbackProxy,
    http_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = await servers.http({"/": json_handler({})}, ssl_context=tls_server_context(tls_ca))
    set_proxy_environment(monkeypatch, HTTPS_PROXY=proxy.url, NO_PROXY="localhost,.internal.example")
    through = await run_check(http_check(http_session, f"{base}/", proxy="env", tls_ca=tls_ca_file))
    set_proxy_environment(monkeypatch, https_proxy=proxy.url, NO_PROXY="example.com, 127.0.0.0/8")
    direct = await run_check(http_check(http_session, f"{base}/", proxy="env", tls_ca=tls_ca_file))
    unset = await run_check(http_check(http_session, f"{base}/", tls_ca=tls_ca_file))  # checks: none

    assert (through.reason, direct.reason, unset.reason) == (None, None, None)
    assert [r.method for r in proxy.requests] == ["CONNECT"]


@pytest.mark.parametrize(
    ("no_proxy", "host", "bypassed"),
    [
        ("*", "api.example.com", True),
        ("example.com", "example.com", True),
        ("example.com", "api.example.com", True),
        (".example.com", "api.example.com", True),
        ("example.com", "notexample.com", False),
        ("EXAMPLE.com", "Api.Example.COM.", True),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("::1", "::1", True),
        ("[::1]", "::1", True),
        ("a.test, b.test", "x.b.test", True),
        ("", "example.com", False),
    ],
)
def test_no_proxy_is_read_as_curl_reads_it(no_proxy: str, host: str, bypassed: bool) -> None:
    env = ProxyEnvironment.from_environ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy})
    assert env.bypassed(host) is bypassed
    assert (env.for_target(True, host) is None) is bypassed


def test_the_environment_variables_curl_reads() -> None:
    env = ProxyEnvironment.from_environ(
        {
            "http_proxy": "http://low:1",
            "HTTP_PROXY": "http://up:2",
            "HTTPS_PROXY": "http://s:3",
            "no_proxy": "a",
        }
    )
    assert (env.http and env.http.host, env.https and env.https.host, env.no_proxy) == ("low", "s", ("a",))
    fallback = ProxyEnvironment.from_environ({"ALL_PROXY": "http://all:4"})
    assert fallback.https is not None and fallback.https.port == 4
    assert ProxyEnvironment.from_environ({"HTTPS_PROXY": "socks5://x:1"}).https is None  # ignored


async def test_websocket_through_the_proxy(
    servers: LoopbackServers, tls_ca: trustme.CA, tls_ca_file: str, http_session: aiohttp.ClientSession
) -> None:
    async def pong(connection: ServerConnection) -> None:
        async for _message in connection:
            await connection.send("pong")

    url = await servers.websocket(pong, ssl_context=tls_server_context(tls_ca))
    async with LoopbackProxy(authorization=BASIC) as proxy:
        config = WebSocketCheckConfig.model_validate(
            {
                "name": "ws",
                "type": "websocket",
                "url": url,
                "send": "ping",
                "expect": "pong",
                "proxy": with_credentials(proxy),
                "tls_ca": tls_ca_file,
            }
        )
        result = await run_check(WebSocketCheck(config, CheckDeps(http=http_session)))

    assert result.reason is None
    [connect] = proxy.requests
    assert (connect.method, connect.target) == ("CONNECT", url.removeprefix("wss://").rstrip("/"))
    assert {"connect_ms", "tls_ms", "handshake_ms", "roundtrip_ms"} <= result.samples.keys()


async def test_prometheus_through_the_proxy(
    servers: LoopbackServers, proxy: LoopbackProxy, http_session: aiohttp.ClientSession
) -> None:
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [0, "7"]}}
    base = await servers.http({"/api/v1/query": json_handler(answer)})
    config = PrometheusCheckConfig.model_validate(
        {
            "name": "prom",
            "type": "prometheus",
            "url": base,
            "proxy": proxy.url,
            "queries": [{"metric": "cpu_pct", "promql": "up"}],
        }
    )
    result = await run_check(PrometheusCheck(config, CheckDeps(http=http_session)))

    assert result.samples["cpu_pct"] == 7
    [forwarded] = proxy.requests
    assert forwarded.method == "GET" and forwarded.target.startswith(f"{base}/api/v1/query?query=up")


async def test_prometheus_names_a_refused_proxy(http_session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        config = PrometheusCheckConfig.model_validate(
            {
                "name": "prom",
                "type": "prometheus",
                "url": "http://prometheus.invalid:9090",
                "proxy": f"http://127.0.0.1:{port}",
                "queries": [{"metric": "cpu_pct", "promql": "up"}],
            }
        )
        result = await run_check(PrometheusCheck(config, CheckDeps(http=http_session)))
    assert result.reason == f"cpu_pct: proxy 127.0.0.1:{port}: connection refused"


def test_a_bad_proxy_url_names_the_key_and_never_echoes_it() -> None:
    text = "\n".join(
        [
            '[[checks]]\nname = "a"\ntype = "tcp"\nhost = "h"\nport = 1',
            '[[checks]]\nname = "b"\ntype = "tcp"\nhost = "h"\nport = 1',
            '[[checks]]\nname = "c"\ntype = "http"\nurl = "https://x.example"\nproxy = "socks5://u:hunter22@p:1"',
        ]
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})
    message = str(caught.value)
    assert "checks[2].proxy: invalid proxy" in message
    assert "hunter22" not in message
