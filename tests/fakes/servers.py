"""Real loopback peers for network tests: HTTP(S), WebSocket and TCP servers on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import aiohttp
import trustme
from aiohttp import web
from websockets.asyncio.server import Request, Response, ServerConnection, serve

HOST = "127.0.0.1"

HttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WsHandler = Callable[[ServerConnection], Awaitable[None]]
WsProcessRequest = Callable[[ServerConnection, Request], Awaitable[Response | None] | Response | None]
TcpHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServers:
    """Starts servers on demand; `aclose` (or leaving `async with`) stops them, newest first."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def http(self, routes: dict[str, HttpHandler], *, ssl_context: ssl.SSLContext | None = None) -> str:
        """Serve `routes` (path -> handler, any method); returns the base URL without a slash."""
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        # handler_cancellation: a handler still sleeping or streaming when the client gives up is
        # cancelled, so shutdown never waits for it.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, HOST, 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        return f"{scheme}://{HOST}:{port}"

    async def websocket(
        self,
        handler: WsHandler,
        *,
        process_request: WsProcessRequest | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        """Serve WebSocket connections with `handler`; returns the ws:// (or wss://) URL."""
        server = await self._stack.enter_async_context(
            serve(
                handler,
                HOST,
                0,
                process_request=process_request,
                ssl=ssl_context,
                close_timeout=0.5,
            )
        )
        port = server.sockets[0].getsockname()[1]
        scheme = "wss" if ssl_context is not None else "ws"
        return f"{scheme}://{HOST}:{port}/"

    async def tcp(self, handler: TcpHandler | None = None) -> int:
        """Accept TCP connections (closing each at once unless `handler` says otherwise); the port."""

        async def close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(handler or close_at_once, HOST, 0)
        self._stack.push_async_callback(_close_server, server)
        return server.sockets[0].getsockname()[1]


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where nothing listens: bound (so nobody else takes it) but not listening,
    so a connect is answered with a reset, i.e. "connection refused"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def tls_server_context(ca: trustme.CA, *, valid_for: timedelta | None = None) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 issued by `ca`, valid for `valid_for`."""
    not_after = datetime.now(UTC) + valid_for if valid_for is not None else None
    cert = ca.issue_cert(HOST, "localhost", not_after=not_after)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def trusting_client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts `ca` (and only it)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def client_session(ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """A session built as the daemon builds its one shared session: a fresh connection per run."""
    connector = aiohttp.TCPConnector(force_close=True, ssl=ssl_context if ssl_context else True)
    return aiohttp.ClientSession(connector=connector)


def json_handler(body: Any, *, status: int = 200) -> HttpHandler:
    """A handler answering every request with `body` as JSON."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handler


def text_handler(text: str, *, status: int = 200, content_type: str = "text/plain") -> HttpHandler:
    """A handler answering every request with `text`."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=text, status=status, content_type=content_type)

    return handler
