"""Redirects (http and websocket): another origin gets none of the configured headers and no
userinfo; the same origin keeps them; `tls_days_left` is the configured host's certificate, not
the redirect target's."""

from __future__ import annotations

import base64
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.runner import run_check
from tests.fakes.servers import LoopbackServers, tls_server_context

HEADERS = {"Authorization": "Bearer t0ken-secret", "X-Api-Key": "k3y-secret"}
BASIC = "Basic " + base64.b64encode(b"user:pw-secret").decode()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def ok(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        return web.json_response({"ok": True})


def redirect_to(location: str) -> Any:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location)

    return handler


def check(session: aiohttp.ClientSession, url: str, **options: Any) -> HttpCheck:
    config = HttpCheckConfig.model_validate(
        {"name": "r", "type": "http", "url": url, "headers": HEADERS, **options}
    )
    return HttpCheck(config, CheckDeps(http=session))


async def test_another_origin_gets_no_configured_headers_and_no_userinfo(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    second = Recorder()
    other = await servers.http({"/landing": second.ok})
    first = Recorder()
    base = await servers.http(
        {"/": redirect_to(f"{other}/landing"), "/same": first.ok, "/hop": redirect_to("/same")}
    )

    cross = await run_check(check(http_session, base.replace("://", "://user:pw-secret@") + "/"))
    same = await run_check(check(http_session, base.replace("://", "://user:pw-secret@") + "/hop"))

    assert (cross.reason, same.reason) == (None, None)
    [landed] = second.seen
    assert "Authorization" not in landed and "X-Api-Key" not in landed
    assert landed["Host"] == other.removeprefix("http://")
    [kept] = first.seen
    assert kept["Authorization"] == HEADERS["Authorization"] and kept["X-Api-Key"] == HEADERS["X-Api-Key"]


async def test_userinfo_alone_stays_with_its_origin(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    second = Recorder()
    other = await servers.http({"/landing": second.ok})
    first = Recorder()
    base = await servers.http(
        {"/": redirect_to(f"{other}/landing"), "/same": first.ok, "/hop": redirect_to("/same")}
    )
    url = base.replace("://", "://user:pw-secret@")

    def plain(path: str) -> HttpCheck:
        config = HttpCheckConfig.model_validate({"name": "r", "type": "http", "url": url + path})
        return HttpCheck(config, CheckDeps(http=http_session))

    await run_check(plain("/"))
    await run_check(plain("/hop"))

    assert "Authorization" not in second.seen[0]
    assert first.seen[0]["Authorization"] == BASIC


@pytest.mark.parametrize("scheme_change", [False, True], ids=["https-to-https", "https-to-http"])
async def test_tls_days_left_is_the_configured_hosts(
    servers: LoopbackServers, tmp_path: Path, scheme_change: bool, http_session: aiohttp.ClientSession
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    second = Recorder()
    later = None if scheme_change else tls_server_context(ca, valid_for=timedelta(days=5))
    other = await servers.http({"/landing": second.ok}, ssl_context=later)
    base = await servers.http(
        {"/": redirect_to(f"{other}/landing")},
        ssl_context=tls_server_context(ca, valid_for=timedelta(days=30)),
    )

    result = await run_check(check(http_session, f"{base}/", tls_ca=str(ca_file)))

    assert result.reason is None
    assert len(second.seen) == 1
    assert result.samples["tls_days_left"] in {29, 30}


async def test_websocket_redirect_to_another_origin_drops_the_configured_headers(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    landed: list[dict[str, str]] = []

    async def quiet(connection: ServerConnection) -> None:
        await connection.wait_closed()

    def record(_connection: ServerConnection, request: Request) -> None:
        landed.append(dict(request.headers.raw_items()))

    other = await servers.websocket(quiet, process_request=record)

    def moved(connection: ServerConnection, _request: Request) -> Response:
        response = connection.respond(HTTPStatus.FOUND, "moved\n")
        response.headers["Location"] = other
        return response

    first = await servers.websocket(quiet, process_request=moved)
    config = WebSocketCheckConfig.model_validate(
        {"name": "ws", "type": "websocket", "url": first, "headers": HEADERS}
    )

    result = await run_check(WebSocketCheck(config, CheckDeps(http=http_session)))

    assert result.reason is None
    [headers] = landed
    assert "Authorization" not in headers and "X-Api-Key" not in headers
