"""Raw loopback TCP servers that answer HTTP requests with hand-written (also malformed) bytes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Self

from tests.fakes.servers import HOST

# What the server does after writing its answer: close (FIN), reset (RST), or wait for the
# client to go away (and then close).
Ending = Literal["close", "reset", "hang"]


@dataclass(frozen=True)
class RawRequest:
    """One request head as it arrived: request line parts, headers (lowercased names), bytes."""

    method: str
    target: str
    headers: dict[str, str]
    raw: bytes


Respond = Callable[[RawRequest], tuple[bytes, Ending]]
# A whole connection's script, for servers that do more than answer once (drip, stall, TLS bytes).
Handle = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """Records every request; answers each with what `respond` returns for it."""

    respond: Respond
    port: int = 0
    requests: list[RawRequest] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections over, as the server saw them
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self.closed += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request = parse_request(head)
        self.requests.append(request)
        answer, ending = self.respond(request)
        with contextlib.suppress(ConnectionError):
            writer.write(answer)
            await writer.drain()
        if ending == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if ending == "hang":
            # Until the client closes its end: EOF, or a reset when it aborts.
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
        writer.close()


def parse_request(head: bytes) -> RawRequest:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return RawRequest(method, target, headers, head)


def response(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    content_length: bool = True,
) -> bytes:
    """A response head and body; `Content-Length` added unless `content_length` is False or
    `headers` frame the body already."""
    fields = dict(headers or {})
    framed = any(name.lower() in ("content-length", "transfer-encoding") for name in fields)
    if content_length and not framed:
        fields["Content-Length"] = str(len(body))
    lines = [f"HTTP/1.1 {status} X", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes) -> bytes:
    """`parts` as a chunked body, with the last (empty) chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


class RawServers:
    """Starts raw servers on demand; leaving `async with` closes them and their connections."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._raws: list[RawServer] = []
        self._open: set[asyncio.StreamWriter] = set()  # connections of `serve` servers

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def start(self, respond: Respond) -> RawServer:
        raw = RawServer(respond)
        server = await asyncio.start_server(raw.handle, HOST, 0)
        self._servers.append(server)
        self._raws.append(raw)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    async def serve(self, handle: Handle) -> int:
        """A server running `handle` for each connection; returns its port. Closing aborts every
        connection it still has."""

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._open.add(writer)
            try:
                await handle(reader, writer)
            except ConnectionError:
                pass  # the client went away: what a hostile script expects sooner or later
            finally:
                self._open.discard(writer)
                writer.transport.abort()

        server = await asyncio.start_server(tracked, HOST, 0, backlog=1024)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for raw in self._raws:
            for writer in raw.writers:
                writer.transport.abort()
        for writer in list(self._open):
            writer.transport.abort()
        for server in self._servers:
            await server.wait_closed()


def answer(data: bytes, ending: Ending = "close") -> Respond:
    """A raw server script answering every request with `data`."""
    return lambda _request: (data, ending)


# ---------------------------------------------------------------- hostile connection scripts (`serve`)

DRIP_PAUSE_S = 0.02


async def _request_head(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await reader.readuntil(b"\r\n\r\n")


async def healthy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The runbook's health answer, then close."""
    await _request_head(reader)
    writer.write(response(200, b'{"status": "ok"}', {"Connection": "close"}))
    await writer.drain()


async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    """Accepts and never says a byte (a hung server, a TLS peer ignoring the ClientHello, a
    PostgreSQL port that never answers the startup message): reads until the client leaves."""
    while await reader.read(65536):
        pass


async def drip_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A status line, then header bytes one at a time, a head that never ends."""
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    while True:
        for byte in b"X-Drip: slow\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(DRIP_PAUSE_S)


async def drip_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A whole head announcing 1 MB, then the body one byte at a time."""
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while True:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(DRIP_PAUSE_S)


async def endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Header lines as fast as the client takes them, forever."""
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    lines = b"".join(b"X-Endless-%d: %s\r\n" % (i, b"v" * 100) for i in range(500))
    while True:
        writer.write(lines)
        await writer.drain()


async def huge_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One header field of 1 MB (aiohttp's limit, which the client keeps, is 8190 bytes)."""
    await _request_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 1_000_000 + b"\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await silent(reader, writer)


async def tls_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the ClientHello with bytes that are no TLS record, then waits."""
    await reader.read(65536)
    writer.write(b"garbage, not a TLS record\r\n" * 40)
    await writer.drain()
    await silent(reader, writer)


def gzip_bomb(gigabytes: int) -> tuple[bytes, bytes, int]:
    """A gzip stream of `gigabytes` GiB of zeros, as (first part, a part to repeat, repeats):
    ~1 KB per MiB on the wire, built without compressing gigabytes (after the first MiB, every
    further MiB of zeros compresses to the same bytes)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    mib = bytes(1 << 20)
    first = compressor.compress(mib) + compressor.flush(zlib.Z_SYNC_FLUSH)
    again = compressor.compress(mib) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return first, again, gigabytes * 1024 - 1


def serve_gzip_bomb(gigabytes: int) -> Handle:
    first, again, repeats = gzip_bomb(gigabytes)

    async def bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        # No Content-Length (the body ends with the connection): only decoding can tell its size.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n")
        writer.write(first)
        for _ in range(repeats):
            writer.write(again)
            await writer.drain()

    return bomb


def reset_mid_body(*, framed: bool) -> Handle:
    """100 bytes of a body (of 1000 by Content-Length when `framed`, else until close), then a
    TCP reset."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" if framed else b"HTTP/1.1 200 OK\r\n\r\n"

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        writer.write(head + b"x" * 100)
        await writer.drain()
        await asyncio.sleep(0.05)  # the bytes reach the client before the reset does
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return reset


async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An SSH server's greeting where HTTP was expected, then nothing."""
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
    await writer.drain()
    await silent(reader, writer)
