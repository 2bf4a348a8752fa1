"""Raw loopback TCP servers that answer HTTP requests with hand-written (also malformed) bytes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
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

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for raw in self._raws:
            for writer in raw.writers:
                writer.transport.abort()
        for server in self._servers:
            await server.wait_closed()


def answer(data: bytes, ending: Ending = "close") -> Respond:
    """A raw server script answering every request with `data`."""
    return lambda _request: (data, ending)
