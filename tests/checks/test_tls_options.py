"""The TLS keys (`tls_ca`, `tls_cert` + `tls_key`, `tls_server_name`, `tls_verify`) on the http,
websocket and prometheus checks, against real loopback TLS servers made with trustme."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from websockets.asyncio.server import ServerConnection

from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.prometheus import PrometheusCheck, PrometheusCheckConfig
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.config import ConfigError, parse_config
from monitor.runner import run_check
from tests.fakes.servers import HOST, LoopbackServers, json_handler


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(tmp_path: Path, ca: trustme.CA) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or (HOST,))).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def http_check(session: aiohttp.ClientSession, url: str, **options: Any) -> HttpCheck:
    config = HttpCheckConfig.model_validate({"name": "web", "type": "http", "url": url, **options})
    return HttpCheck(config, CheckDeps(http=session))


async def test_tls_ca_is_trusted_instead_of_the_system_store(
    servers: LoopbackServers, ca: trustme.CA, ca_file: str, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": json_handler({})}, ssl_context=server_context(ca))

    trusted = await run_check(http_check(http_session, f"{base}/", tls_ca=ca_file))
    system = await run_check(http_check(http_session, f"{base}/"))

    assert trusted.reason is None and trusted.samples["tls_days_left"] > 0
    assert system.reason == "TLS verify failed: unable to get local issuer certificate"


async def test_a_server_requiring_a_client_certificate(
    servers: LoopbackServers,
    ca: trustme.CA,
    ca_file: str,
    tmp_path: Path,
    http_session: aiohttp.ClientSession,
) -> None:
    clients = trustme.CA()
    client = clients.issue_cert("monitor-probe@example.com")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    context = server_context(ca, client_ca=clients)
    base = await servers.http({"/": json_handler({})}, ssl_context=context)
    url = await servers.websocket(_pong, ssl_context=context)

    without = await run_check(http_check(http_session, f"{base}/", tls_ca=ca_file))
    with_cert = await run_check(
        http_check(http_session, f"{base}/", tls_ca=ca_file, tls_cert=str(cert), tls_key=str(key))
    )
    ws_config = WebSocketCheckConfig.model_validate(
        {
            "name": "ws",
            "type": "websocket",
            "url": url,
            "tls_ca": ca_file,
            "tls_cert": str(cert),
            "tls_key": str(key),
        }
    )
    ws = await run_check(WebSocketCheck(ws_config, CheckDeps(http=http_session)))

    assert without.reason is not None and not without.up  # the server refuses the handshake
    assert with_cert.reason is None
    assert ws.reason is None


async def test_tls_server_name_for_a_server_reached_by_address(
    servers: LoopbackServers, ca: trustme.CA, ca_file: str, http_session: aiohttp.ClientSession
) -> None:
    context = server_context(ca, "api.internal.example")
    asked: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: asked.append(name)  # type: ignore[func-returns-value]
    base = await servers.http({"/": json_handler({})}, ssl_context=context)

    named = await run_check(
        http_check(http_session, f"{base}/", tls_ca=ca_file, tls_server_name="api.internal.example")
    )
    unnamed = await run_check(http_check(http_session, f"{base}/", tls_ca=ca_file))

    assert named.reason is None
    assert unnamed.reason is not None and unnamed.reason.startswith("TLS verify failed: ")
    assert asked[0] == "api.internal.example"


async def test_prometheus_with_its_own_ca_and_server_name(
    servers: LoopbackServers, ca: trustme.CA, ca_file: str, http_session: aiohttp.ClientSession
) -> None:
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [0, "5"]}}
    context = server_context(ca, "prometheus.internal.example")
    base = await servers.http({"/api/v1/query": json_handler(answer)}, ssl_context=context)
    table = {
        "name": "prom",
        "type": "prometheus",
        "url": base,
        "tls_ca": ca_file,
        "tls_server_name": "prometheus.internal.example",
        "queries": [{"metric": "n", "promql": "up"}],
    }
    result = await run_check(
        PrometheusCheck(PrometheusCheckConfig.model_validate(table), CheckDeps(http=http_session))
    )
    assert result.reason is None and result.samples["n"] == 5


async def test_tls_verify_false_accepts_any_certificate(
    servers: LoopbackServers, ca: trustme.CA, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": json_handler({})}, ssl_context=server_context(ca, "elsewhere.example"))
    result = await run_check(http_check(http_session, f"{base}/", tls_verify=False))
    assert result.reason is None


def test_one_context_per_distinct_setting(ca_file: str, http_session: aiohttp.ClientSession) -> None:
    first = http_check(http_session, "https://a.example/", tls_ca=ca_file)
    second = http_check(http_session, "https://b.example/", tls_ca=ca_file, tls_server_name="b.internal")
    other = http_check(http_session, "https://c.example/")
    assert first._request._context is second._request._context
    assert first._request._context is not other._request._context


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        (
            'tls_ca = "/nonexistent/ca.pem"',
            "checks[0].tls_ca: cannot load CA file: No such file or directory",
        ),
        ('tls_key = "/nonexistent/k.pem"', "checks[0]: tls_key needs tls_cert"),
        (
            'tls_cert = "/nonexistent/c.pem"',
            "checks[0].tls_cert: cannot load client certificate: No such file",
        ),
        ('tls_server_name = "a b"', "checks[0].tls_server_name: invalid server name"),
    ],
)
def test_bad_tls_keys_name_their_key(keys: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[[checks]]\nname = "web"\ntype = "http"\nurl = "https://x.example"\n{keys}\n', {})
    assert str(caught.value).startswith(error)


async def _pong(connection: ServerConnection) -> None:
    async for _message in connection:
        await connection.send("pong")
