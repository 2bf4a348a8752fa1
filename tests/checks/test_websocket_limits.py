"""websocket `max_message`: a frame announcing more fails the run at once, against raw loopback
peers that do the opening handshake by hand and then send an oversized frame header."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from checks.base import CheckDeps
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.runner import run_check

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Peer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def raw_peer(after_handshake: Peer, tasks: set[asyncio.Task[None]]) -> tuple[asyncio.Server, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        try:
            await after_handshake(writer)
            await reader.read()  # until the client goes
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def frame_header(length: int) -> bytes:
    return bytes([0x82, 127]) + struct.pack("!Q", length)  # FIN + binary, 64-bit length, unmasked


async def ten_megabytes(writer: asyncio.StreamWriter) -> None:
    writer.write(frame_header(10_000_000) + b"x" * 10_000_000)
    await writer.drain()


async def announce_a_terabyte_and_stall(writer: asyncio.StreamWriter) -> None:
    writer.write(frame_header(2**40) + b"x" * 100)
    await writer.drain()
    await asyncio.Event().wait()  # never sends the rest


@pytest.fixture
async def peers() -> AsyncIterator[Callable[[Peer], Awaitable[int]]]:
    started: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(after_handshake: Peer) -> int:
        server, port = await raw_peer(after_handshake, tasks)
        started.append(server)
        return port

    yield start
    for server in started:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("peer", [ten_megabytes, announce_a_terabyte_and_stall], ids=["10MB", "2^40"])
async def test_a_frame_over_max_message_fails_at_once(
    peers: Callable[[Peer], Awaitable[int]], peer: Peer, http_session: aiohttp.ClientSession
) -> None:
    port = await peers(peer)
    config = WebSocketCheckConfig.model_validate(
        {"name": "ws", "type": "websocket", "url": f"ws://127.0.0.1:{port}/", "expect": ".", "timeout": 3}
    )

    result = await run_check(WebSocketCheck(config, CheckDeps(http=http_session)))

    assert result.reason == "message over max_message (1MB)"
    assert result.latency_ms < 1500  # not the 3s timeout
    assert "handshake_ms" in result.samples and "connect_ms" in result.samples


async def test_max_message_is_configurable(
    peers: Callable[[Peer], Awaitable[int]], http_session: aiohttp.ClientSession
) -> None:
    async def two_kilobytes(writer: asyncio.StreamWriter) -> None:
        writer.write(bytes([0x82, 126]) + struct.pack("!H", 2000) + b"y" * 2000)
        writer.write(bytes([0x88, 2]) + struct.pack("!H", 1000))  # then a close, and gone:
        await writer.drain()
        writer.close()  # the client's closing handshake does not wait for its close_timeout

    port = await peers(two_kilobytes)
    url = f"ws://127.0.0.1:{port}/"

    def make(**options: object) -> WebSocketCheck:
        table = {"name": "ws", "type": "websocket", "url": url, "expect": "y", "timeout": 3, **options}
        return WebSocketCheck(WebSocketCheckConfig.model_validate(table), CheckDeps(http=http_session))

    small = await run_check(make(max_message="1KB"))
    default = await run_check(make())

    assert small.reason == "message over max_message (1KB)"
    assert default.reason is None
