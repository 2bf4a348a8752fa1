"""WebSocketCheck against real loopback websockets servers, run through run_check's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
import trustme
from pydantic import ValidationError
from websockets.asyncio.server import Request, Response, ServerConnection

from checks.base import CheckDeps
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.runner import run_check
from tests.fakes.servers import HOST, LoopbackServers, refused_port, tls_server_context

SECRET = "Bearer ws-s3cr3t"


MakeCheck = Callable[..., WebSocketCheck]


@pytest.fixture
def make_check(http_session: aiohttp.ClientSession) -> MakeCheck:
    """Builds a check with the deps the daemon gives every check (its one session)."""
    deps = CheckDeps(http=http_session)

    def make(url: str, **options: Any) -> WebSocketCheck:
        table = {"name": "collab-ws", "type": "websocket", "url": url, **options}
        return WebSocketCheck(WebSocketCheckConfig.model_validate(table), deps)

    return make


async def ping_pong(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send("pong" if message == '{"type":"ping"}' else f"echo {message}")


async def test_handshake_only(servers: LoopbackServers, make_check: MakeCheck) -> None:
    url = await servers.websocket(ping_pong)

    result = await run_check(make_check(url))

    assert (result.up, result.reason) == (True, None)
    assert result.samples["handshake_ms"] > 0
    assert "roundtrip_ms" not in result.samples


async def test_send_and_expect_round_trip(servers: LoopbackServers, make_check: MakeCheck) -> None:
    closes: list[int | None] = []

    async def handler(connection: ServerConnection) -> None:
        await ping_pong(connection)
        closes.append(connection.close_code)

    url = await servers.websocket(handler)

    result = await run_check(make_check(url, send='{"type":"ping"}', expect="^pong$"))

    assert (result.up, result.reason) == (True, None)
    assert result.samples["roundtrip_ms"] > 0
    assert result.samples["handshake_ms"] <= result.latency_ms
    await asyncio.sleep(0.05)  # let the server's handler see the close
    assert closes == [1000]  # closed cleanly, not dropped


async def test_expect_without_send_waits_for_the_first_message(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    async def greeter(connection: ServerConnection) -> None:
        await connection.send("hello v2")
        await connection.wait_closed()

    url = await servers.websocket(greeter)

    result = await run_check(make_check(url, expect=r"hello v\d"))

    assert result.up
    assert "roundtrip_ms" in result.samples


async def test_send_without_expect_does_not_wait_for_a_reply(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    received: list[str | bytes] = []

    async def silent(connection: ServerConnection) -> None:
        async for message in connection:
            received.append(message)

    url = await servers.websocket(silent)

    result = await run_check(make_check(url, send="hello", timeout="2s"))

    assert result.up
    await asyncio.sleep(0.05)
    assert received == ["hello"]


async def test_headers_are_sent(servers: LoopbackServers, make_check: MakeCheck) -> None:
    seen: list[str | None] = []

    def record(connection: ServerConnection, request: Request) -> Response | None:
        seen.append(request.headers.get("Authorization"))
        return None

    url = await servers.websocket(ping_pong, process_request=record)

    result = await run_check(make_check(url, headers={"Authorization": SECRET}))

    assert result.up
    assert seen == [SECRET]


async def test_headers_over_tls_are_sent_only_by_the_check_that_has_them(
    servers: LoopbackServers, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    seen: list[str | None] = []

    def record(connection: ServerConnection, request: Request) -> Response | None:
        seen.append(request.headers.get("Authorization"))
        return None

    url = await servers.websocket(ping_pong, ssl_context=tls_server_context(tls_ca), process_request=record)
    with_headers = make_check(url, tls_verify=False, headers={"Authorization": SECRET})
    without = make_check(url, tls_verify=False)

    results = [await run_check(with_headers), await run_check(without), await run_check(with_headers)]

    assert [(r.up, r.reason) for r in results] == [(True, None)] * 3
    assert seen == [SECRET, None, SECRET]


async def test_handshake_refused(servers: LoopbackServers, make_check: MakeCheck) -> None:
    def forbid(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.FORBIDDEN, "forbidden\n")

    url = await servers.websocket(ping_pong, process_request=forbid)

    result = await run_check(make_check(url))

    assert (result.up, result.reason) == (False, "handshake refused: status 403")


async def test_reply_mismatch(servers: LoopbackServers, make_check: MakeCheck) -> None:
    url = await servers.websocket(ping_pong)

    result = await run_check(make_check(url, send="hi", expect="pong"))

    assert (result.up, result.reason) == (False, 'reply "echo hi" does not match /pong/')
    assert "roundtrip_ms" in result.samples


async def test_refused_port(make_check: MakeCheck) -> None:
    with refused_port() as port:
        result = await run_check(make_check(f"ws://{HOST}:{port}/"))

    assert (result.up, result.reason) == (False, "connection refused")


async def test_silent_server_costs_the_timeout_and_the_connection_is_dropped(
    servers: LoopbackServers,
    make_check: MakeCheck,
) -> None:
    ended = asyncio.Event()

    async def mute(connection: ServerConnection) -> None:
        try:
            await connection.wait_closed()
        finally:
            ended.set()

    url = await servers.websocket(mute)

    result = await run_check(make_check(url, send="ping", expect="pong", timeout="500ms"))

    assert (result.up, result.reason, result.outcome) == (False, "timeout after 500ms", "timeout")
    await asyncio.wait_for(ended.wait(), timeout=2)


async def test_server_closing_before_replying(servers: LoopbackServers, make_check: MakeCheck) -> None:
    async def hang_up(connection: ServerConnection) -> None:
        await connection.close(1011, "boom")

    url = await servers.websocket(hang_up)

    result = await run_check(make_check(url, expect="pong"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("connection closed before reply: ")
    assert "1011" in result.reason


async def test_untrusted_certificate_fails_verification(
    servers: LoopbackServers, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    url = await servers.websocket(ping_pong, ssl_context=tls_server_context(tls_ca))

    result = await run_check(make_check(url))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("TLS verify failed: ")


async def test_tls_verify_false_accepts_an_untrusted_certificate(
    servers: LoopbackServers, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    url = await servers.websocket(ping_pong, ssl_context=tls_server_context(tls_ca))

    result = await run_check(make_check(url, tls_verify=False, send='{"type":"ping"}', expect="pong"))

    assert (result.up, result.reason) == (True, None)


def test_secrets_never_shown() -> None:
    config = WebSocketCheckConfig.model_validate(
        {
            "name": "collab-ws",
            "type": "websocket",
            "url": "wss://collab.example.com/socket?token=q-secret",
            "headers": {"Authorization": SECRET},
        }
    )

    for text in (repr(config), str(config.model_dump()), config.model_dump_json()):
        assert "s3cr3t" not in text
        assert "q-secret" not in text


async def test_target_is_host_with_named_port(make_check: MakeCheck) -> None:
    assert make_check("wss://collab.example.com").target() == "collab.example.com"
    assert make_check("ws://collab.example.com:8081/ws").target() == "collab.example.com:8081"


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"url": "https://collab.example.com"}, "url", "invalid URL"),
        ({"url": "ws://"}, "url", "invalid URL"),
        ({"expect": "[unclosed"}, "expect", "invalid regex"),
        ({"ping": "x"}, "ping", "Extra inputs are not permitted"),
    ],
    ids=["scheme", "no-host", "regex", "unknown-key"],
)
def test_invalid_config(options: dict[str, Any], field: str, message: str) -> None:
    table = {"name": "collab-ws", "type": "websocket", "url": "wss://collab.example.com", **options}

    with pytest.raises(ValidationError) as caught:
        WebSocketCheckConfig.model_validate(table)

    assert caught.value.errors()[0]["loc"] == (field,)
    assert message in caught.value.errors()[0]["msg"]
